"""The VQ-VAE: a conv encoder (128x128x3 -> 16x16xD), the vector quantizer, and a mirrored decoder.

Three stride-2 convolutions take 128 px to 16 px (a downsampling factor f = 8), so every face becomes a 16x16 grid of
codebook indices: 256 tokens from a vocabulary of K codes. The tokenizer interface shared with the VQGAN chapter is

    encode_indices(images in [-1, 1], (B, 3, H, W)) -> LongTensor (B, H/8, W/8)
    decode_indices(indices) -> images in [-1, 1]

The bottleneck is the learned codebook of `facegen.quantize.VectorQuantizer` (`quantizer="vq"`, the default) or
finite scalar quantization, `facegen.fsq.FSQ` (`quantizer="fsq"`): the same encoder and decoder, with the encoder's
last 1x1 convolution giving len(fsq_levels) channels instead of `embed_dim`, and codebook_size = the product of the
levels. A third, `quantizer="l2"`, keeps the learned codebook but with low-dimensional l2-normalised codes
(`facegen.quantize.L2VectorQuantizer`, ViT-VQGAN's factorized codes). All present the same interface (forward -> QuantizerOutput, encode, decode), so training,
tokenizing, metrics and sampling do not know which one they use.

`VQVAE` saves and loads as a folder (`config.json` + `model.safetensors`) through huggingface_hub's
`PyTorchModelHubMixin`, so a trained tokenizer can be shared like any hub model; config.json names the quantizer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn

from facegen.fsq import FSQ
from facegen.quantize import L2VectorQuantizer, QuantizerOutput, VectorQuantizer

DOWNSAMPLING = 8  # 128 px -> 16 x 16 tokens
QUANTIZERS = ("vq", "fsq", "l2")


class ResidualBlock(nn.Module):
    """x + conv1x1(relu(conv3x3(relu(x)))): lets the network refine features without losing resolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class Encoder(nn.Module):
    """(B, 3, 128, 128) -> (B, embed_dim, 16, 16): three stride-2 convs, residual blocks, a 1x1 projection."""

    def __init__(self, hidden: int, embed_dim: int, n_res_blocks: int):
        super().__init__()
        half = hidden // 2
        self.net = nn.Sequential(
            nn.Conv2d(3, half, 4, stride=2, padding=1),  # 64 x 64
            nn.ReLU(),
            nn.Conv2d(half, hidden, 4, stride=2, padding=1),  # 32 x 32
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 4, stride=2, padding=1),  # 16 x 16
            *[ResidualBlock(hidden) for _ in range(n_res_blocks)],
            nn.ReLU(),
            nn.Conv2d(hidden, embed_dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """(B, embed_dim, 16, 16) -> (B, 3, 128, 128): the encoder mirrored with transposed convolutions."""

    def __init__(self, hidden: int, embed_dim: int, n_res_blocks: int):
        super().__init__()
        half = hidden // 2
        self.net = nn.Sequential(
            nn.Conv2d(embed_dim, hidden, 3, padding=1),
            *[ResidualBlock(hidden) for _ in range(n_res_blocks)],
            nn.ReLU(),
            nn.ConvTranspose2d(hidden, hidden, 4, stride=2, padding=1),  # 32 x 32
            nn.ReLU(),
            nn.ConvTranspose2d(hidden, half, 4, stride=2, padding=1),  # 64 x 64
            nn.ReLU(),
            nn.ConvTranspose2d(half, 3, 4, stride=2, padding=1),  # 128 x 128
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class VQVAE(nn.Module, PyTorchModelHubMixin):
    """Encoder -> quantizer -> Decoder. `forward` returns the reconstruction and the quantizer's output.

    `quantizer="vq"` (default): a `VectorQuantizer` of `codebook_size` codes of size `embed_dim`, with `beta`, `ema`,
    `ema_decay`, `restart_after`. `quantizer="fsq"`: an `FSQ` with `fsq_levels`; the code vector then has
    len(fsq_levels) channels, `codebook_size` must equal their product, and the VQ-only arguments are unused.
    `quantizer="l2"`: an `L2VectorQuantizer`, the VQ with l2-normalised codes of `l2_dim` numbers (ViT-VQGAN): the
    encoder's last 1x1 convolution projects to `l2_dim` channels, `embed_dim` is unused."""

    def __init__(self, codebook_size: int = 512, embed_dim: int = 64, hidden: int = 64, n_res_blocks: int = 2,
                 beta: float = 0.25, ema: bool = True, ema_decay: float = 0.99, restart_after: int | None = 50,
                 quantizer: str = "vq", fsq_levels: Sequence[int] = (8, 8, 8), l2_dim: int = 8):
        super().__init__()
        if quantizer not in QUANTIZERS:
            raise ValueError(f"VQVAE: quantizer must be one of {', '.join(QUANTIZERS)}, got {quantizer!r}")
        if quantizer == "fsq" and codebook_size != math.prod(fsq_levels):
            raise ValueError(f"VQVAE: with FSQ levels {tuple(fsq_levels)} there are {math.prod(fsq_levels)} codes, "
                             f"but codebook_size is {codebook_size}; pass codebook_size={math.prod(fsq_levels)}")
        self.codebook_size = codebook_size
        code_dim = {"fsq": len(fsq_levels), "l2": l2_dim}.get(quantizer, embed_dim)
        # Built in this order (encoder, quantizer, decoder): it fixes which random numbers initialise which weights.
        self.encoder = Encoder(hidden, code_dim, n_res_blocks)
        if quantizer == "fsq":
            self.quantizer = FSQ(fsq_levels)
        elif quantizer == "l2":
            self.quantizer = L2VectorQuantizer(codebook_size, l2_dim, beta=beta, ema=ema, decay=ema_decay,
                                               restart_after=restart_after)
        else:
            self.quantizer = VectorQuantizer(codebook_size, embed_dim, beta=beta, ema=ema, decay=ema_decay,
                                             restart_after=restart_after)
        self.decoder = Decoder(hidden, code_dim, n_res_blocks)

    @classmethod
    def from_profile(cls, profile) -> "VQVAE":
        c = profile.vqvae
        extra = {"fsq": lambda: {"quantizer": "fsq", "fsq_levels": c.fsq_levels},
                 "l2": lambda: {"quantizer": "l2", "l2_dim": c.l2_dim}}.get(c.quantizer, dict)()
        return cls(codebook_size=c.codebook_size, embed_dim=c.embed_dim, hidden=c.hidden,
                   n_res_blocks=c.n_res_blocks, beta=c.beta, ema=c.ema, ema_decay=c.ema_decay,
                   restart_after=c.restart_after, **extra)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, QuantizerOutput]:
        _check_images(images)
        vq = self.quantizer(self.encoder(images))
        return self.decoder(vq.quantized), vq

    @torch.inference_mode()  # not just no_grad: skipping autograd's version tracking ~doubles CPU encoding speed
    def encode_indices(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], (B, 3, H, W) -> codebook indices, LongTensor (B, H/8, W/8)."""
        _check_images(images)
        return self.quantizer.encode(self.encoder(images))

    @torch.inference_mode()
    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Codebook indices (B, h, w) -> images in [-1, 1], (B, 3, 8h, 8w)."""
        if indices.dtype not in (torch.int32, torch.int64) or indices.dim() != 3:
            raise ValueError(f"indices must be an integer tensor (B, h, w); got {indices.dtype} {tuple(indices.shape)}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(f"indices must lie in [0, {self.codebook_size - 1}]; "
                             f"got [{int(indices.min())}, {int(indices.max())}]")
        return self.decoder(self.quantizer.decode(indices.long())).clamp(-1, 1)


def _check_images(images: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[-1] % DOWNSAMPLING or images.shape[-2] % DOWNSAMPLING:
        raise ValueError(f"images must be (B, 3, H, W) with H and W multiples of {DOWNSAMPLING}; "
                         f"got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [-1, 1]; got {images.dtype}")


def layer_summary(model: VQVAE, image_size: int = 128) -> list[tuple[str, str, tuple[int, ...], int]]:
    """(name, layer type, output shape, parameters) for every top-level layer of the encoder and decoder, plus the
    quantizer, from one forward pass of a (1, 3, S, S) image: the architecture as a table."""
    rows: list[tuple[str, str, tuple[int, ...], int]] = []
    hooks = []
    named = [(f"encoder.{n}", m) for n, m in model.encoder.net.named_children()]
    named += [("quantizer", model.quantizer)]
    named += [(f"decoder.{n}", m) for n, m in model.decoder.net.named_children()]
    for name, module in named:
        def record(mod, inputs, output, name=name):
            out = output.quantized if hasattr(output, "quantized") else output
            rows.append((name, type(mod).__name__, tuple(out.shape), sum(p.numel() for p in mod.parameters())))
        hooks.append(module.register_forward_hook(record))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, image_size, image_size))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return rows
