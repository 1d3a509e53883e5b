"""benchmarks/bench_tokenizers.py's loss variants (issue 16): `structural_step` is the loss its `l1`, `mix`, `blend` and
`edges` tokenizers were trained with, so the numbers in benchmarks/README.md are only what they say if it computes that
sum."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from facegen import metrics
from facegen.vqvae import VQVAE


@pytest.fixture(scope="module")
def bench(import_benchmark):
    return import_benchmark("bench_tokenizers")


@pytest.fixture
def model_and_batch():
    torch.manual_seed(0)
    model = VQVAE(codebook_size=16, embed_dim=8, hidden=16, n_res_blocks=1)
    return model, torch.rand(2, 3, 32, 32) * 2 - 1


@pytest.mark.parametrize("weights", [(1.0, 0.0, 0.03, 0.0), (0.0, 0.16, 0.84, 0.0), (0.0, 1.0, 0.0, 0.0),
                                     (1.0, 0.0, 0.0, 0.1), (0.5, 0.25, 0.25, 0.2)])
def test_structural_step_is_the_weighted_sum_of_mse_l1_one_minus_ssim_edges_and_the_vq_loss(bench, model_and_batch,
                                                                                           weights):
    model, x = model_and_batch
    mse_weight, l1_weight, ssim_weight, gradient_weight = weights
    model.eval()  # no EMA codebook update: the two forward passes below see the same codebook
    terms = bench.structural_step(model, x, mse_weight=mse_weight, l1_weight=l1_weight, ssim_weight=ssim_weight,
                                  gradient_weight=gradient_weight)
    recon, vq = model(x)
    by_hand = (mse_weight * ((recon - x) ** 2).mean() + l1_weight * (recon - x).abs().mean()
               + ssim_weight * (1 - metrics.ssim(recon, x)) + gradient_weight * bench.image_gradient_l1(recon, x)
               + vq.loss)
    torch.testing.assert_close(terms["loss"], by_hand)
    torch.testing.assert_close(terms["recon"], F.mse_loss(recon, x))  # logged as MSE whatever the weights
    # the SSIM and edge terms are computed (and logged) only where they weigh something
    assert ("dssim" in terms) == (ssim_weight > 0) and ("edges" in terms) == (gradient_weight > 0)
    if ssim_weight:
        assert 0 < terms["dssim"].item() < 2


def test_image_gradient_l1_by_hand(bench):
    """A 1 x 1 x 2 x 3 image against zeros: horizontal differences (1, 2) and (-1, 4), vertical (3, 1, 3): mean |.|
    (1 + 2 + 1 + 4) / 4 + (3 + 1 + 3) / 3."""
    image = torch.tensor([[[[0.0, 1.0, 3.0], [3.0, 2.0, 6.0]]]])
    expected = torch.tensor((1 + 2 + 1 + 4) / 4 + (3 + 1 + 3) / 3)
    torch.testing.assert_close(bench.image_gradient_l1(image, torch.zeros_like(image)), expected)
    # a constant offset has no edges: only the shape of the image counts
    assert bench.image_gradient_l1(image + 0.7, image).item() == pytest.approx(0.0, abs=1e-6)


def test_structural_step_gives_every_weight_a_gradient_and_stays_fp32_under_bf16_autocast(bench, model_and_batch):
    model, x = model_and_batch
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = bench.structural_step(model, x, mse_weight=1.0, l1_weight=0.0, ssim_weight=0.03, gradient_weight=0.1)
    assert terms["loss"].dtype == torch.float32 and torch.isfinite(terms["loss"])
    terms["loss"].backward()
    decoder_grads = [p.grad for p in model.decoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in decoder_grads)


def test_the_ssim_term_pulls_reconstructions_towards_the_target():
    """`metrics.ssim` is differentiable the right way round: a step down the gradient of (1 - SSIM) raises the SSIM."""
    torch.manual_seed(1)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    recon = (x + 0.5 * torch.randn_like(x)).requires_grad_(True)
    (1 - metrics.ssim(recon, x)).backward()
    with torch.no_grad():
        assert metrics.ssim(recon - 5.0 * recon.grad / recon.grad.norm(), x) > metrics.ssim(recon, x)
