"""From a 178x218 aligned CelebA photo to the model's input, and back for display.

The model sees a square crop around the face, resized to `image_size` and scaled to [-1, 1]. Images are kept as
uint8 as long as possible (on disk, in `preload`'s cache) and turned into floats by one function, `from_uint8`, so
the on-the-fly path and the cached path give bit-identical tensors. Colour-opponent channels (`to_opponent`) split
brightness from colour, for measuring colour detail (metrics.chroma_detail) and for blurring it (`blur_colour`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

CELEBA_SIZE = (178, 218)  # (width, height) of img_align_celeba
FACE_BOX = (0, 20, 178, 198)  # (left, top, right, bottom): the 178x178 square that holds the aligned face


class FaceCrop:
    """Cut FACE_BOX out of an aligned CelebA image (a PIL image of exactly 178x218)."""

    def __init__(self, box: tuple[int, int, int, int] = FACE_BOX, expected_size: tuple[int, int] = CELEBA_SIZE):
        self.box, self.expected_size = box, expected_size

    def __call__(self, image: Image.Image) -> Image.Image:
        if image.size != self.expected_size:
            raise ValueError(f"face crop: expected an aligned CelebA image of {self.expected_size[0]}x"
                             f"{self.expected_size[1]} (width x height), got {image.size[0]}x{image.size[1]}")
        return image.convert("RGB").crop(self.box)

    def __repr__(self) -> str:
        return f"FaceCrop(box={self.box})"


class FromUint8:
    """The last step of `face_transform`: uint8 [0, 255] -> float32 [-1, 1] (see `from_uint8`)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return from_uint8(x)

    def __repr__(self) -> str:
        return "FromUint8()"


def face_transform(image_size: int = 128, scale: bool = True) -> v2.Compose:
    """PIL image -> float32 (3, S, S) in [-1, 1]: crop FACE_BOX, resize with antialiasing, scale.
    With `scale=False` it stops at the uint8 (3, S, S) tensor, which is what `preload` caches."""
    steps = [
        FaceCrop(),
        # PIL's resize filters over the whole footprint of each output pixel: antialiased when shrinking.
        v2.Resize((image_size, image_size), interpolation=InterpolationMode.BICUBIC, antialias=True),
        v2.PILToTensor(),
    ]
    if scale:
        steps.append(FromUint8())
    return v2.Compose(steps)


def from_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 images (any shape, e.g. NCHW) -> float32 in [-1, 1]: 0 -> -1, 255 -> 1."""
    if x.dtype != torch.uint8:
        raise TypeError(f"from_uint8: expected a uint8 tensor, got {x.dtype}")
    return x.to(torch.float32) / 127.5 - 1.0


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped (model outputs can overshoot), e.g. for matplotlib or metrics."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats (any shape) -> uint8 [0, 255], rounded to nearest and clamped; inverse of `from_uint8`."""
    return ((x.detach().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


# Grey level, red - green, (red + green) / 2 - blue: the grey level carries brightness detail, the other two colour
# (the opponent channels of human colour vision, which resolves them far more coarsely than brightness).
_OPPONENT = ((1 / 3, 1 / 3, 1 / 3), (1.0, -1.0, 0.0), (0.5, 0.5, -1.0))


def to_opponent(x: torch.Tensor) -> torch.Tensor:
    """RGB images (B, 3, H, W) -> (B, 3, H, W): grey level, red - green, (red + green) / 2 - blue (a linear, invertible
    map; `from_opponent` undoes it). Computed in the images' dtype, on their device."""
    return torch.einsum("oc,bchw->bohw", torch.tensor(_OPPONENT, dtype=x.dtype, device=x.device), x)


def from_opponent(x: torch.Tensor) -> torch.Tensor:
    """The inverse of `to_opponent`: (grey, red - green, (red + green) / 2 - blue) -> RGB."""
    inverse = torch.linalg.inv(torch.tensor(_OPPONENT, dtype=torch.float64)).to(dtype=x.dtype, device=x.device)
    return torch.einsum("oc,bchw->bohw", inverse, x)


def blur_colour(x: torch.Tensor, block: int) -> torch.Tensor:
    """RGB images (B, 3, H, W) with their colour (the two opponent channels of `to_opponent`) averaged over
    `block` x `block` squares and bilinearly upsampled back, the grey level untouched: what is left of colour detail
    is coarser than `block` pixels (JPEG's chroma subsampling does the same). H and W must be multiples of `block`;
    differentiable."""
    if block < 1 or x.shape[-2] % block or x.shape[-1] % block:
        raise ValueError(f"blur_colour: block must be >= 1 and divide the image size {tuple(x.shape[-2:])}, got "
                         f"{block}")
    opponent = to_opponent(x)
    colour = F.interpolate(F.avg_pool2d(opponent[:, 1:], block), size=x.shape[-2:], mode="bilinear",
                           align_corners=False)
    return from_opponent(torch.cat([opponent[:, :1], colour], dim=1))


def to_pil(x: torch.Tensor) -> Image.Image:
    """One image (3, H, W) in [-1, 1] -> an RGB PIL image."""
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"to_pil: expected one image of shape (3, H, W), got {tuple(x.shape)}")
    return Image.fromarray(np.ascontiguousarray(to_uint8(x).permute(1, 2, 0).cpu().numpy()))
