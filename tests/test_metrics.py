"""PSNR and SSIM against torchmetrics and scikit-image, plus cases worked out by hand."""

import math
import warnings

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio as skimage_psnr
from skimage.metrics import structural_similarity as skimage_ssim
from torchmetrics.functional.image import peak_signal_noise_ratio as torchmetrics_psnr
from torchmetrics.functional.image import structural_similarity_index_measure as torchmetrics_ssim

from facegen import metrics, quantize
from facegen.metrics import codebook_usage, perplexity, psnr, ssim


def random_pair(seed, shape=(3, 3, 32, 40)):
    """Random images in [-1, 1] and noisy copies of them (clipped back to [-1, 1])."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g) * 2 - 1
    y = (x + 0.2 * torch.randn(shape, generator=g)).clamp(-1, 1)
    return x, y


def structured_pair(shape=(2, 3, 48, 48)):
    """Smooth gradients, a checkerboard and a disc: large flat areas and sharp edges, then blurred and shifted."""
    b, c, h, w = shape
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    checker = ((torch.arange(h)[:, None] // 6 + torch.arange(w)[None, :] // 6) % 2).float() * 2 - 1
    disc = ((xx**2 + yy**2) < 0.4).float() * 2 - 1
    x = torch.stack([torch.stack([xx, checker, disc])[:c], torch.stack([yy, disc, checker])[:c]])[:b]
    blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    y = (0.8 * blurred.roll(1, dims=-1) + 0.05).clamp(-1, 1)
    return x, y


PAIRS = [random_pair(0), random_pair(1, (1, 1, 11, 11)), structured_pair(), structured_pair((1, 1, 30, 20))]


def skimage_per_image(fn, x, y, **kwargs):
    """Mean over the batch of scikit-image's value on each (C, H, W) image."""
    return float(np.mean([fn(a.numpy(), b.numpy(), **kwargs) for a, b in zip(x, y)]))


# --- PSNR ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("x, y", PAIRS)
def test_psnr_matches_torchmetrics_and_skimage(x, y):
    ours = psnr(x, y).item()
    reference = torchmetrics_psnr(y, x, data_range=2.0, dim=(1, 2, 3), reduction="elementwise_mean").item()
    assert ours == pytest.approx(reference, abs=1e-4)
    assert ours == pytest.approx(skimage_per_image(skimage_psnr, y, x, data_range=2.0), abs=1e-4)


def test_psnr_of_a_known_mse():
    x = torch.zeros(2, 1, 4, 4)
    y = torch.stack([torch.full((1, 4, 4), 0.1), torch.full((1, 4, 4), 0.2)])  # MSE 0.01 and 0.04
    per_image = psnr(x, y, reduction="none")
    assert per_image.tolist() == pytest.approx([10 * math.log10(4 / 0.01), 10 * math.log10(4 / 0.04)])
    assert per_image.tolist() == pytest.approx([26.0206, 20.0], abs=1e-4)
    # the mean of per-image PSNRs, not the PSNR of the pooled MSE (0.025 -> 22.04 dB)
    assert psnr(x, y).item() == pytest.approx((26.0206 + 20.0) / 2, abs=1e-4)
    assert psnr(x[0], y[0]).item() == pytest.approx(26.0206, abs=1e-4)  # a single (C, H, W) image
    assert psnr(x, y, data_range=1.0).item() == pytest.approx((26.0206 + 20.0) / 2 - 20 * math.log10(2), abs=1e-4)


def test_psnr_of_identical_images_is_inf_without_nan_or_warning():
    x, y = random_pair(2, (2, 3, 8, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert psnr(x, x).item() == math.inf
        both = psnr(torch.stack([x[0], x[1]]), torch.stack([x[0], y[1]]), reduction="none")
    assert both[0].item() == math.inf and math.isfinite(both[1].item())


def test_psnr_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"psnr: x and y must have the same shape"):
        psnr(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 9))


# --- SSIM ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("x, y", PAIRS)
def test_ssim_matches_skimage(x, y):
    expected = skimage_per_image(skimage_ssim, y, x, data_range=2.0, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, channel_axis=0)
    assert ssim(x, y).item() == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("x, y", PAIRS)
def test_ssim_matches_torchmetrics_on_the_windows_inside_the_image(x, y):
    # torchmetrics >= 1.5 reflect-pads by 5 pixels and also averages the border windows that see the padding
    # (PR Lightning-AI/torchmetrics#2721), so its mean differs from scikit-image's and ours. Its per-position map
    # is the same SSIM, though: cropped to the windows that fit inside the image, its mean must equal ours.
    _, full_map = torchmetrics_ssim(y, x, data_range=2.0, gaussian_kernel=True, sigma=1.5, kernel_size=11,
                                    k1=0.01, k2=0.03, return_full_image=True)
    inside = full_map[..., 5:-5, 5:-5].mean(dim=(1, 2, 3)).mean()
    assert ssim(x, y).item() == pytest.approx(inside.item(), abs=1e-4)


