"""Vector quantization: the bottleneck that turns an encoder's continuous vectors into discrete tokens.

A codebook holds K vectors ("codes") of size D. Every encoder output vector is replaced by its nearest code, and the
code's index becomes a token. Three problems come with that, and this module solves each in one small piece:

1. `argmin` has no gradient. Straight-through estimator: the forward pass uses the code, the backward pass pretends
   quantization was the identity, so the decoder's gradient reaches the encoder unchanged.
2. The codebook must learn. Either with a loss that pulls each code towards the vectors assigned to it (the codebook
   loss of the VQ-VAE paper), or with exponential moving averages of those vectors (EMA, the paper's appendix),
   which is steadier and needs no learning rate.
3. Codes die: a code that no vector picks gets no update and stays unused forever. Two remedies: start the codebook
   where the data is (k-means on the first batch), and re-seed codes that stay unused for a while with current
   encoder outputs (dead-code restart).

The loss added to the reconstruction loss is

    codebook_loss   = mean ||sg[z] - e||^2          (0 with EMA: the codebook then moves by averaging instead)
    commitment_loss = beta * mean ||z - sg[e]||^2   (beta is INSIDE this value)
    loss            = codebook_loss + commitment_loss

where sg[.] is stop-gradient (`.detach()`), z an encoder vector and e its nearest code; means run over every element.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class QuantizerOutput:
    quantized: Tensor  # same shape as the input z; values of the codes, gradient of the identity (straight-through)
    indices: Tensor  # (B, H, W) or (N,) long: the tokens
    loss: Tensor  # codebook_loss + commitment_loss, to add to the reconstruction loss
    codebook_loss: Tensor  # mean ||sg[z] - e||^2; zero when the codebook is updated by EMA
    commitment_loss: Tensor  # beta * mean ||z - sg[e]||^2 (beta included)
    perplexity: Tensor  # exp(entropy) of this batch's code histogram: "how many codes are effectively in use"


@dataclass
class CodebookUsage:
    histogram: Tensor  # (K,) long: how often each code was picked
    perplexity: float  # exp(entropy of the histogram); K for uniform usage, 1 when a single code is used
    used_fraction: float  # share of the K codes picked at least once
    dead_codes: int  # codes never picked


# ---------------------------------------------------------------------------------------------------------------------
# Small functions: each is one idea and is tested on its own.
# ---------------------------------------------------------------------------------------------------------------------


def fp32_region(device: torch.device):
    """A block where autocast is off on `device` (a no-op on devices autocast does not know, e.g. "meta")."""
    if device.type in ("cpu", "cuda", "xpu", "mps", "hpu"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def full_precision(x: Tensor) -> Tensor:
    """`x` as fp32 when it is a half-precision float (bf16/fp16, as autocast makes them); other dtypes unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def nearest_codes(flat: Tensor, codebook: Tensor, chunk: int = 4096) -> Tensor:
    """Index of the nearest code (squared Euclidean distance) for each row of `flat` (N, D); codebook is (K, D).

    ||x - e||^2 = ||x||^2 - 2 x.e + ||e||^2: one matrix product instead of an (N, K, D) tensor of differences, and
    ||x||^2 is the same for every code, so the argmin can skip it. Rows go in chunks so that each (chunk, K) block of
    distances stays in the CPU cache: ~3x faster than one (N, K) matrix when a whole batch of faces is encoded.
    """
    code_norms = codebook.pow(2).sum(dim=1)  # (K,)
    if flat.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=flat.device)
    return torch.cat([
        torch.addmm(code_norms, rows, codebook.t(), alpha=-2).argmin(dim=1)  # ||e||^2 - 2 x.e, (chunk, K)
        for rows in flat.split(chunk)
    ])


def perplexity(counts: Tensor) -> Tensor:
    """exp(entropy) of a histogram of code counts: the number of equally used codes that would give the same entropy.

    Uniform use of k codes gives k; a single code gives 1. Empty bins contribute 0 (the limit of p log p at 0).
    """
    counts = counts.detach().float()
    if counts.ndim != 1 or (counts < 0).any() or counts.sum() <= 0:
        raise ValueError(f"perplexity: counts must be a 1-D histogram of non-negative counts with a positive total, "
                         f"got shape {tuple(counts.shape)} and total {counts.sum().item()}")
    p = counts / counts.sum()
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum()  # clamp: 0 * log(0) -> 0 * (-69) = 0, not NaN
    return entropy.exp()


