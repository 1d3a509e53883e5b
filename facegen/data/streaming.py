"""A split's face crops decoded when they are asked for, for datasets too large to hold in memory (real CelebA).

`load_images` hands small datasets to the trainers as one uint8 tensor (N, 3, S, S), decoded once. CelebA's 162,770
training faces would take ~8 GB that way, more than a free Colab runtime has, so with `data.stream` (the gpu profile)
it hands over a `FaceImages` instead: it indexes like that tensor (`images[indices]`, `images[:8]`, `len(images)`)
but decodes the JPEGs of the rows asked for, and DataLoader workers can decode them in parallel
(`facegen.train.batches.step_batches`).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from facegen.data.dataset import FaceDataset


class FaceImages(Dataset):
    """The uint8 face crops (3, S, S) of a `FaceDataset`, decoded on demand; `attributes` is the int8 (N, 40) matrix."""

    dtype = torch.uint8
    ndim = 4

    def __init__(self, faces: FaceDataset):
        self.faces = faces
        self.attributes = faces.attributes

    def __len__(self) -> int:
        return len(self.faces)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self), 3, self.faces.image_size, self.faces.image_size)

    def __getitem__(self, index) -> torch.Tensor:
        """One image (3, S, S) for an int; a batch (B, 3, S, S) for a slice, a list, a 1-D integer tensor or a boolean
        mask. A batch is decoded at once, so ask for a few thousand faces at most (~48 KiB each at 128 px)."""
        if isinstance(index, int) or (torch.is_tensor(index) and index.ndim == 0):
            return self.faces.uint8_item(int(index))[0]
        if isinstance(index, slice):
            rows = range(len(self))[index]
        elif torch.is_tensor(index) and index.ndim == 1 and index.dtype == torch.bool:  # a mask, as for a tensor
            if len(index) != len(self):
                raise IndexError(f"FaceImages: a mask of {len(index)} for {len(self)} faces")
            rows = index.nonzero().flatten().tolist()
        elif torch.is_tensor(index) and index.ndim == 1 and not index.is_floating_point():
            rows = index.tolist()
        elif isinstance(index, (list, tuple)):
            rows = list(index)
        else:
            raise TypeError(f"FaceImages: index with an int, a slice, a list, a 1-D integer tensor or a boolean mask, "
                            f"not {index!r}")
        if len(rows) == 0:
            return torch.empty((0, *self.shape[1:]), dtype=torch.uint8)
        return torch.stack([self.faces.uint8_item(int(i))[0] for i in rows])

    def __repr__(self) -> str:
        return f"FaceImages({len(self):,} faces of {getattr(self.faces.source, 'root', self.faces.source)}, decoded on demand)"


def is_image_batch_source(images) -> bool:
    """True for what trainers accept as images: a uint8 tensor (N, 3, S, S) or a `FaceImages`."""
    if isinstance(images, FaceImages):
        return True
    return torch.is_tensor(images) and images.dtype == torch.uint8 and images.ndim == 4 and images.shape[1] == 3
