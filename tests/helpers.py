"""Small test images shared by the training tests (imported as `from helpers import ...`)."""

import torch


def square_images(n: int, seed: int = 0) -> torch.Tensor:
    """Simple structured uint8 images (n, 3, 32, 32), a bright square on a dark background, so a tiny model can
    learn them in a few steps."""
    g = torch.Generator().manual_seed(seed)
    images = torch.full((n, 3, 32, 32), 40, dtype=torch.uint8)
    for i in range(n):
        top, left = torch.randint(0, 20, (2,), generator=g).tolist()
        images[i, :, top:top + 12, left:left + 12] = torch.randint(100, 255, (3, 1, 1), generator=g).to(torch.uint8)
    return images