def usage_stats(indices: Tensor, codebook_size: int) -> CodebookUsage:
    """How a batch (or a whole dataset) of token indices uses a codebook of `codebook_size` codes."""
    if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
        raise TypeError(f"usage_stats: indices must be an integer tensor, got dtype {indices.dtype}")
    flat = indices.reshape(-1).long()
    if flat.numel() == 0:
        raise ValueError("usage_stats: indices is empty")
    if flat.min() < 0 or flat.max() >= codebook_size:
        raise ValueError(f"usage_stats: indices must lie in [0, {codebook_size}), "
                         f"got values from {flat.min().item()} to {flat.max().item()}")
    histogram = torch.bincount(flat, minlength=codebook_size)
    used = int((histogram > 0).sum())
    return CodebookUsage(
        histogram=histogram,
        perplexity=float(perplexity(histogram)),
        used_fraction=used / codebook_size,
        dead_codes=codebook_size - used,
    )


def kmeans(vectors: Tensor, k: int, iters: int = 10) -> Tensor:
    """k centres for the rows of `vectors` (N, D): k-means++ seeding, then `iters` Lloyd iterations.

    k-means++ picks each new seed with probability proportional to its squared distance from the seeds so far, so
    well-separated clusters each get a seed; plain random seeds often put two in one cluster and none in another,
    and Lloyd iterations cannot repair that. Uses torch's global random generator (seed it for reproducibility).
    """
    vectors = vectors.detach().float()
    n = vectors.shape[0]
    centres = vectors.new_empty(k, vectors.shape[1])
    centres[0] = vectors[torch.randint(n, (1,))]
    closest_sq = (vectors - centres[0]).pow(2).sum(dim=1)  # squared distance to the nearest seed so far
    for j in range(1, k):
        if closest_sq.sum() > 0:
            pick = torch.multinomial(closest_sq, 1)
        else:  # fewer distinct vectors than codes: every vector is already a seed, duplicates are unavoidable
            pick = torch.randint(n, (1,))
        centres[j] = vectors[pick]
        closest_sq = torch.minimum(closest_sq, (vectors - centres[j]).pow(2).sum(dim=1))

    for _ in range(iters):
        assignment = nearest_codes(vectors, centres)
        counts = torch.bincount(assignment, minlength=k).float()
        sums = torch.zeros_like(centres).index_add_(0, assignment, vectors)
        has_members = counts > 0  # an empty cluster keeps its previous centre instead of dividing by zero
        centres[has_members] = sums[has_members] / counts[has_members, None]
    return centres


# ---------------------------------------------------------------------------------------------------------------------
# The module
# ---------------------------------------------------------------------------------------------------------------------


