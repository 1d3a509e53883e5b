"""A VQGAN whose weights are interchangeable with taming-transformers' `VQModel` (Esser et al., 2021).

The architecture is taming's, re-written to be read: an encoder of ResNet blocks that halves the resolution
`len(ch_mult) - 1` times (with single-head self-attention at the resolutions in `attn_resolutions`), a 1x1
`quant_conv` into the codebook space, nearest-code quantization, a 1x1 `post_quant_conv` back, and a mirrored decoder.
Every module has taming's name, so `state_dict()` has exactly the keys and shapes of taming's `VQModel` without its
`loss.*` entries (the discriminator and LPIPS weights, which only training needs). That is what lets `load_taming`
read the published checkpoints, e.g. the f16-16384 model that DALL-E mini fine-tuned (`F16_16384_CONFIG`).

The tokenizer interface is the one `facegen.vqvae.VQVAE` has:

    encode_indices(images in [-1, 1], (B, 3, H, W)) -> LongTensor (B, H/f, W/f),  f = 2 ** (len(ch_mult) - 1)
    decode_indices(indices) -> images clamped to [-1, 1]

Checkpoints. Lightning `.ckpt` files are pickles. `torch.load(weights_only=True)` (torch's default since 2.6) can
only rebuild tensors and plain containers, so a malicious file cannot run code; but real Lightning checkpoints also
pickle objects (hyper-parameters, callback states), which it refuses. `load_taming` therefore tries
`weights_only=True` first and falls back to `weights_only=False` only when called with `trust_checkpoint=True`;
otherwise it raises an error that says so. `.safetensors` files hold tensors only and are always safe to read.
`convert_to_safetensors` turns a checkpoint once into a facegen folder (config.json + model.safetensors).

The training losses (PatchGAN discriminator, perceptual loss) live in `facegen/vqgan_losses.py`;
`VQGAN.last_layer` is the decoder weight their adaptive weighting needs.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import safetensors.torch
import torch
import torch.nn.functional as F
import yaml
from huggingface_hub import PyTorchModelHubMixin
from torch import Tensor, nn

from facegen.quantize import fp32_region, full_precision, nearest_codes

TAMING_TARGET = "taming.models.vqgan.VQModel"

# The f16-16384 model (taming's ImageNet VQGAN; DALL-E mini's fine-tune is `boris/vqgan_f16_16384`), in the shape
# of the `model.params` section of taming's yaml. 256 px -> 16 x 16 tokens; 128 px -> 8 x 8.
F16_16384_CONFIG: dict[str, Any] = {
    "embed_dim": 256,
    "n_embed": 16384,
    "ddconfig": {
        "double_z": False,
        "z_channels": 256,
        "resolution": 256,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 128,
        "ch_mult": [1, 1, 2, 2, 4],
        "num_res_blocks": 2,
        "attn_resolutions": [16],
        "dropout": 0.0,
    },
}


# ---------------------------------------------------------------------------------------------------------------------
# Building blocks. Attribute names are taming's: they become the state_dict keys.
# ---------------------------------------------------------------------------------------------------------------------


def swish(x: Tensor) -> Tensor:
    """x * sigmoid(x), the non-linearity used everywhere in taming's encoder and decoder."""
    return x * torch.sigmoid(x)


