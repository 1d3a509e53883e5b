"""The training batches of a run, step by step: `images[batch_indices(step, ...)]` for every step from where the run
resumes, as uint8 on the training device.

From a uint8 tensor (small datasets, decoded once) the rows are simply gathered. From a `FaceImages` (a streamed
split, e.g. real CelebA) a DataLoader decodes them in worker processes, a few steps ahead of the GPU, from a batch
sampler that lists exactly those index sets: the same batches either way, and a resumed run needs no loader state.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader

from facegen.data.streaming import FaceImages, is_image_batch_source
from facegen.train.schedule import batch_indices


def step_batches(images, start: int, end: int, batch_size: int, seed: int, device: torch.device | str = "cpu",
                 num_workers: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(indices, uint8 images on `device`) of each step in [start, end)."""
    if not is_image_batch_source(images):
        got = f"{images.dtype} {tuple(images.shape)}" if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"training images must be a uint8 tensor (N, 3, S, S) or a FaceImages; got {got}")
    device = torch.device(device)
    steps = _StepIndices(start, end, len(images), batch_size, seed)
    if isinstance(images, FaceImages):
        cuda = device.type == "cuda"
        # its own generator: a DataLoader seeds its workers from the global RNG otherwise, and the trainers' global
        # random draws (e.g. dead-code restarts) must be the same whether the split is streamed or not
        loader = DataLoader(images, batch_sampler=steps, num_workers=num_workers, pin_memory=cuda,
                            prefetch_factor=4 if num_workers > 0 else None, generator=torch.Generator())
        for index, batch in zip(steps, loader):
            yield torch.tensor(index), batch.to(device, non_blocking=cuda)
    else:
        for index in steps:
            index = torch.tensor(index)
            yield index, images[index].to(device)


class _StepIndices:
    """The index lists of steps [start, end), computed as they are asked for (a DataLoader batch sampler)."""

    def __init__(self, start: int, end: int, n: int, batch_size: int, seed: int):
        self.start, self.end, self.n, self.batch_size, self.seed = start, end, n, batch_size, seed

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.end):
            yield batch_indices(step, self.n, self.batch_size, self.seed).tolist()

    def __len__(self) -> int:
        return max(self.end - self.start, 0)
