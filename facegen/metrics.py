"""How good is a reconstruction, and how well is the codebook used?

- `psnr`: peak signal-to-noise ratio in dB, from the mean squared error; each image separately, then averaged.
- `ssim`: structural similarity (Wang et al. 2004): compares local means, contrasts and correlations in an 11x11
  Gaussian window (sigma 1.5), so it tracks perceived structure better than PSNR does.
- `codebook_usage`, `perplexity`: shared with facegen.quantize (one definition, used by both).

Images are (B, C, H, W) or (C, H, W) tensors scaled to [-1, 1], hence the default data_range of 2.0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from facegen.quantize import CodebookUsage, perplexity, usage_stats

codebook_usage = usage_stats  # same function, the name a metrics reader looks for

__all__ = ["psnr", "ssim", "codebook_usage", "perplexity", "CodebookUsage"]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _as_batch(x: Tensor, y: Tensor, name: str) -> tuple[Tensor, Tensor]:
    """Check that x and y are same-shaped float images and return them as (B, C, H, W)."""
    if x.shape != y.shape:
        raise ValueError(f"{name}: x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim not in (3, 4):
        raise ValueError(f"{name}: images must be (B, C, H, W) or (C, H, W), got shape {tuple(x.shape)}")
    if x.ndim == 3:
        x, y = x[None], y[None]
    return x.float(), y.float()


def _reduce(per_image: Tensor, reduction: str, name: str) -> Tensor:
    if reduction == "mean":
        return per_image.mean()
    if reduction == "none":
        return per_image
    raise ValueError(f"{name}: reduction must be 'mean' or 'none', got {reduction!r}")


def psnr(x: Tensor, y: Tensor, data_range: float = 2.0, reduction: str = "mean") -> Tensor:
    """PSNR in dB = 10 log10(data_range^2 / MSE), MSE over each image's pixels and channels.

    reduction="mean" averages the per-image values over the batch; "none" returns them, shape (B,).
    Identical images have MSE 0 and PSNR +inf (as in scikit-image and torchmetrics); no NaN, no warning, but one
    such image makes the batch mean inf, so look at reduction="none" if that happens.
    """
    x, y = _as_batch(x, y, "psnr")
    mse = (x - y).pow(2).mean(dim=(1, 2, 3))
    per_image = 10 * torch.log10(data_range**2 / mse)  # mse = 0 -> division gives inf, log10(inf) = inf
    return _reduce(per_image, reduction, "psnr")


def _gaussian_window(size: int, sigma: float) -> Tensor:
    """Normalised 2-D Gaussian (size x size) as the outer product of two 1-D Gaussians."""
    offsets = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(offsets**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(x: Tensor, y: Tensor, data_range: float = 2.0, reduction: str = "mean") -> Tensor:
    """Mean SSIM: an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, each channel separately.

    Local statistics use population (not sample) covariances, and only windows that fit inside the image count
    (no padding), as in the authors' MATLAB code and in scikit-image (`gaussian_weights=True,
    use_sample_covariance=False`). Recent torchmetrics (1.9 here) reflect-pads and also averages the border windows,
    so its mean differs, most on small images; its per-position map agrees with ours inside the image.
    Per image: mean over channels and positions; reduction="mean" then averages over the batch.
    """
    x, y = _as_batch(x, y, "ssim")
    channels, height, width = x.shape[1:]
    if height < SSIM_WINDOW or width < SSIM_WINDOW:
        raise ValueError(f"ssim: images must be at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {height}x{width}")
    c1 = (SSIM_K1 * data_range) ** 2  # keep the ratios stable where means or variances are near zero
    c2 = (SSIM_K2 * data_range) ** 2

    window = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA).to(x)
    window = window.expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW)

    def local_mean(t: Tensor) -> Tensor:
        return F.conv2d(t, window, groups=channels)  # groups=channels: each channel on its own

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x**2
    var_y = local_mean(y * y) - mu_y**2
    cov_xy = local_mean(x * y) - mu_x * mu_y

    luminance = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    contrast_structure = (2 * cov_xy + c2) / (var_x + var_y + c2)
    ssim_map = luminance * contrast_structure  # (B, C, H - 10, W - 10)
    return _reduce(ssim_map.mean(dim=(1, 2, 3)), reduction, "ssim")

