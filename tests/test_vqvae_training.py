import math

import pytest
import torch

from facegen import metrics
from facegen.config import get_profile
from facegen.data.transforms import from_uint8
from facegen.vqvae import VQVAE
from facegen.vqvae_training import batch_indices, cosine_with_warmup, evaluate, load_vqvae, record_speed, train_vqvae
from helpers import square_images

TINY = get_profile("ci").replace(vqvae={"codebook_size": 16, "embed_dim": 8, "hidden": 16, "n_res_blocks": 1,
                                        "batch_size": 4, "val_every": 3, "steps": 6, "restart_after": 2})




def test_batch_indices_are_seeded_permutations_per_epoch():
    batches = [batch_indices(step, 10, 5, seed=3) for step in range(4)]
    assert sorted(torch.cat(batches[:2]).tolist()) == list(range(10))  # epoch 0 covers every image once
    assert sorted(torch.cat(batches[2:]).tolist()) == list(range(10))
    assert not torch.equal(torch.cat(batches[:2]), torch.cat(batches[2:]))  # a new order each epoch
    assert torch.equal(batch_indices(3, 10, 5, seed=3), batches[3])  # recomputable after a restart


def test_cosine_with_warmup_by_hand():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = cosine_with_warmup(optimizer, warmup=2, total=6)
    lrs = []
    for _ in range(7):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[4] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[6] == pytest.approx(0.1)


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
    loaded = load_vqvae(tmp_path / "split")
    for key, value in whole.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


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


def test_record_speed_adds_the_calls_time_and_sets_images_per_second():
    import time
    from types import SimpleNamespace

    run = SimpleNamespace(seconds=10.0, images_per_second=None)
    began = time.perf_counter() - 2.0  # a call that started two seconds ago
    record_speed(run, began, steps_done=5, batch_size=8)
    elapsed = run.seconds - 10.0
    assert 2.0 <= elapsed < 3.0
    assert run.images_per_second == pytest.approx(40 / elapsed)
    record_speed(run, time.perf_counter(), steps_done=0, batch_size=8)  # resumed at the end: nothing ran
    assert run.images_per_second == 0.0
