"""`facegen course`: notebooks found and executed in order with the profile, runtimes recorded and rendered into the
marked tables. Execution is checked on two tiny fake notebooks (one kernel start each, ~2 s)."""

import json
import os

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from facegen import course
from facegen.cli import main

TABLE_DOC = "# Title\n\nintro\n\n<!-- runtimes:start -->\nold table\n<!-- runtimes:end -->\n\nafter\n"


def write_notebook(path, *sources):
    nbformat.write(new_notebook(cells=[new_code_cell(s) for s in sources]), path)


@pytest.fixture
def notebooks(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    write_notebook(folder / "02_widget.ipynb", "import ipywidgets\nipywidgets.IntSlider(value=7, description='k')",
                   "from tqdm.auto import tqdm\nfor _ in tqdm(range(4), desc='steps'): pass\n"
                   "for _ in tqdm(range(2), desc='gone', leave=False): pass")
    write_notebook(folder / "01_env.ipynb", "import os\nprint(os.environ['FACEGEN_PROFILE'])\nprint(os.getcwd())",
                   "os.getpid()")
    write_notebook(folder / "scratch.ipynb", "1/0")  # not numbered: not part of the course
    return folder


def test_course_notebooks_are_the_numbered_ones_in_order(notebooks):
    assert [p.name for p in course.course_notebooks(notebooks)] == ["01_env.ipynb", "02_widget.ipynb"]
    assert [p.name for p in course.course_notebooks(notebooks, only=["02"])] == ["02_widget.ipynb"]
    assert [p.name for p in course.course_notebooks(notebooks, only=["01_env.ipynb"])] == ["01_env.ipynb"]


def test_course_notebooks_name_what_is_missing(notebooks, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--only 07: no such notebook in .*expected one of 01, 02"):
        course.course_notebooks(notebooks, only=["01", "07"])
    with pytest.raises(FileNotFoundError, match="no course notebooks"):
        course.course_notebooks(tmp_path / "empty")


def test_only_the_committed_profile_executes_in_place(notebooks, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path / "artifacts"))
    assert course.default_output_dir("cpu", notebooks) == notebooks
    assert course.default_output_dir("ci", notebooks) == tmp_path / "artifacts" / "ci" / "notebooks"


@pytest.mark.parametrize("seconds, text", [(0.4, "0 s"), (12.3, "12 s"), (59.6, "1 min 00 s"), (185, "3 min 05 s"),
                                           (3725, "1 h 02 min")])
def test_format_duration(seconds, text):
    assert course.format_duration(seconds) == text


def test_record_runtime_keeps_other_steps_and_profiles():
    runtimes = {"cpu": {"seconds": {"01_a": 100.0}, "machine": "m", "measured": "2026-01-01"}}
    runtimes = course.record_runtime(runtimes, "ci", "01_a", 3.14159, "box")
    runtimes = course.record_runtime(runtimes, "ci", "02_b", 2.0, "box")
    assert runtimes["cpu"] == {"seconds": {"01_a": 100.0}, "machine": "m", "measured": "2026-01-01"}
    assert runtimes["ci"]["seconds"] == {"01_a": 3.1, "02_b": 2.0} and runtimes["ci"]["machine"] == "box"


def test_render_runtime_table_by_hand():
    runtimes = {"cpu": {"seconds": {"02_b": 600, "synthfaces": 30, "01_a": 65}, "machine": "M", "measured": "D"},
                "ci": {"seconds": {"01_a": 4}, "machine": "M", "measured": "D", "reused_artifacts": True}}
    assert course.render_runtime_table(runtimes) == "\n".join([
        "| step | `ci` | `cpu` |",
        "|---|---:|---:|",
        "| SynthFaces data | — | 30 s |",
        "| 01_a.ipynb | 4 s | 1 min 05 s |",
        "| 02_b.ipynb | — | 10 min 00 s |",
        "| **total** | **4 s** | **11 min 35 s** |",
        "",
        "`ci`: measured D on M with `facegen course --profile ci` "
        "(starting with data and models from an earlier run).  ",
        "`cpu`: measured D on M with `facegen course --profile cpu`.",
    ])
    assert course.render_runtime_table({}).startswith("Not measured yet")


def test_tables_are_replaced_between_the_markers_only(tmp_path):
    doc = tmp_path / "README.md"
    doc.write_text(TABLE_DOC)
    for _ in range(2):  # idempotent
        course.update_runtime_tables({"ci": {"seconds": {"01_a": 4}}}, [doc])
        text = doc.read_text()
        assert text.startswith("# Title\n\nintro\n\n<!-- runtimes:start -->\n| step | `ci` |")
        assert text.endswith("<!-- runtimes:end -->\n\nafter\n") and "old table" not in text
    doc.write_text("no markers here")
    with pytest.raises(ValueError, match=f"{doc}: expected the markers"):
        course.update_runtime_tables({}, [doc])


def test_load_runtimes_names_a_bad_file(tmp_path):
    path = tmp_path / "runtimes.json"
    assert course.load_runtimes(path) == {}
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"{path}: not valid JSON"):
        course.load_runtimes(path)
    path.write_text(json.dumps({"laptop": {"seconds": {}}}))
    with pytest.raises(ValueError, match="'laptop' are not profile runtimes"):
        course.load_runtimes(path)


