"""Conventions every course notebook follows (their execution is checked by nbval under the ci profile)."""

import json
import re
from pathlib import Path

import pytest

from facegen.config import REPO_ROOT, REPOSITORY_URL

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def test_notebooks_are_numbered_once_each():
    numbers = [p.name[:2] for p in NOTEBOOKS]
    assert len(numbers) == len(set(numbers))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_badge_points_at_this_notebook_in_the_repository(path):
    first = source(cells(path)[0])
    repo = REPOSITORY_URL.removeprefix("https://github.com/")
    assert first.startswith(f"# {path.name[:2]} — ")
    assert f"https://colab.research.google.com/github/{repo}/blob/main/notebooks/{path.name}" in first


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_setup_cell_installs_only_on_colab(path):
    setup = cells(path)[1]
    assert setup["cell_type"] == "code"
    text = source(setup)
    assert 'if "google.colab" in sys.modules:' in text and f"git+{REPOSITORY_URL}" in text
    assert not setup.get("outputs")  # elsewhere it prints nothing


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_teaches_and_is_committed_executed(path):
    all_cells = cells(path)
    markdown = "\n".join(source(c) for c in all_cells if c["cell_type"] == "markdown")
    for heading in ("Learning objectives", "Exercises", "Summary"):
        assert re.search(rf"^## (\d+\. )?{heading}", markdown, re.MULTILINE), heading
    code = [c for c in all_cells if c["cell_type"] == "code"]
    assert all(c["execution_count"] for c in code[1:]), "commit notebooks executed (cpu profile)"
    errors = [o for c in code for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_chapter_has_a_gpu_box_and_its_references(path):
    markdown = "\n".join(source(c) for c in cells(path) if c["cell_type"] == "markdown")
    gpu_box = " ".join(markdown.split("## On a GPU", 1)[-1].split("\n## ", 1)[0].replace(">", " ").split())
    assert "## On a GPU" in markdown and "`make gpu-check`" in gpu_box and "benchmarks/gpu_check.py" in gpu_box
    assert "not been measured yet" in gpu_box  # no invented runtimes until a run on CelebA is recorded
    references = markdown.split("## References and further reading", 1)[-1]
    assert "## References and further reading" in markdown and len(re.findall(r"\]\(https?://", references)) >= 3
    assert "Anchor courses" in references


def _text_outputs(path: Path):
    for cell in cells(path):
        for output in cell.get("outputs", []):
            text = output.get("text", "") if output["output_type"] == "stream" else output.get("data", {}).get(
                "text/plain", "")
            yield "".join(text)


# Executed before facegen printed relative paths and cleaned widget fallbacks; re-executing them under the cpu profile
# (`facegen course --profile cpu --only 05 06 07`, ~20 min on an idle 2-core machine) fixes them: then drop this set.
NOT_YET_REEXECUTED: set[str] = set()


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.xfail(
    reason="outputs from before the path/progress-bar fix; re-execute under the cpu profile"))
    if p.name in NOT_YET_REEXECUTED else p for p in NOTEBOOKS], ids=lambda p: p.name)
def test_committed_outputs_name_no_machine_paths_and_no_frozen_progress_bars(path):
    texts = list(_text_outputs(path))
    absolute = [t for t in texts if re.search(r"(/tmp/|/work/|/home/|/root/|/content/|[A-Z]:\\\\)", t)]
    assert not absolute, absolute[:2]
    frozen = [t for t in texts if re.search(r"(^|\s)0%\|", t)]  # a widget bar's fallback frozen at its start
    assert not frozen, frozen[:2]


def _tags(cell: dict) -> list[str]:
    return cell["metadata"].get("tags", [])


def _text_output(cell: dict) -> str:
    texts = []
    for output in cell.get("outputs", []):
        if "image/png" in output.get("data", {}):
            continue  # a figure (a worked solution may draw one before its verdict)
        texts.append("".join(output.get("text", "")) or "".join(output.get("data", {}).get("text/plain", "")))
    return "".join(texts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exercises_can_be_attempted_checked_and_solved(path):
    """At least 3 exercises; each checked one is an empty attempt cell, a check that says "not attempted yet", and a
    collapsed worked solution that its check confirms; one changes code; one is an open question without a check."""
    all_cells = cells(path)
    statements = [m for c in all_cells if c["cell_type"] == "markdown"
                  for m in re.findall(r"^\*\*Exercise (\d+) — ([^*]+)\*\*", source(c), re.MULTILINE)]
    numbers = [int(n) for n, _ in statements]
    assert len(statements) >= 3 and numbers == list(range(1, len(numbers) + 1)), statements
    assert any("(open)" in title for _, title in statements), "one open question, with no check"
    attempts = [i for i, c in enumerate(all_cells) if "exercise-attempt" in _tags(c)]
    n_open = sum("(open)" in title for _, title in statements)
    assert len(attempts) == len(statements) - n_open >= 2, "every exercise but the open ones has an attempt cell"
    assert any("exercise-changes-code" in _tags(all_cells[i]) for i in attempts), "one exercise changes code"
    for i in attempts:
        attempt, verdict, solution = all_cells[i], all_cells[i + 1], all_cells[i + 2]
        assert re.search(r"^\w+ = None\b", source(attempt), re.MULTILINE), source(attempt)
        assert not _text_output(attempt).strip()
        assert "exercise-check" in _tags(verdict) and _text_output(verdict).startswith("not attempted yet — ")
        # collapsed with its output ("correct — <the answer>"): a dropdown in the book, folded in JupyterLab
        assert {"exercise-solution", "hide-cell"} <= set(_tags(solution))
        assert solution["metadata"].get("jupyter") == {"source_hidden": True, "outputs_hidden": True}
        assert source(solution).rstrip().endswith(".confirm()")
        assert _text_output(solution).startswith("correct — "), _text_output(solution)
