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
def test_prepare_runs_the_pipeline_on_the_ci_profile(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("FACEGEN_DATA", str(tmp_path / "data"))
    assert main(["prepare", "--profile", "ci"]) == 0
    out = capsys.readouterr().out
    assert "320 images in" in out and "== 2. VQ-VAE tokenizer ==" in out and "validation PSNR" in out
    assert (tmp_path / "artifacts" / "ci" / "vqvae" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "artifacts" / "ci" / "tokens").is_dir()


def test_sample_writes_the_grid_of_sample_faces(tmp_path, monkeypatch, capsys):
    import numpy as np
    import torch
    from PIL import Image

    from facegen import pipeline
    from facegen.gpt import LoadedGPT
    from facegen.sampling import sample_faces
    from facegen.tokens import Vocabulary
    from facegen.viz import image_grid
    from facegen.vqvae import VQVAE
    from test_sampling import tiny_gpt

    vocab = Vocabulary(512)
    gpt, vqvae = tiny_gpt(vocab), VQVAE(codebook_size=512, embed_dim=4, hidden=8, n_res_blocks=1).eval()
    monkeypatch.setattr(pipeline, "ensure_gpt", lambda profile: LoadedGPT(gpt, None, vocab, {}))
    monkeypatch.setattr(pipeline, "ensure_vqvae", lambda profile: vqvae)
    out = tmp_path / "grid.png"
    assert main(["sample", "--profile", "ci", "--attr", "Smiling=1", "--attr", "Eyeglasses=0", "--n", "4",
                 "--guidance", "2.0", "--seed", "3", "--top-k", "50", "--out", str(out)]) == 0
    assert "4 faces asked for Smiling=1, Eyeglasses=0 (guidance 2, seed 3)" in capsys.readouterr().out
    expected = sample_faces(gpt, vocab, vqvae, 4, {"Smiling": 1, "Eyeglasses": 0}, guidance_scale=2.0, seed=3,
                            top_k=50)
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(image_grid(expected, nrow=2)))
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]  # no temporary file left


def test_sample_best_of_writes_the_ranked_faces(tmp_path, monkeypatch, capsys):
    """--best-of K: the grid is exactly `sample_best_of`'s choice under the profile's classifier, same settings."""
    import numpy as np
    import torch
    from PIL import Image

    from facegen import pipeline
    from facegen.attributes import CONDITIONING_ATTRIBUTES
    from facegen.gpt import LoadedGPT
    from facegen.rerank import sample_best_of
    from facegen.tokens import Vocabulary
    from facegen.viz import image_grid
    from facegen.vqvae import VQVAE
    from test_rerank import BrightnessRanker
    from test_sampling import tiny_gpt

    vocab = Vocabulary(512)
    gpt, vqvae = tiny_gpt(vocab), VQVAE(codebook_size=512, embed_dim=4, hidden=8, n_res_blocks=1).eval()
    ranker = BrightnessRanker(CONDITIONING_ATTRIBUTES)
    monkeypatch.setattr(pipeline, "ensure_gpt", lambda profile: LoadedGPT(gpt, None, vocab, {}))
    monkeypatch.setattr(pipeline, "ensure_vqvae", lambda profile: vqvae)
    monkeypatch.setattr(pipeline, "ensure_classifier", lambda profile: ranker)
    out = tmp_path / "best.png"
    assert main(["sample", "--profile", "ci", "--attr", "Smiling=1", "--attr", "Bald=?", "--n", "4",
                 "--guidance", "2.0", "--seed", "3", "--best-of", "3", "--out", str(out)]) == 0
    assert "best of 3 by the attribute classifier" in capsys.readouterr().out
    expected = sample_best_of(gpt, vocab, vqvae, ranker, [{"Smiling": 1, "Bald": "?"}] * 4, candidates=3, seed=3,
                              guidance_scale=2.0)
    assert not torch.equal(expected.faces, expected.first)  # the ranking did choose other rounds here
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(image_grid(expected.faces, nrow=2)))


@pytest.mark.parametrize("argv, message", [
    (["--best-of", "2"], "--best-of 2: needs at least one --attr NAME=0 or NAME=1"),
    (["--best-of", "2", "--attr", "Smiling=?"], "--best-of 2: needs at least one --attr NAME=0 or NAME=1"),
])
def test_sample_best_of_refuses_a_request_with_nothing_to_rank_before_loading_anything(tmp_path, monkeypatch, capsys,
                                                                                       argv, message):
    from facegen import pipeline

    monkeypatch.setattr(pipeline, "ensure_gpt", lambda profile: pytest.fail("must not load or train the GPT"))
    assert main(["sample", "--profile", "ci", *argv, "--out", str(tmp_path / "g.png")]) == 2
    assert capsys.readouterr().err.startswith(f"facegen: error: {message}")


def test_sample_refuses_a_bad_attribute_before_loading_anything(tmp_path, monkeypatch, capsys):
    from facegen import pipeline

    monkeypatch.setattr(pipeline, "ensure_gpt", lambda profile: pytest.fail("must not load or train the GPT"))
    assert main(["sample", "--profile", "ci", "--attr", "Glasses=1", "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("facegen: error: --attr 'Glasses=1': unknown conditioning attribute") and "Eyeglasses" in err
    assert not (tmp_path / "g.png").exists()
