"""The `facegen` command line: each command on tiny data, bad input as one clear line and exit code 2."""

import pytest

from facegen.attributes import CELEBA_POSITIVE_PERCENT
from facegen.cli import main


def test_info_prints_the_chosen_profile(capsys):
    assert main(["info", "--profile", "ci"]) == 0
    assert capsys.readouterr().out.startswith("profile 'ci': ")


def test_data_summary_prints_split_sizes_and_rates(celeba, capsys):
    assert main(["data", "summary", str(celeba.root)]) == 0
    out = capsys.readouterr().out
    train, valid, test = (int((celeba.splits == s).sum()) for s in (0, 1, 2))
    assert out.splitlines()[0] == f"10 images in {celeba.root} (train {train}, valid {valid}, test {test})"
    bald = 100 * (celeba.attributes[:, 4] == 1).mean()
    assert f"| Bald | {bald:.1f} | {CELEBA_POSITIVE_PERCENT['Bald']:.1f} |" in out


def test_bad_input_is_one_line_on_stderr_and_exit_code_2(tmp_path, capsys):
    assert main(["data", "summary", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("facegen: error: ") and str(tmp_path / "nowhere") in err and err.count("\n") == 1


def test_data_synth_writes_the_celeba_layout(tmp_path, capsys):
    assert main(["data", "synth", "--n", "12", "--out", str(tmp_path / "sf"), "--workers", "1"]) == 0
    assert len(list((tmp_path / "sf" / "img_align_celeba").glob("*.jpg"))) == 12
    assert (tmp_path / "sf" / "list_attr_celeba.txt").read_text().startswith("12\n")
    assert "SynthFaces" in capsys.readouterr().out


@pytest.mark.slow
def test_course_runs_the_pipeline_on_the_ci_profile(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("FACEGEN_DATA", str(tmp_path / "data"))
    assert main(["course", "--profile", "ci"]) == 0
    out = capsys.readouterr().out
    assert "320 images in" in out and "== 2. VQ-VAE tokenizer ==" in out and "validation PSNR" in out
    assert (tmp_path / "artifacts" / "ci" / "vqvae" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "artifacts" / "ci" / "tokens").is_dir()
