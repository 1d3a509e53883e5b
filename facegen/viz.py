"""Image grids and plots for the notebooks and the training logs."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import make_grid

from facegen.data.transforms import to_uint8


def image_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> Image.Image:
    """Images in [-1, 1], (B, 3, H, W) -> one PIL image, `nrow` images per row, white padding."""
    grid = make_grid(images.detach().float().cpu().clamp(-1, 1), nrow=nrow, padding=padding, pad_value=1.0)
    return Image.fromarray(to_uint8(grid).permute(1, 2, 0).numpy())


def save_image_grid(images: torch.Tensor, path: Path, nrow: int = 8) -> Path:
    """`image_grid` saved as PNG, atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    image_grid(images, nrow=nrow).save(tmp)
    tmp.replace(path)
    return path


def plot_vqvae_training(history: list[dict], validation: list[dict]):
    """Training curves of a VQ-VAE run: reconstruction MSE and VQ loss, batch perplexity, validation PSNR."""
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    axes[0].plot(steps, [h["recon"] for h in history], label="reconstruction MSE", lw=1)
    axes[0].plot(steps, [h["vq"] for h in history], label="VQ loss (commitment)", lw=1)
    axes[0].set_yscale("log")
    axes[0].set_title("training losses")
    axes[0].legend()
    axes[1].plot(steps, [h["perplexity"] for h in history], lw=1, color="tab:green")
    axes[1].set_title("codebook perplexity per batch")
    val_steps = [v["step"] for v in validation]
    axes[2].plot(val_steps, [v["psnr"] for v in validation], "o-", color="tab:red")
    axes[2].set_title("validation PSNR (dB)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_gpt_training(history: list[dict], validation: list[dict], baselines: dict[str, float] | None = None,
                      smooth: int = 20):
    """GPT training curves in nats per image token: the training loss (raw and a `smooth`-step moving average) and
    the validation loss, with horizontal lines for `baselines` such as {"unigram": 6.13, "ln K": 6.24}. When the run
    saved its weights' moving average (`train_gpt` with `ema_decay`: its last validation row has
    `last_step_val_loss`), the validation points score that average and say so, and the last step's own weights get
    a marker of their own."""
    import matplotlib.pyplot as plt
    import numpy as np

    steps = np.array([h["step"] for h in history])
    loss = np.array([h["loss"] for h in history])
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(steps, loss, lw=0.6, alpha=0.35, color="tab:blue")
    if len(loss) >= smooth:
        ax.plot(steps[smooth - 1:], np.convolve(loss, np.ones(smooth) / smooth, mode="valid"), color="tab:blue",
                label=f"training (mean of {smooth} steps)")
    averaged = bool(validation) and "last_step_val_loss" in validation[-1]
    ax.plot([v["step"] for v in validation], [v["val_loss"] for v in validation], "o-", color="tab:red",
            label="validation, the weights' moving average" if averaged else "validation")
    if averaged:
        ax.plot([validation[-1]["step"]], [validation[-1]["last_step_val_loss"]], "x", color="tab:red", ms=8,
                label="validation, the last step's weights")
    for (name, value), style in zip((baselines or {}).items(), ("--", ":", "-.")):
        ax.axhline(value, ls=style, color="grey", label=f"{name} baseline ({value:.2f})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("nats per image token")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
