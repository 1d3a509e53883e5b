"""The package's imports point downward (issue 13, item 2; DESIGN.md "Layout").

Read from the source with `ast` (nothing is imported): every `import facegen.x` / `from facegen.x import y` /
`from facegen import x`, at module level or inside a function.

(i) Only the top layer (pipeline, cli, course, widgets) may import the top layer; a function-level import counts
    too, since it is the same dependency made later.
(ii) The module-level imports form no cycle (a function-level import runs after every module is loaded, so it cannot
     take part in an import-time cycle; (i) already keeps the upward ones out).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "facegen"
TOP = {"facegen.pipeline", "facegen.cli", "facegen.course", "facegen.widgets"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str) -> str | None:
    """The facegen module that `name` (a module, or a module's attribute) refers to."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> list[tuple[str, int, bool]]:
    """(imported facegen module, line, at module level?) for every import of a facegen module in `module`."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    top_level = {id(node) for node in tree.body}
    # imports inside `if TYPE_CHECKING:` / try blocks at module level still run at import time: count them as
    # module level; anything inside a def or class body runs later
    for node in tree.body:
        if isinstance(node, (ast.If, ast.Try)):
            top_level.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [f"{prefix}.{alias.name}" for alias in node.names] if prefix else []
        for target in targets:
            if target == "facegen" or target.startswith("facegen."):
                resolved = _resolve(target)
                if resolved and resolved != module and resolved != "facegen":
                    found.append((resolved, node.lineno, id(node) in top_level))
    return found


def test_every_module_parses_and_the_top_layer_exists():
    assert TOP <= set(MODULES), sorted(TOP - set(MODULES))
    for module in MODULES:
        imports_of(module)


def test_nothing_below_the_top_layer_imports_it():
    upward = sorted({f"{module} -> {target} (line {line}{'' if level else ', inside a function'})"
                     for module in MODULES if module not in TOP
                     for target, line, level in imports_of(module) if target in TOP})
    assert not upward, ("modules below pipeline/cli/course/widgets import them (imports must point down; move the "
                        "shared helper down instead):\n  " + "\n  ".join(upward))


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a chain [a, b, ..., a], or None (depth-first search, three colours)."""
    state, stack = {}, []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_module_level_imports_have_no_cycle():
    graph = {module: {target for target, _, level in imports_of(module) if level} for module in MODULES}
    cycle = find_cycle(graph)
    assert cycle is None, "module-level imports go round in a circle: " + " -> ".join(cycle)
