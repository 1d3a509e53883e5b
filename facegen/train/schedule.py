"""What every trainer schedules the same way: which examples a step sees, its random augmentation, its learning rate.

Batches and augmentations are pure functions of (seed, step), so a resumed run needs no data-loader state and sees
exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import functools
import math

import torch

SEED_STRIDE = 1_000_003  # a prime: (seed, counter) pairs map to distinct generator seeds for any realistic counter


def step_generator(seed: int, counter: int) -> torch.Generator:
    """A CPU generator for the random choices of one step (or micro-batch) `counter` of a run seeded with `seed`.
    On the CPU so that a run draws the same numbers on every device."""
    return torch.Generator().manual_seed(seed * SEED_STRIDE + counter)


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """Indices of the batch at `step`: epoch-wise random permutations seeded by (seed, epoch), so any step's batch
    can be recomputed after a restart."""
    if n < 1 or batch_size < 1:
        raise ValueError(f"batch_indices: need at least one example and a batch size >= 1, got n={n}, "
                         f"batch_size={batch_size}")
    per_epoch = max(n // batch_size, 1)
    epoch, position = divmod(step, per_epoch)
    return _epoch_order(n, seed, epoch)[position * batch_size:(position + 1) * batch_size].clone()


@functools.lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of one epoch, drawn once: a permutation of CelebA's 162,770 rows takes milliseconds, and a
    run asks for its slices thousands of times."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def warmup_steps(total: int, longest: int) -> int:
    """Warm-up length for a run of `total` steps: a tenth of the run (at least one step), at most `longest`."""
    return min(longest, total // 10 + 1)


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup` steps, then cosine decay to 10% of the peak learning rate at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
