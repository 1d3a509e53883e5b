"""`facegen course`: the whole course as one job — the data, every notebook executed in order, then the book.

Each notebook runs top to bottom in a fresh kernel with the profile in FACEGEN_PROFILE (nbclient, the engine of
`jupyter nbconvert --execute`), and is saved with its outputs and its widget state, so the book shows the explorer's
controls. For the `cpu` profile the notebooks are executed in place (the committed outputs come from that profile);
other profiles write their executed copies to `artifacts/<profile>/notebooks/`, so a CI or GPU run never overwrites
them. Each notebook's wall-clock time goes into docs/runtimes.json under the profile, and the runtime tables of
README.md and book/intro.md are re-rendered from that file (between the markers `<!-- runtimes:start -->` and
`<!-- runtimes:end -->`).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from facegen.config import PROFILE_NAMES, REPO_ROOT

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
NOTEBOOK_PATTERN = "[0-9][0-9]_*.ipynb"
COMMITTED_PROFILE = "cpu"  # the profile whose outputs the committed notebooks (and the book) carry
RUNTIMES_FILE = REPO_ROOT / "docs" / "runtimes.json"
TABLE_FILES = (REPO_ROOT / "README.md", REPO_ROOT / "book" / "intro.md")
TABLE_START, TABLE_END = "<!-- runtimes:start -->", "<!-- runtimes:end -->"
DATA_STEP = "synthfaces"  # the runtime entry of the data step, listed before the notebooks
BOOK_DIR = REPO_ROOT / "book"


class NotebookFailed(RuntimeError):
    """A notebook raised while the course executed it."""


def course_notebooks(folder: Path = NOTEBOOKS_DIR, only: list[str] | None = None) -> list[Path]:
    """The numbered notebooks in `folder`, in order; `only` keeps those whose number or name is listed ("01", ...)."""
    found = sorted(Path(folder).glob(NOTEBOOK_PATTERN))
    if not found:
        raise FileNotFoundError(f"no course notebooks ({NOTEBOOK_PATTERN}) in {folder}")
    if not only:
        return found
    wanted = {name.removesuffix(".ipynb") for name in only}
    chosen = [p for p in found if p.stem in wanted or p.name[:2] in wanted]
    known = {p.stem for p in chosen} | {p.name[:2] for p in chosen}
    missing = sorted(wanted - known)
    if missing:
        raise FileNotFoundError(f"--only {' '.join(missing)}: no such notebook in {folder}; "
                                f"expected one of {', '.join(p.name[:2] for p in found)}")
    return chosen


def default_output_dir(profile_name: str, notebooks_dir: Path = NOTEBOOKS_DIR) -> Path:
    """Where `facegen course` saves executed notebooks: in place for the committed profile, else under artifacts."""
    if profile_name == COMMITTED_PROFILE:
        return Path(notebooks_dir)
    from facegen.config import get_profile

    return get_profile(profile_name).artifacts / "notebooks"


def execute_notebook(path: Path, profile_name: str, out_path: Path, timeout: int | None = None,
                     progress: bool = False) -> float:
    """Run `path` in a fresh kernel (working directory: its folder) with FACEGEN_PROFILE=`profile_name`, save it
    with outputs and widget state to `out_path` (atomically), and return the wall-clock seconds it took.

    On an error the notebook is not saved there: the partly executed copy goes to
    `artifacts/<profile>/failed-notebooks/` (never next to the course's notebooks, where it would become a chapter)
    and `NotebookFailed` names the notebook, the error and that copy. `progress` shows a bar over the notebook's code cells."""
    import tempfile

    from tqdm.auto import tqdm

    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(path, as_version=4)
    env = {**os.environ, "FACEGEN_PROFILE": profile_name}
    n_code = sum(cell.cell_type == "code" and bool(cell.source.strip()) for cell in notebook.cells)
    cells = tqdm(total=n_code, desc=Path(path).name, unit="cell", leave=False, disable=not progress)
    start = time.perf_counter()
    # Local sockets (ipc) where the OS has them: private to this user, and no "running over TCP" warning per notebook.
    with tempfile.TemporaryDirectory(prefix="facegen-kernel-") as sockets:
        kernel = (KernelManager(kernel_name="python3", transport="ipc", ip=str(Path(sockets) / "kernel"))
                  if os.name == "posix" else KernelManager(kernel_name="python3"))
        client = NotebookClient(notebook, km=kernel, timeout=timeout, store_widget_state=True,
                                resources={"metadata": {"path": str(Path(path).parent)}},
                                on_cell_executed=lambda **_: cells.update())
        try:
            client.execute(env=env, cleanup_kc=True)  # shut the kernel down: nbclient only does it for its own km
        except CellExecutionError as error:
            raise _failure(notebook, Path(path), profile_name, error) from None
        finally:
            cells.close()
    seconds = time.perf_counter() - start
    _write_notebook(notebook, out_path)
    return seconds


def _failure(notebook, path: Path, profile_name: str, error: Exception) -> NotebookFailed:
    """Save the partly executed notebook under the profile's artifacts and say what failed and where to look."""
    from facegen.config import get_profile

    failed = get_profile(profile_name).artifacts / "failed-notebooks" / path.name
    _write_notebook(notebook, failed)
    last_line = re.sub(r"\x1b\[[0-9;]*m", "", str(error).strip().splitlines()[-1])  # no terminal colours
    return NotebookFailed(f"{path.name} failed under profile {profile_name!r}: {last_line} "
                          f"(the partly executed notebook is in {failed})")


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def _progress_text(model_id: str, state: dict) -> str | None:
    """The line a tqdm notebook bar (an HBox of HTML, FloatProgress, HTML) finally showed, as tqdm prints it in a
    terminal ("tokenizing train: 100%|██████████| 4800/4800 [00:24<00:00, 182.19img/s]"); None for other widgets."""
    import html

    box = state.get(model_id, {})
    children = [state.get(str(child).removeprefix("IPY_MODEL_"), {}) for child in box.get("state", {}).get("children", [])]
    if box.get("model_name") != "HBoxModel" or [c.get("model_name") for c in children] != [
            "HTMLModel", "FloatProgressModel", "HTMLModel"]:
        return None
    left, bar, right = (c.get("state", {}) for c in children)
    fraction = min(max(float(bar.get("value", 0)) / float(bar.get("max", 1) or 1), 0.0), 1.0)
    filled = round(10 * fraction)
    text = html.unescape(f"{left.get('value', '')}|{'█' * filled}{' ' * (10 - filled)}|{right.get('value', '')}")
    return text.replace("\u2007", " ")


def _hidden(model_id, state: dict) -> bool:
    """True when the widget is not in the saved state or its layout hides it (tqdm's leave=False on close)."""
    if model_id not in state:
        return True
    layout = str(state[model_id].get("state", {}).get("layout", "")).removeprefix("IPY_MODEL_")
    return state.get(layout, {}).get("state", {}).get("visibility") == "hidden"


def clean_widget_outputs(notebook) -> None:
    """Make widget outputs readable where no widget can be drawn (GitHub, nbviewer, a terminal).

    A widget output carries a text/plain fallback frozen when the widget first appeared: for a progress bar that is
    "0%|          | 0/4800", which is all a static viewer shows. A progress bar's fallback is replaced by the line
    it finally showed (from the saved widget state); other widgets keep theirs; an output whose widget is hidden or
    not in the saved state (a bar closed with leave=False) is dropped: it shows nothing in a live notebook either."""
    state = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for cell in notebook.cells:
        kept = []
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(WIDGET_VIEW) if output.get("output_type") == "display_data" else None
            if view is None:
                kept.append(output)
                continue
            if _hidden(view.get("model_id"), state):
                continue
            text = _progress_text(view["model_id"], state)
            if text is not None:
                output["data"]["text/plain"] = text
            kept.append(output)
        if "outputs" in cell:
            cell["outputs"] = kept


def _write_notebook(notebook, path: Path) -> None:
    import nbformat

    from facegen.checkpoint import atomic_write_bytes

    clean_widget_outputs(notebook)
    atomic_write_bytes(Path(path), (nbformat.writes(notebook) + "\n").encode())


def describe_machine() -> str:
    """One line for the runtime table: CPU model, cores, GPU (if any), OS."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    from facegen.config import cuda_available

    gpu = "no GPU"
    if cuda_available():
        import torch

        gpu = f"GPU {torch.cuda.get_device_name(0)}"
    return f"{model}, {os.cpu_count()} cores, {gpu}, {platform.system()} {platform.release()}"


def load_runtimes(path: Path = RUNTIMES_FILE) -> dict:
    """docs/runtimes.json as {profile: {"seconds": {step: s}, "machine": ..., "measured": ...}} ({} if absent)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        runtimes = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}); expected the runtimes written by `facegen course`")
    bad = [name for name, entry in runtimes.items()
           if name not in PROFILE_NAMES or not isinstance(entry, dict) or not isinstance(entry.get("seconds"), dict)]
    if bad:
        raise ValueError(f"{path}: entries {', '.join(map(repr, bad))} are not profile runtimes; expected "
                         f"{{profile: {{\"seconds\": {{step: seconds}}, ...}}}} with profiles "
                         f"{', '.join(PROFILE_NAMES)}")
    return runtimes