def test_ssim_hand_cases():
    x, _ = random_pair(3, (2, 3, 16, 16))
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-6)
    # Constant images a and b: variances and covariance vanish, SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01*2)^2
    a, b, c1 = 0.5, 0.0, (0.01 * 2.0) ** 2
    value = ssim(torch.full((1, 1, 12, 12), a), torch.full((1, 1, 12, 12), b)).item()
    assert value == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-4)
    # SSIM is symmetric, and lower for a noisier copy
    y1 = (x + 0.1 * torch.randn_like(x)).clamp(-1, 1)
    y2 = (x + 0.5 * torch.randn_like(x)).clamp(-1, 1)
    assert ssim(x, y1).item() == pytest.approx(ssim(y1, x).item(), abs=1e-6)
    assert ssim(x, y2).item() < ssim(x, y1).item() < 1.0


def test_ssim_rejects_images_smaller_than_the_window():
    with pytest.raises(ValueError, match=r"ssim: images must be at least 11x11"):
        ssim(torch.zeros(1, 3, 10, 32), torch.zeros(1, 3, 10, 32))


# --- codebook usage --------------------------------------------------------------------------------------------------


def test_codebook_usage_is_the_quantizer_one():
    assert codebook_usage is quantize.usage_stats and perplexity is quantize.perplexity  # one definition
    stats = codebook_usage(torch.tensor([[0, 0], [1, 1]]), 4)
    assert stats.perplexity == pytest.approx(2.0) and stats.dead_codes == 2
    assert perplexity(torch.ones(7)).item() == pytest.approx(7.0)


def test_unigram_entropy_matches_scipy_and_the_hand_values():
    from scipy.stats import entropy

    from facegen.metrics import unigram_entropy

    codes = torch.tensor([[0, 0, 1, 3], [3, 3, 3, 0]])
    assert unigram_entropy(codes, 4) == pytest.approx(entropy([3, 1, 0, 4]))  # scipy normalises the counts
    assert unigram_entropy(torch.arange(8), 8) == pytest.approx(math.log(8))  # uniform: ln K
    assert unigram_entropy(torch.zeros(5, dtype=torch.long), 8) == 0.0  # one code: no uncertainty
    with pytest.raises(ValueError, match="ids in 0..3; got 0..4"):
        unigram_entropy(torch.tensor([0, 4]), 4)


def test_laplacian_sharpness_by_hand_and_blur_lowers_it():
    flat = torch.zeros(1, 3, 5, 5)
    assert metrics.laplacian_sharpness(flat).item() == 0.0
    dot = torch.zeros(1, 3, 5, 5)
    dot[:, :, 2, 2] = 1.0  # the 3x3 responses around it: 4 at the centre, -1 at the four neighbours, 0 elsewhere
    assert metrics.laplacian_sharpness(dot).item() == pytest.approx(8 / 9)
    torch.manual_seed(0)
    noise = torch.rand(2, 3, 16, 16) * 2 - 1
    blurred = torch.nn.functional.avg_pool2d(noise, 3, stride=1, padding=1)
    assert (metrics.laplacian_sharpness(blurred) < 0.5 * metrics.laplacian_sharpness(noise)).all()


def test_chroma_detail_sees_colour_speckle_and_not_grey_detail():
    grey_dot = torch.zeros(1, 3, 5, 5)
    grey_dot[:, :, 2, 2] = 1.0  # a white pixel: all the detail is brightness, none is colour
    assert metrics.chroma_detail(grey_dot).item() == 0.0 and metrics.laplacian_sharpness(grey_dot).item() > 0
    red_dot = torch.zeros(1, 3, 5, 5)
    red_dot[:, 0, 2, 2] = 1.0  # red - green = 1 at one pixel: Laplacian |4| + 4 |-1| = 8 over 9 positions;
    # (red + green) / 2 - blue = 1/2 there: 4 over 9; the mean of the two channels is (8 + 4) / 9 / 2
    assert metrics.chroma_detail(red_dot).item() == pytest.approx(12 / 18)
    flat_colour = torch.zeros(1, 3, 5, 5)
    flat_colour[:, 0] = 0.7
    assert metrics.chroma_detail(flat_colour).item() == 0.0  # a uniform hue has no colour detail
    torch.manual_seed(0)
    face = torch.rand(2, 3, 16, 16) * 0.1  # a smooth, nearly grey face, then colour speckle on it
    speckled = face.clone()
    speckled[:, 2, 4::5, 4::5] = 1.0
    assert (metrics.chroma_detail(speckled) > 2 * metrics.chroma_detail(face)).all()


def test_round_trip_is_decode_of_encode_in_batches_and_keeps_the_mode():
    from facegen.data.transforms import from_uint8
    from facegen.vqvae import VQVAE

    torch.manual_seed(0)
    model = VQVAE(codebook_size=16, embed_dim=4, hidden=8, n_res_blocks=1).train()
    images = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    out = metrics.round_trip(model, images, batch_size=2)
    model.eval()
    with torch.no_grad():
        expected = model.decode_indices(model.encode_indices(from_uint8(images))).clamp(-1, 1)
    assert out.dtype == torch.float32 and out.device.type == "cpu"
    torch.testing.assert_close(out, expected)
    assert metrics.round_trip(model.train(), images).shape == (5, 3, 16, 16) and model.training
