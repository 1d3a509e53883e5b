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
