"""Weight averaging: an exponential moving average (EMA) of a model's weights, kept beside the model it follows.

Late in a run each optimizer step still moves the weights a little back and forth across the valley the loss has
found; the average of the last ~1 / (1 - decay) steps' weights sits nearer its floor than any one step's. The GPT
and the GAN-tuned decoder evaluate and save their average, not their last step (benchmarks/README.md measures
what that buys). The average is PyTorch's own `AveragedModel`, frozen: it is never trained, so the training engine
places it on the device without wrapping it for DDP, and checkpoints it like any other module.
"""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def warmup_decay(decay: float, updates: int) -> float:
    """The decay used at the `updates`-th update after the first: min(decay, (1 + n) / (10 + n)), TensorFlow's
    `ExponentialMovingAverage(num_updates=...)` rule. Early on the average then spans only the steps there have
    been, so a short run (a CI run, a smoke test) is not averaged mostly over its random first weights."""
    return min(decay, (1 + updates) / (10 + updates))


def _ema_with_warmup(decay: float):
    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        # AveragedModel already reads its count on the host each update (`if n_averaged == 0`): no new sync here
        torch._foreach_lerp_(averaged, current, 1.0 - warmup_decay(decay, int(num_averaged)))

    return update


def weight_average(model: torch.nn.Module, decay: float, warmup: bool = True) -> AveragedModel:
    """A frozen copy of `model` whose `update_parameters(model)` makes it the EMA of the weights it is given: the
    first call copies them, the n-th later one moves the average to d x average + (1 - d) x weights, with
    d = `warmup_decay(decay, n)`, or d = decay throughout when `warmup` is False. decay 0 keeps the last weights
    given; without warm-up, decay 1 keeps the first. `.module` is the averaged model itself."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"weight_average: decay must lie in [0, 1], got {decay!r}")
    average = _ema_with_warmup(decay) if warmup else get_ema_multi_avg_fn(decay)
    return AveragedModel(model, multi_avg_fn=average).requires_grad_(False)