def group_norm(channels: int) -> nn.GroupNorm:
    """Taming's normalisation: 32 groups, eps 1e-6, learned scale and shift."""
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """x -> shortcut(x) + conv2(dropout(swish(norm2(conv1(swish(norm1(x))))))), all convs 3x3.

    When the channel count changes, the shortcut is a 1x1 conv (`nin_shortcut`, "network in network")."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        shortcut = self.nin_shortcut(x) if self.in_channels != self.out_channels else x
        return shortcut + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions of a feature map, with 1x1 convs for q, k, v and output.

    out = x + proj_out(v @ softmax(q^T k / sqrt(C)))^T: every position takes a weighted mean of all positions' values.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, height, width = x.shape
        h = self.norm(x)
        q = self.q(h).reshape(b, c, height * width).transpose(1, 2)  # (B, N, C): one query per position
        k = self.k(h).reshape(b, c, height * width)  # (B, C, N)
        v = self.v(h).reshape(b, c, height * width)  # (B, C, N)
        weights = torch.softmax(torch.bmm(q, k) * c ** -0.5, dim=2)  # (B, N queries, N keys), rows sum to 1
        attended = torch.bmm(v, weights.transpose(1, 2))  # (B, C, N): out[:, :, i] = sum_j weights[i, j] v[:, :, j]
        return x + self.proj_out(attended.reshape(b, c, height, width))


class Downsample(nn.Module):
    """Halve the resolution with a 3x3 stride-2 conv after padding one zero row/column at the bottom/right only.

    PyTorch convs pad symmetrically; taming pads (left 0, right 1, top 0, bottom 1) by hand, and the weights were
    trained with that asymmetry, so it must be reproduced exactly."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double the resolution: nearest-neighbour x2, then a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """One resolution of the encoder or decoder: ResNet blocks (`block`), each followed by an attention block
    (`attn`) when this resolution uses attention, then an optional `downsample` (encoder) or `upsample` (decoder)."""

    def __init__(self, in_channels: int, out_channels: int, n_blocks: int, use_attention: bool, dropout: float,
                 downsample: bool = False, upsample: bool = False):
        super().__init__()
        self.block = nn.ModuleList(
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels, dropout) for i in range(n_blocks))
        self.attn = nn.ModuleList(AttnBlock(out_channels) for _ in range(n_blocks if use_attention else 0))
        if downsample:
            self.downsample = Downsample(out_channels)
        if upsample:
            self.upsample = Upsample(out_channels)

    def forward(self, h: Tensor) -> Tensor:
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn) > 0:
                h = self.attn[i](h)
        if hasattr(self, "downsample"):
            h = self.downsample(h)
        if hasattr(self, "upsample"):
            h = self.upsample(h)
        return h


class Middle(nn.Module):
    """The bottleneck of both encoder and decoder: ResNet block, attention, ResNet block."""

    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, h: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(h)))


class Encoder(nn.Module):
    """(B, in_channels, H, W) -> (B, z_channels, H/f, W/f) with f = 2 ** (len(ch_mult) - 1).

    Level i works at ch * ch_mult[i] channels. Whether a level uses attention is decided from the *configured*
    `resolution` (as in taming), not from the size of the image actually passed in."""

    def __init__(self, *, ch: int, ch_mult: list[int], num_res_blocks: int, attn_resolutions: list[int],
                 z_channels: int, resolution: int, in_channels: int, dropout: float = 0.0, double_z: bool = False):
        super().__init__()
        n_levels = len(ch_mult)
        self.conv_in = nn.Conv2d(in_channels, ch, kernel_size=3, padding=1)
        levels, channels, current_res = [], ch, resolution
        for i in range(n_levels):
            out_channels = ch * ch_mult[i]
            is_last = i == n_levels - 1
            levels.append(Level(channels, out_channels, num_res_blocks, current_res in attn_resolutions, dropout,
                                downsample=not is_last))
            channels = out_channels
            current_res = current_res if is_last else current_res // 2
        self.down = nn.ModuleList(levels)
        self.mid = Middle(channels, dropout)
        self.norm_out = group_norm(channels)
        # double_z: taming's encoder is shared with its KL autoencoder, which predicts a mean and a log-variance.
        self.conv_out = nn.Conv2d(channels, 2 * z_channels if double_z else z_channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    """(B, z_channels, h, w) -> (B, out_ch, h*f, w*f): the encoder mirrored, with one more ResNet block per level.

    Taming builds the levels from the deepest up and inserts each at the front of `up`, so `up[i]` is level i (the
    same resolution as `down[i]`) while the forward pass runs `up[n-1]`, ..., `up[0]`. We compute the levels in
    that order too (channel counts flow from the bottleneck outwards) and store them by level index."""

    def __init__(self, *, ch: int, ch_mult: list[int], num_res_blocks: int, attn_resolutions: list[int],
                 z_channels: int, resolution: int, out_ch: int, dropout: float = 0.0):
        super().__init__()
        n_levels = len(ch_mult)
        channels = ch * ch_mult[-1]
        current_res = resolution // 2 ** (n_levels - 1)
        self.conv_in = nn.Conv2d(z_channels, channels, kernel_size=3, padding=1)
        self.mid = Middle(channels, dropout)
        levels: dict[int, Level] = {}
        for i in reversed(range(n_levels)):
            out_channels = ch * ch_mult[i]
            levels[i] = Level(channels, out_channels, num_res_blocks + 1, current_res in attn_resolutions, dropout,
                              upsample=i != 0)
            channels = out_channels
            current_res = current_res * 2 if i != 0 else current_res
        self.up = nn.ModuleList(levels[i] for i in range(n_levels))
        self.norm_out = group_norm(channels)
        self.conv_out = nn.Conv2d(channels, out_ch, kernel_size=3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(swish(self.norm_out(h)))


# ---------------------------------------------------------------------------------------------------------------------
# The quantizer
# ---------------------------------------------------------------------------------------------------------------------


class QuantizeOutput(NamedTuple):
    quantized: Tensor  # (B, D, h, w): code vectors in the forward pass, identity gradient to z (straight-through)
    loss: Tensor  # the VQ loss, see TamingVectorQuantizer
    indices: Tensor  # (B, h, w) long


class TamingVectorQuantizer(nn.Module):
    """Nearest-code quantization with taming's loss convention; the codebook is `embedding.weight` (n_embed, D).

    With sg[.] the stop-gradient, the two terms have the same *value*, mean((z_q - z)^2), but move different things:
        commitment = mean((sg[z_q] - z)^2)   pulls the encoder output towards its code
        codebook   = mean((z_q - sg[z])^2)   pulls the code towards the encoder output
    The VQ-VAE paper puts beta on the commitment term. Taming's `legacy=True` (the default, and how the published
    checkpoints were trained) puts it on the codebook term instead:
        legacy=True:  loss = commitment + beta * codebook
        legacy=False: loss = beta * commitment + codebook   (the paper's placement)
    Either way the loss value is (1 + beta) * mean((z_q - z)^2); only the gradients differ.
    """

    def __init__(self, n_embed: int, embed_dim: int, beta: float = 0.25, legacy: bool = True):
        super().__init__()
        self.n_embed, self.embed_dim, self.beta, self.legacy = n_embed, embed_dim, beta, legacy
        self.embedding = nn.Embedding(n_embed, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_embed, 1.0 / n_embed)  # taming's initialisation

    def extra_repr(self) -> str:
        return f"n_embed={self.n_embed}, embed_dim={self.embed_dim}, beta={self.beta}, legacy={self.legacy}"

    def forward(self, z: Tensor) -> QuantizeOutput:
        # distances and losses in fp32 even under mixed precision (as in facegen.quantize.VectorQuantizer)
        with fp32_region(z.device):
            return self._quantize(full_precision(z))

    def _quantize(self, z: Tensor) -> QuantizeOutput:
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)  # rows in (b, h, w) order
        indices = nearest_codes(flat.detach(), self.embedding.weight.detach())
        z_q = self.codes(indices.reshape(b, h, w))
        commitment = F.mse_loss(z, z_q.detach())
        codebook = F.mse_loss(z_q, z.detach())
        if self.legacy:
            loss = commitment + self.beta * codebook
        else:
            loss = self.beta * commitment + codebook
        quantized = z + (z_q - z).detach()  # forward: z_q; backward: identity, so the encoder gets gradients
        return QuantizeOutput(quantized, loss, indices.reshape(b, h, w))

    def codes(self, indices: Tensor) -> Tensor:
        """Code vectors of (B, h, w) indices, channels first: (B, D, h, w)."""
        return self.embedding(indices).permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------------------


class VQGAN(nn.Module, PyTorchModelHubMixin):
    """Encoder -> quant_conv -> quantize -> post_quant_conv -> Decoder, with taming's module names.

    The constructor takes taming's `ddconfig` entries plus `embed_dim`, `n_embed` (and the quantizer's `beta`,
    `legacy`) as flat keyword arguments, so `save_pretrained` writes them to config.json. `from_config` reads
    taming's nested yaml structure."""

    def __init__(self, *, ch: int = 128, ch_mult: Sequence[int] = (1, 1, 2, 2, 4), num_res_blocks: int = 2,
                 attn_resolutions: Sequence[int] = (16,), z_channels: int = 256, resolution: int = 256,
                 in_channels: int = 3, out_ch: int = 3, dropout: float = 0.0, double_z: bool = False,
                 embed_dim: int = 256, n_embed: int = 16384, beta: float = 0.25, legacy: bool = True):
        super().__init__()
        ch_mult, attn_resolutions = [int(m) for m in ch_mult], [int(r) for r in attn_resolutions]
        _check_architecture(ch, ch_mult, num_res_blocks, double_z)
        self.n_embed, self.in_channels = n_embed, in_channels
        self.downsampling = 2 ** (len(ch_mult) - 1)
        shared = dict(ch=ch, ch_mult=ch_mult, num_res_blocks=num_res_blocks, attn_resolutions=attn_resolutions,
                      z_channels=z_channels, resolution=resolution, dropout=dropout)
        self.encoder = Encoder(**shared, in_channels=in_channels, double_z=double_z)
        self.decoder = Decoder(**shared, out_ch=out_ch)
        self.quantize = TamingVectorQuantizer(n_embed, embed_dim, beta=beta, legacy=legacy)
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, kernel_size=1)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "VQGAN":
        """Build from taming's yaml structure (`{"model": {"params": {...}}}`) or its `params` dict alone."""
        return cls(**vqgan_kwargs(config))

    @property
    def last_layer(self) -> Tensor:
        """The decoder's final conv weight: the adaptive GAN weight compares gradients with respect to it."""
        return self.decoder.conv_out.weight

    # --- the two halves -------------------------------------------------------------------------------------------

    def encode_latents(self, images: Tensor) -> Tensor:
        """Images (B, C, H, W) -> continuous latents before quantization, (B, embed_dim, H/f, W/f)."""
        self._check_images(images)
        return self.quant_conv(self.encoder(images))

    def decode_latents(self, quantized: Tensor) -> Tensor:
        """Quantized latents (B, embed_dim, h, w) -> images (B, out_ch, h*f, w*f), not clamped."""
        return self.decoder(self.post_quant_conv(quantized))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """images in [-1, 1] -> (reconstruction (not clamped), VQ loss, indices (B, h, w))."""
        quantized, vq_loss, indices = self.quantize(self.encode_latents(images))
        return self.decode_latents(quantized), vq_loss, indices

    # --- the tokenizer interface ----------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_indices(self, images: Tensor) -> Tensor:
        """Images in [-1, 1], (B, C, H, W) -> codebook indices, LongTensor (B, H/f, W/f)."""
        return self.quantize(self.encode_latents(images)).indices

    @torch.no_grad()
    def decode_indices(self, indices: Tensor) -> Tensor:
        """Codebook indices (B, h, w) -> images in [-1, 1], (B, out_ch, h*f, w*f)."""
        if indices.dtype not in (torch.int32, torch.int64) or indices.dim() != 3:
            raise ValueError(f"indices must be an integer tensor (B, h, w); got {indices.dtype} {tuple(indices.shape)}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.n_embed):
            raise ValueError(f"indices must lie in [0, {self.n_embed - 1}]; "
                             f"got [{int(indices.min())}, {int(indices.max())}]")
        return self.decode_latents(self.quantize.codes(indices.long())).clamp(-1, 1)

    def _check_images(self, images: Tensor) -> None:
        f = self.downsampling
        if images.dim() != 4 or images.shape[1] != self.in_channels or images.shape[-1] % f or images.shape[-2] % f:
            raise ValueError(f"images must be (B, {self.in_channels}, H, W) with H and W multiples of {f}; "
                             f"got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"images must be float in [-1, 1]; got {images.dtype}")


def _check_architecture(ch: int, ch_mult: list[int], num_res_blocks: int, double_z: bool) -> None:
    if not ch_mult or num_res_blocks < 1:
        raise ValueError(f"VQGAN: ch_mult must be non-empty and num_res_blocks >= 1; "
                         f"got ch_mult={ch_mult}, num_res_blocks={num_res_blocks}")
    bad = [ch * m for m in ch_mult if (ch * m) % 32]
    if ch % 32 or bad:
        raise ValueError(f"VQGAN: GroupNorm uses 32 groups, so ch and every ch * ch_mult must be multiples of 32; "
                         f"got ch={ch}, ch_mult={ch_mult}")
    if double_z:
        raise ValueError("VQGAN: double_z=True doubles the encoder's output channels (for taming's KL autoencoder); "
                         "a VQModel needs double_z=False, or quant_conv cannot take the encoder's output")


# ---------------------------------------------------------------------------------------------------------------------
# Taming's config
# ---------------------------------------------------------------------------------------------------------------------

DDCONFIG_KEYS = ("ch", "ch_mult", "num_res_blocks", "attn_resolutions", "z_channels", "resolution", "in_channels",
                 "out_ch", "dropout", "double_z")
# `model.params` entries that matter only to taming's training code, not to the weights or the forward pass.
IGNORED_PARAMS = ("lossconfig", "ckpt_path", "ignore_keys", "image_key", "monitor", "sane_index_shape")


def vqgan_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    """VQGAN constructor arguments from taming's config: `{"model": {"target": ..., "params": ...}}` (the yaml) or
    the `params` dict (`{"embed_dim", "n_embed", "ddconfig": {...}, ...}`). Anything that would change the weights
    or the tokens and that this module does not implement is refused with an error rather than ignored."""
    if not isinstance(config, Mapping):
        raise TypeError(f"VQGAN config must be a dict, got {type(config).__name__}")
    if "model" in config:
        model = config["model"]
        target = model.get("target", TAMING_TARGET)
        if target != TAMING_TARGET:
            raise ValueError(f"VQGAN config: model.target is {target!r}; only {TAMING_TARGET!r} is supported "
                             "(Gumbel and EMA variants have different quantizer weights)")
        config = model.get("params", {})
    missing = [key for key in ("embed_dim", "n_embed", "ddconfig") if key not in config]
    if missing:
        raise ValueError(f"VQGAN config lacks {', '.join(missing)}: expected taming's model.params "
                         f"(embed_dim, n_embed, ddconfig); got keys {sorted(config)}")
    unsupported = {"remap": None, "colorize_nlabels": None}  # would change the index space / add a buffer
    rejected = [key for key, ok in unsupported.items() if config.get(key, ok) != ok]
    unknown = sorted(set(config) - {"embed_dim", "n_embed", "ddconfig", "beta", "legacy", *unsupported,
                                    *IGNORED_PARAMS})
    if rejected or unknown:
        raise ValueError(f"VQGAN config: unsupported params {rejected + unknown}")

    dd = dict(config["ddconfig"])
    if not dd.pop("resamp_with_conv", True):
        raise ValueError("VQGAN config: resamp_with_conv=False (pooling instead of strided convs) is not supported")
    if dd.pop("give_pre_end", False):
        raise ValueError("VQGAN config: give_pre_end=True (decoder without its output layer) is not supported")
    missing = [key for key in DDCONFIG_KEYS if key not in dd and key not in ("dropout", "double_z")]
    unknown = sorted(set(dd) - set(DDCONFIG_KEYS))
    if missing or unknown:
        raise ValueError(f"VQGAN config: ddconfig lacks {missing} / has unknown entries {unknown}; "
                         f"expected {', '.join(DDCONFIG_KEYS)}")
    kwargs = {key: dd[key] for key in DDCONFIG_KEYS if key in dd}
    kwargs["ch_mult"], kwargs["attn_resolutions"] = list(dd["ch_mult"]), list(dd["attn_resolutions"])
    kwargs.update(embed_dim=int(config["embed_dim"]), n_embed=int(config["n_embed"]))
    for key in ("beta", "legacy"):
        if key in config:
            kwargs[key] = config[key]
    return kwargs


def read_taming_config(config: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """A config dict from a path to taming's yaml (read with yaml.safe_load), or the dict itself."""
    if isinstance(config, Mapping):
        return dict(config)
    path = Path(config)
    if not path.is_file():
        raise FileNotFoundError(f"no taming config at {path} (expected the yaml that came with the checkpoint)")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid yaml ({error})") from error
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} does not hold a mapping (expected `model: {{target, params}}`)")
    return loaded


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------------


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors do not fit the model built from the config."""


def read_state_dict(checkpoint_path: str | os.PathLike, trust_checkpoint: bool = False) -> dict[str, Tensor]:
    """The taming state_dict (with `loss.*` entries dropped) of a Lightning `.ckpt`, a plain `torch.save`d
    state_dict, or a `.safetensors` file. See the module docstring for what `trust_checkpoint` allows."""
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.suffix == ".safetensors":
        try:
            state = safetensors.torch.load_file(path, device="cpu")
        except Exception as error:  # safetensors raises its own error types for truncated or foreign files
            raise ValueError(f"{path} is not a readable safetensors file ({error})") from error
    else:
        state = _state_dict_of(_torch_load(path, trust_checkpoint), path)
    return {key: value for key, value in state.items() if not key.startswith("loss.")}


def _torch_load(path: Path, trust_checkpoint: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        safe_error = error
    reason = _short_reason(safe_error)
    refused_objects = isinstance(safe_error, pickle.UnpicklingError) and "Unsupported global" in str(safe_error)
    if not trust_checkpoint:
        if refused_objects:
            raise ValueError(
                f"{path}: torch.load(weights_only=True) refused it ({reason}). Lightning checkpoints often pickle "
                "Python objects (hyper-parameters, callbacks); unpickling those can run arbitrary code. If you trust "
                "the file's source, call again with trust_checkpoint=True (loads with weights_only=False)."
            ) from safe_error
        raise ValueError(f"{path} is not a readable PyTorch checkpoint, corrupt or truncated? ({reason}). "
                         "If it is a checkpoint you trust, trust_checkpoint=True also tries weights_only=False."
                         ) from safe_error
    try:
        # Lenient about the classes it names: DALL-E mini's checkpoint (boris/vqgan_f16_16384) pickles omegaconf
        # hyper-parameters and Lightning callback types; neither package is needed for the weights.
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_lenient_pickle)
    except Exception as error:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint, corrupt or truncated? "
                         f"({type(error).__name__}: {error})") from error


class _MissingClass:
    """Stands in for a class a trusted checkpoint names but this Python cannot import (omegaconf's DictConfig,
    a Lightning callback, ...): it takes any arguments and any state, so the rest of the file (the tensors) loads."""

    def __new__(cls, *args, **kwargs):
        return super().__new__(cls)

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):  # pickled dict subclasses restore their items one by one
        self.__dict__.setdefault("items", {})[key] = value

    def append(self, value):  # ... and list subclasses theirs
        self.__dict__.setdefault("values", []).append(value)

    def extend(self, values):
        self.__dict__.setdefault("values", []).extend(values)


class _LenientUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            return type(name, (_MissingClass,), {"__module__": f"missing.{module}"})


class _LenientPickle:
    """A `pickle_module` for torch.load whose Unpickler replaces unimportable classes by `_MissingClass`."""

    Unpickler = _LenientUnpickler
    load = staticmethod(lambda file, **kwargs: _LenientUnpickler(file, **kwargs).load())
    __name__ = "facegen.vqgan._lenient_pickle"


_lenient_pickle = _LenientPickle()


def _short_reason(error: Exception) -> str:
    """The informative line of torch's long weights_only message, or the whole message of other errors."""
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1].strip()
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {first}"


def _state_dict_of(payload: Any, path: Path) -> dict[str, Tensor]:
    """Lightning puts the weights under "state_dict"; a bare state_dict is accepted too."""
    if isinstance(payload, Mapping) and isinstance(payload.get("state_dict"), Mapping):
        payload = payload["state_dict"]
    if not isinstance(payload, Mapping) or not payload or not all(isinstance(v, Tensor) for v in payload.values()):
        keys = sorted(payload)[:10] if isinstance(payload, Mapping) else type(payload).__name__
        raise ValueError(f"{path} holds no state_dict: expected a Lightning checkpoint with a 'state_dict' entry or a "
                         f"dict of tensors; found {keys}")
    return dict(payload)


def check_state_dict(model: nn.Module, state: Mapping[str, Tensor], source: str | os.PathLike) -> None:
    """Raise one CheckpointMismatchError listing missing keys, unexpected keys and shape mismatches, if any."""
    expected = {key: tuple(t.shape) for key, t in model.state_dict().items()}
    found = {key: tuple(t.shape) for key, t in state.items()}
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    shapes = [f"{key}: file {found[key]} vs model {expected[key]}"
              for key in expected if key in found and found[key] != expected[key]]
    if missing or unexpected or shapes:
        lines = [f"{source} does not match the VQGAN built from the config "
                 f"({len(found)} tensors in the file after dropping loss.*, {len(expected)} in the model):"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                shown = items[:12] + ([f"... and {len(items) - 12} more"] if len(items) > 12 else [])
                lines.append(f"  {title} ({len(items)}): " + ", ".join(shown))
        raise CheckpointMismatchError("\n".join(lines))


def load_taming(checkpoint_path: str | os.PathLike, config: str | os.PathLike | Mapping[str, Any],
                trust_checkpoint: bool = False) -> VQGAN:
    """A VQGAN (eval mode, fp32, CPU) from a taming checkpoint (`.ckpt` or `.safetensors`) and its yaml config
    (path or dict). `loss.*` entries are dropped; everything else must match exactly."""
    model = VQGAN.from_config(read_taming_config(config))
    state = read_state_dict(checkpoint_path, trust_checkpoint=trust_checkpoint)
    check_state_dict(model, state, checkpoint_path)
    model.load_state_dict({key: value.float() for key, value in state.items()}, strict=True)
    return model.eval()


def convert_to_safetensors(checkpoint_path: str | os.PathLike, config: str | os.PathLike | Mapping[str, Any],
                           out_dir: str | os.PathLike, trust_checkpoint: bool = False) -> Path:
    """Write a taming checkpoint as a facegen folder (config.json + model.safetensors) that `load_vqgan` reads.

    The folder is written next to `out_dir` first and its files moved in with `os.replace`, so an interrupted
    conversion never leaves a half-written model.safetensors behind."""
    model = load_taming(checkpoint_path, config, trust_checkpoint=trust_checkpoint)
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.save_pretrained(staging)
        out.mkdir(exist_ok=True)
        for file in staging.iterdir():
            os.replace(file, out / file.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def load_vqgan(folder: str | os.PathLike) -> VQGAN:
    """A VQGAN (eval mode) from a `save_pretrained` / `convert_to_safetensors` folder, loaded strictly."""
    folder = Path(folder)
    config_file, weights = folder / "config.json", folder / "model.safetensors"
    if not config_file.is_file() or not weights.is_file():
        raise FileNotFoundError(f"{folder} is not a VQGAN folder: expected config.json and model.safetensors "
                                "(make one with convert_to_safetensors or save_pretrained)")
    try:
        kwargs = json.loads(config_file.read_text())
        model = VQGAN(**kwargs)
    except (json.JSONDecodeError, TypeError) as error:
        raise ValueError(f"{config_file} is not a VQGAN config ({error})") from error
    state = read_state_dict(weights)
    check_state_dict(model, state, weights)
    model.load_state_dict(state, strict=True)
    return model.eval()


def parameter_summary(model: nn.Module) -> tuple[int, int]:
    """(tensors in the state_dict, parameters): the two numbers that identify an architecture at a glance."""
    return len(model.state_dict()), sum(p.numel() for p in model.parameters())


if __name__ == "__main__":  # python -m facegen.vqgan: size of the f16-16384 architecture, built without memory
    with torch.device("meta"):
        f16 = VQGAN.from_config(F16_16384_CONFIG)
    n_tensors, n_params = parameter_summary(f16)
    print(f"f16-16384: {n_tensors} tensors, {n_params:,} parameters")