def record_runtime(runtimes: dict, profile_name: str, step: str, seconds: float, machine: str,
                   reused_artifacts: bool = False) -> dict:
    """`runtimes` with `step` of `profile_name` set to `seconds` (other steps and profiles kept), stamped with the
    machine, today's date, and whether the run started with the artifacts (data, models) of an earlier one."""
    entry = dict(runtimes.get(profile_name, {}))
    entry["seconds"] = {**entry.get("seconds", {}), step: round(seconds, 1)}
    entry["machine"] = machine
    entry["measured"] = datetime.date.today().isoformat()
    entry["reused_artifacts"] = reused_artifacts
    return {**runtimes, profile_name: entry}


def format_duration(seconds: float) -> str:
    """12.3 -> "12 s", 185 -> "3 min 05 s", 3725 -> "1 h 02 min"."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def render_runtime_table(runtimes: dict) -> str:
    """A Markdown table: one row per step (the data step first, then the notebooks in order, then the total), one
    column per measured profile, and a line per profile saying where and when it was measured."""
    profiles = [name for name in PROFILE_NAMES if name in runtimes]
    if not profiles:
        return "Not measured yet: `make course` fills this table (`facegen course --profile ci` adds the `ci` column)."
    steps = sorted({step for name in profiles for step in runtimes[name]["seconds"]}, key=lambda s: (s != DATA_STEP, s))
    lines = ["| step | " + " | ".join(f"`{name}`" for name in profiles) + " |",
             "|---|" + "---:|" * len(profiles)]
    for step in steps:
        label = "SynthFaces data" if step == DATA_STEP else f"{step}.ipynb"
        cells = [runtimes[name]["seconds"].get(step) for name in profiles]
        lines.append(f"| {label} | " + " | ".join("—" if s is None else format_duration(s) for s in cells) + " |")
    totals = [format_duration(sum(runtimes[name]["seconds"].values())) for name in profiles]
    lines.append("| **total** | " + " | ".join(f"**{t}**" for t in totals) + " |")
    lines.append("")
    for name in profiles:
        entry = runtimes[name]
        reused = " (starting with data and models from an earlier run)" if entry.get("reused_artifacts") else ""
        lines.append(f"`{name}`: measured {entry.get('measured', '?')} on {entry.get('machine', '?')} with "
                     f"`facegen course --profile {name}`{reused}.  ")
    return "\n".join(lines).rstrip(" ")


def replace_between_markers(text: str, content: str, where: str) -> str:
    """`text` with everything between TABLE_START and TABLE_END replaced by `content`."""
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f"{where}: expected the markers {TABLE_START} and then {TABLE_END} around the runtime table")
    return text[:start + len(TABLE_START)] + "\n" + content.strip("\n") + "\n" + text[end:]


def update_runtime_tables(runtimes: dict, files=TABLE_FILES) -> None:
    """Re-render the runtime table between the markers of every file in `files`."""
    from facegen.checkpoint import atomic_write_bytes

    table = render_runtime_table(runtimes)
    for path in map(Path, files):
        new = replace_between_markers(path.read_text(), table, str(path))
        atomic_write_bytes(path, new.encode())


def book_command(output: Path | None = None, book: Path = BOOK_DIR) -> list[str]:
    """The Jupyter Book build: Sphinx warnings are errors (-W), cross-references are checked (-n), and every
    warning is reported before failing (--keep-going). Output in `output`/_build/html (default book/_build/html)."""
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book), "build", str(book), "-W", "-n", "--keep-going"]
    return command + (["--path-output", str(output)] if output is not None else [])


def build_book(output: Path | None = None, book: Path = BOOK_DIR) -> subprocess.CompletedProcess:
    """Build the book (see `book_command`) from scratch; raises `RuntimeError` with the build's own messages when it
    fails. The previous build is removed first: Sphinx's incremental builds neither repeat the warnings of unchanged
    pages nor replace changed static files."""
    shutil.rmtree(Path(output if output is not None else book) / "_build", ignore_errors=True)
    result = subprocess.run(book_command(output, book), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"jupyter-book build {book} failed (exit {result.returncode}):\n"
                           f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def run_course(profile_name: str, only: list[str] | None = None, out_dir: Path | None = None, book: bool = True,
               notebooks_dir: Path = NOTEBOOKS_DIR, runtimes_file: Path = RUNTIMES_FILE, table_files=TABLE_FILES,
               prepare_data=None, progress: bool = True) -> dict:
    """The course for one profile: the data, each notebook in order (recording its runtime after each one, so an
    interrupted run keeps what it measured), the runtime tables, then the book. Returns the updated runtimes."""
    from tqdm.auto import tqdm

    from facegen.config import get_profile
    from facegen.pipeline import ensure_synthfaces

    notebooks = course_notebooks(notebooks_dir, only)
    out_dir = Path(out_dir) if out_dir is not None else default_output_dir(profile_name, notebooks_dir)
    machine = describe_machine()
    runtimes = load_runtimes(runtimes_file)
    profile = get_profile(profile_name)
    # First runs train every model inside the notebooks; later runs find them. The table says which it measured.
    reused = profile.artifacts.is_dir() and any(profile.artifacts.iterdir())

    def record(step: str, seconds: float) -> None:
        nonlocal runtimes
        runtimes = record_runtime(runtimes, profile_name, step, seconds, machine, reused)
        from facegen.checkpoint import atomic_write_json

        atomic_write_json(Path(runtimes_file), runtimes)
        update_runtime_tables(runtimes, table_files)

    start = time.perf_counter()
    (prepare_data or ensure_synthfaces)(profile)
    record(DATA_STEP, time.perf_counter() - start)
    bar = tqdm(notebooks, desc=f"course ({profile_name})", unit="notebook", disable=not progress)
    for path in bar:
        bar.set_postfix_str(path.name)
        seconds = execute_notebook(path, profile_name, out_dir / path.name, progress=progress)
        record(path.stem, seconds)
        bar.write(f"{path.name}: {format_duration(seconds)} -> {out_dir / path.name}")
    if book:
        build_book()
        print(f"book: {BOOK_DIR / '_build' / 'html' / 'index.html'}")
    return runtimes