class VectorQuantizer(nn.Module):
    """Nearest-code quantization with a straight-through gradient, optional EMA codebook, k-means init and restarts.

    Input z is (B, D, H, W) from a conv encoder (channels first) or (N, D) vectors (the 2-D toy of notebook 01).
    All state lives in parameters and buffers, so `state_dict()` round-trips a trained quantizer.
    Codebook updates (EMA, k-means init, restarts) happen only in training mode.
    """

    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25, ema: bool = False, decay: float = 0.99,
                 eps: float = 1e-5, restart_after: int | None = None, kmeans_init: bool = True,
                 kmeans_iters: int = 10):
        super().__init__()
        if codebook_size < 1 or dim < 1:
            raise ValueError(f"VectorQuantizer: codebook_size and dim must be >= 1, got {codebook_size} and {dim}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"VectorQuantizer: decay must be in [0, 1), got {decay}")
        if restart_after is not None and restart_after < 1:
            raise ValueError(f"VectorQuantizer: restart_after must be None or >= 1, got {restart_after}")
        self.codebook_size, self.dim, self.beta = codebook_size, dim, beta
        self.ema, self.decay, self.eps = ema, decay, eps
        self.restart_after, self.kmeans_init, self.kmeans_iters = restart_after, kmeans_init, kmeans_iters

        # Small uniform init (common in VQ-VAE code); with kmeans_init the first training batch replaces it.
        codebook = torch.empty(codebook_size, dim).uniform_(-1 / codebook_size, 1 / codebook_size)
        # With EMA the codebook is moved by averaging, not by the optimizer: no gradient.
        self.codebook = nn.Parameter(codebook, requires_grad=not ema)
        if ema:
            # Start as if every code had been picked once by a vector equal to itself: codebook = embed_sum / size
            # holds from step 0, so the first updates are not biased towards zero (no debiasing needed).
            self.register_buffer("ema_cluster_size", torch.ones(codebook_size))
            self.register_buffer("ema_embed_sum", codebook.clone())
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.register_buffer("steps_unused", torch.zeros(codebook_size, dtype=torch.long))  # training steps since used
        self.register_buffer("restarts", torch.zeros((), dtype=torch.long))  # codes re-seeded so far

    def extra_repr(self) -> str:
        return (f"codebook_size={self.codebook_size}, dim={self.dim}, beta={self.beta}, ema={self.ema}, "
                f"decay={self.decay}, restart_after={self.restart_after}, kmeans_init={self.kmeans_init}")

    # --- layout -------------------------------------------------------------------------------------------------

    def _flatten(self, z: Tensor) -> Tensor:
        """(B, D, H, W) -> (B*H*W, D) with rows in (b, h, w) order; (N, D) stays as it is."""
        if z.ndim not in (2, 4) or z.shape[1] != self.dim:
            raise ValueError(f"VectorQuantizer: z must be (B, {self.dim}, H, W) or (N, {self.dim}), "
                             f"got shape {tuple(z.shape)}")
        if z.ndim == 2:
            return z
        return z.permute(0, 2, 3, 1).reshape(-1, self.dim)

    @staticmethod
    def _unflatten(flat: Tensor, like: Tensor) -> Tensor:
        """Inverse of `_flatten` for a tensor shaped like the input z."""
        if like.ndim == 2:
            return flat
        b, d, h, w = like.shape
        return flat.reshape(b, h, w, d).permute(0, 3, 1, 2)

    # --- the forward pass -----------------------------------------------------------------------------------------

    def forward(self, z: Tensor) -> QuantizerOutput:
        # Nearest-code distances, the losses and the EMA statistics are numerically delicate: under mixed precision
        # (bf16/fp16 autocast on a GPU) they still run in fp32, as does everything downstream of the codebook.
        with fp32_region(z.device):
            return self._quantize(full_precision(z))

    def _quantize(self, z: Tensor) -> QuantizerOutput:
        flat = self._flatten(z)
        if self.training and not bool(self.initialized):
            self.init_from_kmeans(flat)

        indices = nearest_codes(flat.detach(), self.codebook.detach())
        q = self._unflatten(self.lookup(indices), z)

        commitment_loss = self.beta * F.mse_loss(z, q.detach())  # moves the encoder towards its codes
        if self.ema:
            codebook_loss = z.new_zeros(())
        else:
            codebook_loss = F.mse_loss(q, z.detach())  # moves the codes towards the encoder, not vice versa
        quantized = z + (q - z).detach()  # forward: q; backward: identity, so gradients reach the encoder

        counts = torch.bincount(indices, minlength=self.codebook_size)
        if self.training:
            with torch.no_grad():
                if self.ema:
                    self.ema_update(flat.detach(), indices)
                self._track_usage(counts)
                if self.restart_after is not None:
                    self.restart_dead_codes(flat.detach())

        index_shape = (z.shape[0], z.shape[2], z.shape[3]) if z.ndim == 4 else (z.shape[0],)
        return QuantizerOutput(
            quantized=quantized,
            indices=indices.reshape(index_shape),
            loss=codebook_loss + commitment_loss,
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            perplexity=perplexity(counts),
        )

    def lookup(self, indices: Tensor) -> Tensor:
        """Code vectors for `indices` of any shape: (...,) -> (..., D)."""
        return F.embedding(indices, self.codebook)

    # --- the tokenizer interface ----------------------------------------------------------------------------------

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        """Tokens of z: (B, D, H, W) -> (B, H, W) long, or (N, D) -> (N,). Never changes the codebook."""
        with fp32_region(z.device):
            indices = nearest_codes(self._flatten(full_precision(z)), self.codebook)
        return indices.reshape((z.shape[0], z.shape[2], z.shape[3]) if z.ndim == 4 else (z.shape[0],))

    def decode(self, indices: Tensor) -> Tensor:
        """Code vectors of tokens, channels first: (B, H, W) -> (B, D, H, W), or (N,) -> (N, D)."""
        if indices.ndim not in (1, 3):
            raise ValueError(f"VectorQuantizer.decode: indices must be (B, H, W) or (N,), got {tuple(indices.shape)}")
        vectors = self.lookup(indices.long())
        return vectors if indices.ndim == 1 else vectors.permute(0, 3, 1, 2)

    # --- codebook updates (training mode only) --------------------------------------------------------------------

    @torch.no_grad()
    def init_from_kmeans(self, flat: Tensor) -> None:
        """Put the codes on k-means centres of this batch's vectors, so every code starts where the data is."""
        centres = kmeans(flat, self.codebook_size, self.kmeans_iters)
        self.codebook.copy_(centres)
        if self.ema:
            self.ema_cluster_size.fill_(1.0)
            self.ema_embed_sum.copy_(centres)
        self.initialized.fill_(True)

    @torch.no_grad()
    def ema_update(self, flat: Tensor, indices: Tensor) -> None:
        """One EMA step (VQ-VAE paper, appendix; Sonnet's VectorQuantizerEMA):

            N_k <- decay * N_k + (1 - decay) * (number of vectors assigned to code k)
            m_k <- decay * m_k + (1 - decay) * (sum of the vectors assigned to code k)
            e_k  = m_k / N~_k,   N~_k = (N_k + eps) / (sum_j N_j + K * eps) * sum_j N_j

        N~ is N with Laplace smoothing: it never reaches 0, so a code nobody picks does not divide by zero, and the
        sizes still add up to sum_j N_j.
        """
        counts = torch.bincount(indices, minlength=self.codebook_size).to(flat.dtype)
        sums = torch.zeros_like(self.ema_embed_sum).index_add_(0, indices, flat)
        self.ema_cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.ema_embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.ema_cluster_size.sum()
        smoothed = (self.ema_cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
        self.codebook.copy_(self.ema_embed_sum / smoothed[:, None])

    @torch.no_grad()
    def _track_usage(self, counts: Tensor) -> None:
        """Steps since each code was last picked: 0 if used in this batch, else one more than before."""
        self.steps_unused.add_(1).masked_fill_(counts > 0, 0)

    @torch.no_grad()
    def restart_dead_codes(self, flat: Tensor) -> int:
        """Re-seed codes unused for `restart_after` steps with random encoder vectors of this batch; returns how many.

        A re-seeded code sits exactly on a current encoder output, so it is picked again at once and starts learning.
        """
        dead = (self.steps_unused >= self.restart_after).nonzero().flatten()
        if dead.numel() == 0:
            return 0
        n = flat.shape[0]
        # Distinct vectors when the batch has enough, so two revived codes do not land on the same point.
        rows = torch.randperm(n)[: dead.numel()] if n >= dead.numel() else torch.randint(n, (dead.numel(),))
        self.codebook[dead] = flat[rows].to(self.codebook.dtype)
        if self.ema:  # restart the averages too, as if the code had been picked once by that vector
            self.ema_cluster_size[dead] = 1.0
            self.ema_embed_sum[dead] = flat[rows].to(self.ema_embed_sum.dtype)
        self.steps_unused[dead] = 0
        self.restarts.add_(dead.numel())
        return int(dead.numel())


class L2VectorQuantizer(VectorQuantizer):
    """Nearest-code quantization of l2-normalised vectors against l2-normalised codes (ViT-VQGAN, Yu et al. 2022;
    LlamaGen, Sun et al. 2024): the encoder gives a low-dimensional vector (e.g. 8 numbers), both it and the codes are
    put on the unit sphere, and the nearest code is the one of largest cosine similarity. On the sphere
    ||x - e||^2 = 2 - 2 cos(x, e), so the Euclidean search of `nearest_codes` picks the same code; the decoder
    receives the unit code. The papers report better codebook use and sharper reconstructions from such codes.

    Everything else is the `VectorQuantizer`'s (straight-through gradient, losses, EMA, k-means start, restarts), run
    on the normalised vectors, in fp32 under autocast. The codebook is kept on the sphere: with EMA it is normalised
    after every update (k-means start, EMA step, restart); with a learned codebook it is projected back onto the sphere
    at each forward pass (projected gradient descent), and looked up normalised, so the code used is always a unit
    vector."""

    def forward(self, z: Tensor) -> QuantizerOutput:
        with fp32_region(z.device):
            # `_quantize` searches the stored codebook: put it back on the sphere if an optimizer step (learned
            # codebook) or a hand edit took it off. Its lengths carry no information (lookup normalises), so this
            # changes no result; with EMA it is a no-op.
            if not torch.allclose(self.codebook.norm(dim=1), self.codebook.new_ones(()), atol=1e-5):
                self._to_sphere()
            return self._quantize(F.normalize(full_precision(z), dim=1))

    def lookup(self, indices: Tensor) -> Tensor:
        # clone: the normalisation's backward keeps its input, and restarts rewrite the codebook in place afterwards
        return F.embedding(indices, F.normalize(self.codebook.clone(), dim=1))

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        with fp32_region(z.device):
            flat = F.normalize(self._flatten(full_precision(z)), dim=1)
            indices = nearest_codes(flat, F.normalize(self.codebook, dim=1))
        return indices.reshape((z.shape[0], z.shape[2], z.shape[3]) if z.ndim == 4 else (z.shape[0],))

    @torch.no_grad()
    def _to_sphere(self) -> None:
        self.codebook.copy_(F.normalize(self.codebook, dim=1))

    @torch.no_grad()
    def init_from_kmeans(self, flat: Tensor) -> None:
        super().init_from_kmeans(flat)
        self._to_sphere()

    @torch.no_grad()
    def ema_update(self, flat: Tensor, indices: Tensor) -> None:
        super().ema_update(flat, indices)  # the mean of unit vectors lies inside the sphere: bring it back out
        self._to_sphere()

    @torch.no_grad()
    def restart_dead_codes(self, flat: Tensor) -> int:
        restarted = super().restart_dead_codes(flat)  # flat rows are unit vectors already
        self._to_sphere()
        return restarted
