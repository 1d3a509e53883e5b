"""Notes to the learner name folders relative to the repository, so committed notebook outputs carry no machine paths."""

from facegen.config import REPO_ROOT
from facegen.notes import note, shown


def test_paths_inside_the_repository_are_shown_relative_to_it(tmp_path):
    assert shown(REPO_ROOT / "artifacts" / "cpu" / "vqvae") == "artifacts/cpu/vqvae"
    assert shown(tmp_path / "elsewhere") == str(tmp_path / "elsewhere")  # outside: unchanged


def test_notes_rewrite_absolute_repository_paths(capsys, tmp_path):
    note(f"training into {REPO_ROOT / 'artifacts' / 'ci' / 'gpt'} (done once); data in {tmp_path}")
    assert capsys.readouterr().out == f"[facegen] training into artifacts/ci/gpt (done once); data in {tmp_path}\n"
