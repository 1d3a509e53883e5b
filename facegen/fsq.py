"""Finite scalar quantization (FSQ): the VQ-VAE's bottleneck without a codebook to learn.

Mentzer, Minnen, Agustsson, Tschannen (2023), "Finite Scalar Quantization: VQ-VAE Made Simple", arXiv 2309.15505.

The encoder ends in d = len(levels) channels (its last 1x1 convolution is the paper's projection: it is not in here).
Each channel is squashed into a fixed range and rounded to one of L integer levels, so a position's code is d small
integers and there are L_1 * L_2 * ... * L_d codes: levels (8, 8, 8) give 512, the VQ-VAE's codebook size. The codes
form a fixed grid (the "implicit codebook"), so the three problems of `facegen.quantize` are gone: rounding has a
straight-through gradient like `argmin`, but there is no codebook to learn (no codebook loss, no commitment loss, no
EMA) and no code can die unused for want of updates (no k-means, no restarts).

One channel with L levels, in three steps:

    bound(z) = tanh(z + shift) * half_l - offset     half_l = (L - 1)(1 + eps) / 2
                                                     offset = 0 for odd L, 1/2 for even L
                                                     shift  = atanh(offset / half_l), so that bound(0) = 0
    q        = round(bound(z))                       an integer level; straight-through: backward is d bound / dz
    code     = q / (L // 2)                          in [-1, 1]

    L = 5: bound(z) in (-2.002, 2.002), q in {-2, ..., 2}, code in {-1, -0.5, 0, 0.5, 1}
    L = 8: bound(z) in (-4.0035, 3.0035), q in {-4, ..., 3}, code in {-1, -0.75, ..., 0.75}: an even number of
           levels cannot be symmetric around 0, so the grid is shifted by half a step (the offset) and stops one
           step short of 1.

The token of a position is its levels read as one mixed-radix number, the first channel the least significant digit
(digit k_i = q_i + L_i // 2, in 0..L_i - 1):

    index = k_1 + L_1 * k_2 + L_1 * L_2 * k_3 + ...

The paper's appendix A.1 writes half_l with (1 - eps) and the shift with `tan`; this module follows
vector-quantize-pytorch (the reference the tests compare with, value for value and index for index) in taking
`atanh`, the exact inverse of tanh (tan agrees with it to third order: for L = 8 the two shifts differ by 4e-6),
and (1 + eps) (the range 0.2% wider instead of narrower). Either way each channel takes exactly L values; the two
differ by one level where the bounded value lies within ~0.006 of a rounding boundary (0.2% of the values of
N(0, 4) inputs; tests/test_fsq.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from facegen.quantize import QuantizerOutput, fp32_region, full_precision, perplexity


def round_ste(x: Tensor) -> Tensor:
    """round(x) in the forward pass, the identity in the backward pass (straight-through estimator)."""
    return x + (x.round() - x).detach()


class FSQ(nn.Module):
    """Finite scalar quantization with the interface of `facegen.quantize.VectorQuantizer`.

    Input z is (B, d, H, W) from a conv encoder (channels first) or (N, d) vectors, d = len(levels). `forward`
    returns a `QuantizerOutput` whose losses are zero; `encode` gives the tokens, `decode` / `lookup` the code
    vectors of tokens, `codebook` all K = prod(levels) codes in index order. Training and eval mode behave alike:
    there is nothing to update. The only state is the `levels` buffer, saved with the model so that its weights
    say which grid they were trained with.
    """

    def __init__(self, levels: Sequence[int], eps: float = 1e-3):
        super().__init__()
        levels = tuple(levels)
        if not levels or any(isinstance(n, bool) or not isinstance(n, int) or n < 3 for n in levels):
            raise ValueError(f"FSQ: levels must be a non-empty sequence of integers >= 3, got {levels!r} (with 2 "
                             "levels the even-level shift puts z = 0 on the edge of the range)")
        self.dim = len(levels)
        self.codebook_size = math.prod(levels)
        self.eps = eps
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.long))
        # Place values of the mixed-radix index: (1, L_1, L_1 * L_2, ...). Derived from the levels: not saved.
        self.register_buffer("basis", torch.tensor([math.prod(levels[:i]) for i in range(len(levels))]),
                             persistent=False)

    def extra_repr(self) -> str:
        return f"levels={tuple(self.levels.tolist())}, codebook_size={self.codebook_size}"

    def _load_from_state_dict(self, state_dict, prefix, *args):
        # Weights trained on another grid (e.g. (4, 8, 16) loaded into (8, 8, 8): same count, same shapes) would
        # load without complaint and tokenize differently; torch raises for every message put in `error_msgs`.
        saved, error_msgs = state_dict.get(prefix + "levels"), args[-1]
        if saved is not None and saved.tolist() != self.levels.tolist():
            error_msgs.append(f"FSQ levels differ: the saved weights were trained with {tuple(saved.tolist())}, "
                              f"this model has {tuple(self.levels.tolist())}")
            return
        super()._load_from_state_dict(state_dict, prefix, *args)

    # --- the three steps, channels last: (..., d) ---------------------------------------------------------------

    def bound(self, z: Tensor) -> Tensor:
        """tanh-squash each channel into a range that rounds to exactly its L levels, with bound(0) = 0."""
        half_l = (self.levels - 1) * (1 + self.eps) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def quantize(self, z: Tensor) -> Tensor:
        """The codes of z, (..., d) -> (..., d) in [-1, 1]; the gradient is that of bound(z) / (L // 2)."""
        return round_ste(self.bound(z)) / (self.levels // 2)

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """Codes (..., d) on the grid -> token indices (...,) long (the paper's `codes_to_indexes`)."""
        digits = (codes * (self.levels // 2)).round().long() + self.levels // 2  # k_i in 0..L_i - 1
        return (digits * self.basis).sum(dim=-1)

    def lookup(self, indices: Tensor) -> Tensor:
        """Code vectors for `indices` of any shape: (...,) -> (..., d) (the paper's `indexes_to_codes`)."""
        digits = (indices.long()[..., None] // self.basis) % self.levels
        half_width = self.levels // 2
        return (digits - half_width) / half_width

    @property
    def codebook(self) -> Tensor:
        """The implicit codebook: all K codes, (K, d), row k being the code of token k (a fixed grid, not learned)."""
        return self.lookup(torch.arange(self.codebook_size, device=self.levels.device))

    # --- layout -------------------------------------------------------------------------------------------------

    def _channels_last(self, z: Tensor) -> Tensor:
        """(B, d, H, W) -> (B, H, W, d); (N, d) stays as it is."""
        if z.ndim not in (2, 4) or z.shape[1] != self.dim:
            raise ValueError(f"FSQ: z must be (B, {self.dim}, H, W) or (N, {self.dim}) for levels "
                             f"{tuple(self.levels.tolist())}, got shape {tuple(z.shape)}")
        return z.permute(0, 2, 3, 1) if z.ndim == 4 else z

    @staticmethod
    def _channels_first(x: Tensor) -> Tensor:
        """Inverse of `_channels_last`."""
        return x.permute(0, 3, 1, 2) if x.ndim == 4 else x

    # --- the forward pass and the tokenizer interface ---------------------------------------------------------

    def forward(self, z: Tensor) -> QuantizerOutput:
        # tanh and rounding in fp32 under mixed precision, as VectorQuantizer does its distances: bf16 has 8 bits of
        # mantissa, too few to put a value near a rounding boundary on the right side of it.
        with fp32_region(z.device):
            z = full_precision(z)
            codes = self.quantize(self._channels_last(z))
            indices = self.codes_to_indices(codes.detach())
            zero = z.new_zeros(())  # no codebook, no commitment: nothing to add to the reconstruction loss
            return QuantizerOutput(
                quantized=self._channels_first(codes),
                indices=indices,
                loss=zero,
                codebook_loss=zero,
                commitment_loss=zero,
                perplexity=perplexity(torch.bincount(indices.flatten(), minlength=self.codebook_size)),
            )

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        """Tokens of z: (B, d, H, W) -> (B, H, W) long, or (N, d) -> (N,)."""
        with fp32_region(z.device):
            return self.codes_to_indices(self.quantize(self._channels_last(full_precision(z))))

    def decode(self, indices: Tensor) -> Tensor:
        """Code vectors of tokens, channels first: (B, H, W) -> (B, d, H, W), or (N,) -> (N, d)."""
        if indices.ndim not in (1, 3):
            raise ValueError(f"FSQ.decode: indices must be (B, H, W) or (N,), got {tuple(indices.shape)}")
        return self._channels_first(self.lookup(indices))
