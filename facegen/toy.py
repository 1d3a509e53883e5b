"""Low-dimensional toys for notebook 01: blobs of points, the Voronoi cells of a codebook and a tiny VQ autoencoder.

In two dimensions you can SEE what a vector quantizer does: which code each point snaps to, where the codes move
during training, and which codes nobody uses (codebook collapse). The quantizer is the real `VectorQuantizer`;
only the encoder and decoder are shrunk to affine maps.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facegen.quantize import QuantizerOutput, VectorQuantizer, nearest_codes, usage_stats


def ring_centers(count: int, radius: float) -> Tensor:
    """`count` points evenly spaced on a circle of `radius` around the origin, the first at angle 0: (count, 2)."""
    if count < 1 or radius <= 0:
        raise ValueError(f"ring_centers: count must be >= 1 and radius > 0, got count={count}, radius={radius}")
    angles = torch.arange(count, dtype=torch.float64) * (2 * math.pi / count)
    return (radius * torch.stack([angles.cos(), angles.sin()], dim=1)).float()


def gaussian_blobs(n: int, centers: Tensor, std: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """`n` points drawn around `centers` (C, D): each picks a centre uniformly, then adds N(0, std^2) noise.

    Returns (points (n, D) float, labels (n,) long: the centre each point came from). Same seed, same points.
    """
    if centers.ndim != 2 or centers.shape[0] < 1:
        raise ValueError(f"gaussian_blobs: centers must be (C, D) with C >= 1, got shape {tuple(centers.shape)}")
    if n < 1 or std < 0:
        raise ValueError(f"gaussian_blobs: n must be >= 1 and std >= 0, got n={n}, std={std}")
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(centers.shape[0], (n,), generator=generator)
    noise = torch.randn(n, centers.shape[1], generator=generator)
    return centers.float()[labels] + std * noise, labels


def voronoi_grid(codebook: Tensor, xlim: tuple[float, float], ylim: tuple[float, float],
                 resolution: int = 200) -> tuple[Tensor, Tensor, Tensor]:
    """The Voronoi cells of a 2-D codebook (K, 2), sampled on a grid: colour the plane by nearest code.

    Returns (xs (resolution,), ys (resolution,), cells (resolution, resolution) long) with cells[i, j] the index of
    the code nearest to the point (xs[j], ys[i]): row i is height ys[i], as `plt.pcolormesh(xs, ys, cells)` expects.
    """
    if codebook.ndim != 2 or codebook.shape[1] != 2:
        raise ValueError(f"voronoi_grid: codebook must be (K, 2), got shape {tuple(codebook.shape)}")
    if resolution < 2:
        raise ValueError(f"voronoi_grid: resolution must be >= 2, got {resolution}")
    xs, ys = torch.linspace(*xlim, resolution), torch.linspace(*ylim, resolution)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # row i <-> ys[i], column j <-> xs[j]
    points = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)
    cells = nearest_codes(points, codebook.detach().float()).reshape(resolution, resolution)
    return xs, ys, cells


class ToyVQAutoencoder(nn.Module):
    """x -> affine encoder -> VectorQuantizer -> affine decoder -> x_hat, for vectors (N, D).

    Both maps start as the identity, so at step 0 the encoder outputs are the data points themselves and the
    codebook can be drawn on the same axes as the data.
    """

    def __init__(self, quantizer: VectorQuantizer):
        super().__init__()
        dim = quantizer.dim
        self.encoder, self.quantizer, self.decoder = nn.Linear(dim, dim), quantizer, nn.Linear(dim, dim)
        with torch.no_grad():
            for layer in (self.encoder, self.decoder):
                layer.weight.copy_(torch.eye(dim))
                layer.bias.zero_()

    def forward(self, x: Tensor) -> tuple[Tensor, QuantizerOutput]:
        vq = self.quantizer(self.encoder(x))
        return self.decoder(vq.quantized), vq


@contextmanager
def _one_thread():
    """Run torch on one thread inside the block: on tensors this small, extra threads only add synchronisation
    (measured ~10x slower with 2 threads on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class ToyRun:
    model: ToyVQAutoencoder
    codes_used: list[int] = field(default_factory=list)  # after each step: codes picked by at least one data point
    perplexity: list[float] = field(default_factory=list)  # after each step: exp(entropy) of the data's code usage
    loss: list[float] = field(default_factory=list)  # each step's batch loss: reconstruction MSE + quantizer loss
    lr: float | None = None  # the learning rate it was trained with


def train_toy_vqvae(data: Tensor, quantizer: VectorQuantizer, steps: int = 300, lr: float = 0.05,
                    batch_size: int = 256, seed: int = 0) -> ToyRun:
    """Train a `ToyVQAutoencoder` around `quantizer` on `data` (N, D) with Adam; record codebook usage every step.

    Usage is measured on ALL of `data` after each step (tokens of the encoder outputs), so the curves show how many
    codes the dataset really uses. Seeds torch's global generator too: k-means init and dead-code restarts draw
    from it, and a run should repeat exactly.
    """
    if data.ndim != 2 or data.shape[1] != quantizer.dim:
        raise ValueError(f"train_toy_vqvae: data must be (N, {quantizer.dim}) to match the quantizer, "
                         f"got shape {tuple(data.shape)}")
    if steps < 1 or batch_size < 1:
        raise ValueError(f"train_toy_vqvae: steps and batch_size must be >= 1, got {steps} and {batch_size}")
    torch.manual_seed(seed)
    batches = torch.Generator().manual_seed(seed)
    model = ToyVQAutoencoder(quantizer).train()
    # With EMA the codebook has requires_grad=False: the optimizer only gets what gradients move.
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    run = ToyRun(model=model, lr=lr)
    with _one_thread():
        for _ in range(steps):
            x = data[torch.randint(data.shape[0], (batch_size,), generator=batches)]
            reconstruction, vq = model(x)
            loss = F.mse_loss(reconstruction, x) + vq.loss  # vq.loss = codebook loss (0 with EMA) + commitment
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

            with torch.no_grad():  # encode() never changes the codebook: a pure measurement
                usage = usage_stats(quantizer.encode(model.encoder(data)), quantizer.codebook_size)
            run.codes_used.append(quantizer.codebook_size - usage.dead_codes)
            run.perplexity.append(usage.perplexity)
            run.loss.append(loss.item())
    return run