def test_run_course_executes_in_order_with_the_profile_and_records_runtimes(notebooks, tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGEN_PROFILE", "cpu")  # the kernel must get the course's profile, not the caller's
    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path / "artifacts"))  # empty: a first run
    monkeypatch.setenv("FACEGEN_DATA", str(tmp_path / "data"))
    doc, runtimes_file, out = tmp_path / "README.md", tmp_path / "runtimes.json", tmp_path / "executed"
    doc.write_text(TABLE_DOC)
    prepared = []
    runtimes = course.run_course("ci", out_dir=out, book=False, notebooks_dir=notebooks, runtimes_file=runtimes_file,
                                 table_files=[doc], prepare_data=prepared.append, progress=False)
    assert [p.name for p in prepared] == ["ci"]
    env_nb = nbformat.read(out / "01_env.ipynb", as_version=4)
    assert env_nb.cells[0].outputs[0]["text"] == f"ci\n{notebooks}\n"  # profile and working directory
    kernel_pid = int(env_nb.cells[1].outputs[0]["data"]["text/plain"])
    with pytest.raises(ProcessLookupError):  # the kernel was shut down, not left running
        os.kill(kernel_pid, 0)
    widget_nb = nbformat.read(out / "02_widget.ipynb", as_version=4)
    state = widget_nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert any(m["model_name"] == "IntSliderModel" and m["state"]["value"] == 7 for m in state.values())
    # progress bars: the static fallback is the bar's last line, not the "0%|" it started with; a closed bar is gone
    bars = [o["data"]["text/plain"] for o in widget_nb.cells[1].outputs]
    assert len(bars) == 1 and bars[0].startswith("steps: 100%|██████████| 4/4 [")
    assert not nbformat.read(notebooks / "01_env.ipynb", as_version=4).cells[0].outputs  # sources untouched
    assert json.loads(runtimes_file.read_text()) == runtimes
    assert list(runtimes["ci"]["seconds"]) == ["synthfaces", "01_env", "02_widget"]
    assert all(s >= 0 for s in runtimes["ci"]["seconds"].values()) and runtimes["ci"]["seconds"]["01_env"] > 0
    assert "| 02_widget.ipynb | " in doc.read_text() and runtimes["ci"]["reused_artifacts"] is False


def test_clean_widget_outputs_replaces_a_progress_bars_fallback_and_keeps_other_widgets():
    def model(name, **state):
        return {"model_name": name, "state": state}

    state = {"box": model("HBoxModel", children=["IPY_MODEL_l", "IPY_MODEL_b", "IPY_MODEL_r"]),
             "l": model("HTMLModel", value="tokenizing\u2007train:\u2007\u200750%"),
             "b": model("FloatProgressModel", value=2.0, max=4.0),
             "r": model("HTMLModel", value="\u20072/4\u2007[00:01&lt;00:01,\u20072.00img/s]"),
             "slider": model("IntSliderModel", value=7),
             "hidden": model("HBoxModel", layout="IPY_MODEL_hidden_layout"),
             "hidden_layout": model("LayoutModel", visibility="hidden")}

    def widget(model_id, text):
        return {"output_type": "display_data", "metadata": {},
                "data": {course.WIDGET_VIEW: {"model_id": model_id}, "text/plain": text}}

    printed = {"output_type": "stream", "name": "stdout", "text": "hello\n"}
    notebook = nbformat.from_dict({"metadata": {"widgets": {course.WIDGET_STATE: {"state": state}}},
                                   "cells": [{"cell_type": "code", "source": "", "metadata": {}, "outputs": [
                                       printed, widget("box", "tokenizing train:   0%|          | 0/4"),
                                       widget("slider", "IntSlider(value=7)"), widget("closed", "gone:   0%|"),
                                       widget("hidden", "left:   0%|")]}],
                                   "nbformat": 4, "nbformat_minor": 5})
    course.clean_widget_outputs(notebook)
    outputs = notebook.cells[0].outputs
    assert outputs[0] == printed and len(outputs) == 3  # the closed and the hidden bar are dropped
    assert outputs[1]["data"]["text/plain"] == "tokenizing train:  50%|█████     | 2/4 [00:01<00:01, 2.00img/s]"
    assert outputs[2]["data"]["text/plain"] == "IntSlider(value=7)"


def test_a_failing_notebook_is_named_and_not_saved_as_executed(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path / "artifacts"))
    path = tmp_path / "03_fails.ipynb"
    write_notebook(path, "raise ValueError('boom')")
    out = tmp_path / "out" / "03_fails.ipynb"
    with pytest.raises(course.NotebookFailed, match=r"03_fails.ipynb failed under profile 'ci': ValueError: boom"):
        course.execute_notebook(path, "ci", out)
    failed = tmp_path / "artifacts" / "ci" / "failed-notebooks" / "03_fails.ipynb"
    assert not out.exists() and "boom" in failed.read_text()


def test_cli_course_with_an_unknown_notebook_is_one_line_and_exit_2(capsys):
    assert main(["course", "--profile", "ci", "--only", "99"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("facegen: error: --only 99: no such notebook") and err.count("\n") == 1


def test_book_command_treats_warnings_as_errors(tmp_path):
    command = course.book_command(tmp_path)
    assert command[1:3] == ["build", str(course.BOOK_DIR)]
    assert {"-W", "-n", "--keep-going"} <= set(command) and command[-2:] == ["--path-output", str(tmp_path)]
