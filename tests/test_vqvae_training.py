import pytest
import torch

from facegen import metrics
from facegen.config import get_profile
from facegen.data.transforms import from_uint8
from facegen.vqvae import VQVAE
from facegen.vqvae_training import evaluate, load_vqvae, train_vqvae, vqvae_step
from helpers import square_images

TINY = get_profile("ci").replace(vqvae={"codebook_size": 16, "embed_dim": 8, "hidden": 16, "n_res_blocks": 1,
                                        "batch_size": 4, "val_every": 3, "steps": 6, "restart_after": 2})


def test_evaluate_matches_a_direct_computation():
    torch.manual_seed(0)
    model = VQVAE(codebook_size=16, embed_dim=8, hidden=16, n_res_blocks=1).eval()
    images = square_images(5, seed=1)
    result = evaluate(model, images, batch_size=2)  # uneven batches: the average must be per image
    x = from_uint8(images)
    with torch.no_grad():
        recon, vq = model(x)
    assert result["psnr"] == pytest.approx(float(metrics.psnr(recon.clamp(-1, 1), x)), rel=1e-5)
    assert result["ssim"] == pytest.approx(float(metrics.ssim(recon.clamp(-1, 1), x)), rel=1e-4)
    used = len(torch.unique(vq.indices))
    assert result["usage"] == pytest.approx(used / 16)
    assert result["dead_codes"] == 16 - used


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    train, val = square_images(16), square_images(4, seed=1)
    whole = train_vqvae(TINY, train, val, folder=tmp_path / "whole", progress=False)
    first = train_vqvae(TINY, train, val, folder=tmp_path / "split", stop_after=3, progress=False)
    assert len(first.history) == 3 and not (tmp_path / "split" / "model").exists()
    resumed = train_vqvae(TINY, train, val, folder=tmp_path / "split", progress=False)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    for key, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    assert (tmp_path / "split" / "samples" / "step_000006.png").is_file()
    loaded = load_vqvae(tmp_path / "split")  # on the CPU, wherever it was trained
    for key, value in whole.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value.cpu()), key


def test_training_lowers_the_reconstruction_error(tmp_path):
    profile = TINY.replace(vqvae={"steps": 60, "val_every": 30, "lr": 3e-3})
    run = train_vqvae(profile, square_images(64), square_images(8, seed=1), folder=tmp_path, progress=False)
    first = sum(h["recon"] for h in run.history[:5]) / 5
    last = sum(h["recon"] for h in run.history[-5:]) / 5
    assert last < 0.5 * first
    assert run.validation[-1]["psnr"] > run.validation[0]["psnr"]


def test_load_vqvae_names_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="expected config.json and model.safetensors"):
        load_vqvae(tmp_path)


def test_load_vqvae_rejects_weights_that_do_not_match_the_config(tmp_path):
    from facegen.vqvae import VQVAE

    VQVAE(codebook_size=16, embed_dim=8, hidden=16, n_res_blocks=1).save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"codebook_size": 16, "embed_dim": 8, "hidden": 32, "n_res_blocks": 1}')
    with pytest.raises(ValueError, match="(?s)model.safetensors does not match .*config.json.*size mismatch"):
        load_vqvae(tmp_path)
    (tmp_path / "config.json").write_text('{"width": 3}')
    with pytest.raises(ValueError, match="config.json is not a VQ-VAE config"):
        load_vqvae(tmp_path)


def test_the_step_runs_under_bf16_autocast_with_fp32_codebook_statistics():
    """The gpu profile's first step once failed here: under autocast the encoder's bf16 output reached the
    quantizer's fp32 EMA buffers (index_add_: Float and BFloat16)."""
    torch.manual_seed(0)
    model = VQVAE(codebook_size=16, embed_dim=8, hidden=16, n_res_blocks=1, ema=True).train()
    x = from_uint8(square_images(4))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = vqvae_step(model, x)
        terms = vqvae_step(model, x)  # the second step updates the EMA statistics of an initialised codebook
    assert terms["loss"].dtype == torch.float32 and torch.isfinite(terms["loss"])
    terms["loss"].backward()
    for name, buffer in model.quantizer.named_buffers():
        if buffer.is_floating_point():
            assert buffer.dtype == torch.float32, name
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.encoder.parameters())


def test_steps_must_be_a_positive_count(tmp_path):
    with pytest.raises(ValueError, match="VQ-VAE: steps must be an integer >= 1, got -5"):
        train_vqvae(TINY, square_images(8), square_images(2), folder=tmp_path, steps=-5, progress=False)
    with pytest.raises(ValueError, match="got 0"):
        train_vqvae(TINY, square_images(8), square_images(2), folder=tmp_path, steps=0, progress=False)
    assert not (tmp_path / "model").exists()


def test_a_call_that_finds_the_run_finished_keeps_the_recorded_model_and_speed(tmp_path, capsys):
    import json

    train, val = square_images(16), square_images(4, seed=1)
    train_vqvae(TINY, train, val, folder=tmp_path, progress=False)
    history = (tmp_path / "history.json").read_text()
    weights = (tmp_path / "model" / "model.safetensors").stat().st_mtime_ns
    assert json.loads(history)["images_per_second"] > 0
    again = train_vqvae(TINY, train, val, folder=tmp_path, progress=True)  # nothing left to run
    assert len(again.history) == TINY.vqvae.steps
    assert (tmp_path / "history.json").read_text() == history  # not replaced by this call's speed of 0
    assert (tmp_path / "model" / "model.safetensors").stat().st_mtime_ns == weights
    assert "step/s" not in capsys.readouterr().err  # and no empty progress bar


def test_the_saved_model_records_its_recipe(tmp_path):
    from facegen.checkpoint import saved_recipe
    from facegen.config import training_recipe

    run = train_vqvae(TINY, square_images(8), square_images(2), folder=tmp_path, progress=False)
    assert saved_recipe(run.folder / "model") == training_recipe(TINY.vqvae)
    (run.folder / "model" / "facegen.json").unlink()  # as a model saved before facegen recorded recipes
    assert saved_recipe(run.folder / "model") is None and load_vqvae(tmp_path).codebook_size == 16
