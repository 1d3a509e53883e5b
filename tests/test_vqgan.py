"""Tests of facegen.vqgan against taming-transformers' conventions.

Two references are written here from taming's source, independently of facegen's module structure:
- `taming_keys`: every state_dict key and shape of taming's `VQModel`, derived from its naming rules as a flat list;
  the test checkpoints are built from it, so loading them proves facegen accepts taming's layout.
- `reference_encode` / `reference_decode`: taming's forward pass written with torch.nn.functional calls driven by the
  state_dict (no nn.Module), following taming's code (the `hs` list, `curr_res`, attention as einsums).
"""

import argparse
import json
import math
import os
import sys

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
import yaml

from facegen.vqgan import (
    F16_16384_CONFIG,
    AttnBlock,
    CheckpointMismatchError,
    Downsample,
    ResnetBlock,
    TamingVectorQuantizer,
    Upsample,
    VQGAN,
    convert_to_safetensors,
    load_taming,
    load_vqgan,
    parameter_summary,
    vqgan_kwargs,
)

TINY_DD = {"double_z": False, "z_channels": 32, "resolution": 32, "in_channels": 3, "out_ch": 3, "ch": 32,
           "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [16], "dropout": 0.0}
TINY_PARAMS = {"embed_dim": 16, "n_embed": 64, "ddconfig": TINY_DD}

TAMING_YAML = """\
model:
  base_learning_rate: 4.5e-06
  target: taming.models.vqgan.VQModel
  params:
    embed_dim: 16
    n_embed: 64
    ddconfig:
      double_z: False
      z_channels: 32
      resolution: 32
      in_channels: 3
      out_ch: 3
      ch: 32
      ch_mult: [1, 2]
      num_res_blocks: 1
      attn_resolutions: [16]
      dropout: 0.0
    lossconfig:
      target: taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator
      params:
        disc_conditional: False
        disc_in_channels: 3
        disc_start: 10000
        disc_weight: 0.8
        codebook_weight: 1.0
"""

# A few of the entries taming's VQLPIPSWithDiscriminator adds under `loss.` (PatchGAN + LPIPS weights).
LOSS_ENTRIES = {
    "loss.discriminator.main.0.weight": (64, 3, 4, 4),
    "loss.discriminator.main.0.bias": (64,),
    "loss.discriminator.main.2.weight": (128, 64, 4, 4),
    "loss.perceptual_loss.scaling_layer.shift": (1, 3, 1, 1),
    "loss.perceptual_loss.net.slice1.0.weight": (64, 3, 3, 3),
    "loss.perceptual_loss.lin0.model.1.weight": (1, 64, 1, 1),
}


# ---------------------------------------------------------------------------------------------------------------------
# Reference 1: taming's key names and shapes, from its naming rules
# ---------------------------------------------------------------------------------------------------------------------


def taming_keys(dd: dict, embed_dim: int, n_embed: int) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) of taming's VQModel state_dict without loss.*, in registration order."""
    keys = []

    def conv(name, c_in, c_out, k):
        keys.extend([(f"{name}.weight", (c_out, c_in, k, k)), (f"{name}.bias", (c_out,))])

    def norm(name, c):
        keys.extend([(f"{name}.weight", (c,)), (f"{name}.bias", (c,))])

    def resnet(name, c_in, c_out):
        norm(f"{name}.norm1", c_in)
        conv(f"{name}.conv1", c_in, c_out, 3)
        norm(f"{name}.norm2", c_out)
        conv(f"{name}.conv2", c_out, c_out, 3)
        if c_in != c_out:
            conv(f"{name}.nin_shortcut", c_in, c_out, 1)

    def attn(name, c):
        norm(f"{name}.norm", c)
        for part in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{part}", c, c, 1)

    def mid(name, c):
        resnet(f"{name}.block_1", c, c)
        attn(f"{name}.attn_1", c)
        resnet(f"{name}.block_2", c, c)

    ch, mult, n_blocks, n_levels = dd["ch"], dd["ch_mult"], dd["num_res_blocks"], len(dd["ch_mult"])
    channels = [ch * m for m in mult]
    # Encoder: conv_in, down.0 .. down.n-1 (attention where the running resolution is listed), mid, norm_out, conv_out
    conv("encoder.conv_in", dd["in_channels"], ch, 3)
    c_in, res = ch, dd["resolution"]
    for i in range(n_levels):
        for j in range(n_blocks):
            resnet(f"encoder.down.{i}.block.{j}", c_in if j == 0 else channels[i], channels[i])
        if res in dd["attn_resolutions"]:
            for j in range(n_blocks):
                attn(f"encoder.down.{i}.attn.{j}", channels[i])
        if i != n_levels - 1:
            conv(f"encoder.down.{i}.downsample.conv", channels[i], channels[i], 3)
            res //= 2
        c_in = channels[i]
    mid("encoder.mid", channels[-1])
    norm("encoder.norm_out", channels[-1])
    conv("encoder.conv_out", channels[-1], 2 * dd["z_channels"] if dd["double_z"] else dd["z_channels"], 3)
    # Decoder: conv_in, mid, up.0 .. up.n-1 (up.i is level i; its first block takes the channels of level i+1)
    conv("decoder.conv_in", dd["z_channels"], channels[-1], 3)
    mid("decoder.mid", channels[-1])
    for i in range(n_levels):
        res_i = dd["resolution"] // 2 ** i
        first_in = channels[i + 1] if i + 1 < n_levels else channels[-1]
        for j in range(n_blocks + 1):
            resnet(f"decoder.up.{i}.block.{j}", first_in if j == 0 else channels[i], channels[i])
        if res_i in dd["attn_resolutions"]:
            for j in range(n_blocks + 1):
                attn(f"decoder.up.{i}.attn.{j}", channels[i])
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", channels[i], channels[i], 3)
    norm("decoder.norm_out", channels[0])
    conv("decoder.conv_out", channels[0], dd["out_ch"], 3)
    keys.append(("quantize.embedding.weight", (n_embed, embed_dim)))
    conv("quant_conv", dd["z_channels"], embed_dim, 1)
    conv("post_quant_conv", embed_dim, dd["z_channels"], 1)
    return keys


def random_taming_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights in taming's layout (tiny config) with sensible scales, plus loss.* entries."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in taming_keys(TINY_DD, TINY_PARAMS["embed_dim"], TINY_PARAMS["n_embed"]):
        if key == "quantize.embedding.weight":
            state[key] = torch.randn(shape, generator=g) * 0.5
        elif len(shape) == 4:  # conv weight: keep activations O(1)
            state[key] = torch.randn(shape, generator=g) / math.sqrt(shape[1] * shape[2] * shape[3])
        elif ".norm" in key and key.endswith(".weight"):
            state[key] = 1 + 0.2 * torch.randn(shape, generator=g)
        else:  # biases
            state[key] = 0.1 * torch.randn(shape, generator=g)
    for key, shape in LOSS_ENTRIES.items():
        state[key] = torch.randn(shape, generator=g)
    return state


# ---------------------------------------------------------------------------------------------------------------------
# Reference 2: taming's forward pass, functional
# ---------------------------------------------------------------------------------------------------------------------


def ref_norm(sd, name, x):
    return F.group_norm(x, 32, sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-6)


def ref_conv(sd, name, x, stride=1, padding=None):
    weight = sd[f"{name}.weight"]
    return F.conv2d(x, weight, sd[f"{name}.bias"], stride=stride,
                    padding=weight.shape[-1] // 2 if padding is None else padding)


def ref_swish(x):
    return x * torch.sigmoid(x)


def ref_resnet(sd, name, x):
    h = ref_conv(sd, f"{name}.conv1", ref_swish(ref_norm(sd, f"{name}.norm1", x)))
    h = ref_conv(sd, f"{name}.conv2", ref_swish(ref_norm(sd, f"{name}.norm2", h)))
    if f"{name}.nin_shortcut.weight" in sd:
        x = ref_conv(sd, f"{name}.nin_shortcut", x)
    return x + h


def ref_attn(sd, name, x):
    b, c, height, width = x.shape
    h = ref_norm(sd, f"{name}.norm", x)
    q, k, v = (ref_conv(sd, f"{name}.{p}", h).reshape(b, c, height * width) for p in "qkv")
    w = torch.einsum("bci,bcj->bij", q, k) / math.sqrt(c)  # query position i, key position j
    w = torch.softmax(w, dim=2)
    out = torch.einsum("bij,bcj->bci", w, v).reshape(b, c, height, width)
    return x + ref_conv(sd, f"{name}.proj_out", out)


def ref_mid(sd, name, h):
    return ref_resnet(sd, f"{name}.block_2", ref_attn(sd, f"{name}.attn_1", ref_resnet(sd, f"{name}.block_1", h)))


def reference_encode(sd, dd, x):
    """quant_conv(encoder(x)) as in taming: hs list, attention decided by curr_res of the configured resolution."""
    n_levels, curr_res = len(dd["ch_mult"]), dd["resolution"]
    hs = [ref_conv(sd, "encoder.conv_in", x)]
    for i in range(n_levels):
        for j in range(dd["num_res_blocks"]):
            h = ref_resnet(sd, f"encoder.down.{i}.block.{j}", hs[-1])
            if curr_res in dd["attn_resolutions"]:
                h = ref_attn(sd, f"encoder.down.{i}.attn.{j}", h)
            hs.append(h)
        if i != n_levels - 1:
            hs.append(ref_conv(sd, f"encoder.down.{i}.downsample.conv", F.pad(hs[-1], (0, 1, 0, 1)), stride=2,
                               padding=0))
            curr_res //= 2
    h = ref_mid(sd, "encoder.mid", hs[-1])
    h = ref_conv(sd, "encoder.conv_out", ref_swish(ref_norm(sd, "encoder.norm_out", h)))
    return ref_conv(sd, "quant_conv", h)


def reference_decode(sd, dd, z_q):
    """decoder(post_quant_conv(z_q)) as in taming."""
    n_levels = len(dd["ch_mult"])
    curr_res = dd["resolution"] // 2 ** (n_levels - 1)
    h = ref_conv(sd, "decoder.conv_in", ref_conv(sd, "post_quant_conv", z_q))
    h = ref_mid(sd, "decoder.mid", h)
    for i in reversed(range(n_levels)):
        for j in range(dd["num_res_blocks"] + 1):
            h = ref_resnet(sd, f"decoder.up.{i}.block.{j}", h)
            if curr_res in dd["attn_resolutions"]:
                h = ref_attn(sd, f"decoder.up.{i}.attn.{j}", h)
        if i != 0:
            h = ref_conv(sd, f"decoder.up.{i}.upsample.conv", F.interpolate(h, scale_factor=2.0, mode="nearest"))
            curr_res *= 2
    return ref_conv(sd, "decoder.conv_out", ref_swish(ref_norm(sd, "decoder.norm_out", h)))


def brute_force_indices(z, codebook):
    """Nearest code of every (b, h, w) position by explicit differences (no ||a||^2 - 2ab + ||b||^2 trick)."""
    vectors = z.permute(0, 2, 3, 1)  # (B, h, w, D)
    distances = ((vectors[..., None, :] - codebook) ** 2).sum(-1)  # (B, h, w, K)
    return distances.argmin(-1)


# ---------------------------------------------------------------------------------------------------------------------
# Fixtures: a tiny checkpoint in taming's exact format
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def taming_state():
    return random_taming_state_dict()


@pytest.fixture(scope="module")
def taming_files(tmp_path_factory, taming_state):
    """A Lightning-style .ckpt and taming's yaml next to it."""
    folder = tmp_path_factory.mktemp("taming")
    ckpt = folder / "last.ckpt"
    torch.save({"state_dict": taming_state, "epoch": 3, "global_step": 1000, "pytorch-lightning_version": "1.0.8"},
               ckpt)
    config = folder / "model.yaml"
    config.write_text(TAMING_YAML)
    return ckpt, config


@pytest.fixture(scope="module")
def loaded(taming_files):
    return load_taming(*taming_files)


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1


# ---------------------------------------------------------------------------------------------------------------------
# Architecture: names and shapes
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def f16_meta():
    with torch.device("meta"):  # shapes only: no memory, built in well under a second
        return VQGAN.from_config(F16_16384_CONFIG)


def test_f16_16384_state_dict_equals_tamings_key_list(f16_meta):
    dd = F16_16384_CONFIG["ddconfig"]
    expected = taming_keys(dd, F16_16384_CONFIG["embed_dim"], F16_16384_CONFIG["n_embed"])
    actual = [(key, tuple(t.shape)) for key, t in f16_meta.state_dict().items()]
    assert actual == expected  # same keys, same shapes, same order
    assert len(actual) == 343


def test_f16_16384_size_and_spot_checked_shapes(f16_meta):
    n_tensors, n_params = parameter_summary(f16_meta)
    assert n_tensors == 343
    assert n_params == 76_073_859  # measured with `python -m facegen.vqgan`; ~76M as published
    shapes = {key: tuple(t.shape) for key, t in f16_meta.state_dict().items()}
    assert shapes["encoder.down.4.attn.1.q.weight"] == (512, 512, 1, 1)  # 128 * 4 channels at 16 x 16
    assert "encoder.down.4.attn.2.q.weight" not in shapes  # one attention per ResNet block: 2 in the encoder
    assert shapes["decoder.up.4.attn.2.proj_out.weight"] == (512, 512, 1, 1)  # 3 in the decoder
    assert "decoder.up.3.attn.0.q.weight" not in shapes  # 32 x 32 has no attention
    assert shapes["encoder.down.2.block.0.nin_shortcut.weight"] == (256, 128, 1, 1)
    assert shapes["decoder.up.3.block.0.nin_shortcut.weight"] == (256, 512, 1, 1)  # up.3 follows up.4 (512 ch)
    assert shapes["decoder.up.1.block.0.nin_shortcut.weight"] == (128, 256, 1, 1)
    assert "decoder.up.0.upsample.conv.weight" not in shapes and "encoder.down.4.downsample.conv.weight" not in shapes
    assert shapes["quantize.embedding.weight"] == (16384, 256)
    assert shapes["quant_conv.weight"] == (256, 256, 1, 1)
    assert shapes["encoder.conv_out.weight"] == (256, 512, 3, 3)  # double_z false: z_channels out
    assert shapes["decoder.conv_out.weight"] == (3, 128, 3, 3)


@pytest.mark.parametrize("size, grid", [(128, 8), (256, 16)])
def test_f16_16384_token_grid(f16_meta, size, grid):
    indices = f16_meta.encode_indices(torch.zeros(1, 3, size, size, device="meta"))
    assert tuple(indices.shape) == (1, grid, grid)
    recon = f16_meta.decode_latents(f16_meta.quantize.codes(indices))
    assert tuple(recon.shape) == (1, 3, size, size)


# ---------------------------------------------------------------------------------------------------------------------
# Blocks checked by hand
# ---------------------------------------------------------------------------------------------------------------------


def test_downsample_pads_only_bottom_and_right():
    block = Downsample(32)
    x = torch.arange(4 * 4, dtype=torch.float32).reshape(1, 1, 4, 4).repeat(1, 32, 1, 1)
    with torch.no_grad():
        block.conv.bias.zero_()
        block.conv.weight.zero_()
        block.conv.weight[0, 0, 0, 0] = 1  # output channel 0 reads the top-left tap
        block.conv.weight[1, 0, 2, 2] = 1  # output channel 1 reads the bottom-right tap
        out = block(x)
    assert out.shape == (1, 32, 2, 2)
    # top-left tap at (2i, 2j): x[0,0]=0, x[0,2]=2, x[2,0]=8, x[2,2]=10 -- no padding on top/left
    assert out[0, 0].tolist() == [[0, 2], [8, 10]]
    # bottom-right tap at (2i+2, 2j+2): x[2,2]=10, then the zero column/row padded at the right/bottom
    assert out[0, 1].tolist() == [[10, 0], [0, 0]]


def test_upsample_is_nearest_neighbour_then_conv():
    block = Upsample(32)
    x = torch.randn(1, 32, 2, 3)
    with torch.no_grad():
        block.conv.bias.zero_()
        block.conv.weight.zero_()
        block.conv.weight[range(32), range(32), 1, 1] = 1  # identity kernel
        out = block(x)
    assert torch.equal(out, x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3))


def test_resnet_block_matches_functional_formula_and_shortcut():
    torch.manual_seed(0)
    block = ResnetBlock(32, 64).eval()
    x = torch.randn(2, 32, 5, 5)
    with torch.no_grad():
        for name, p in block.named_parameters():
            p.add_(0.1 * torch.randn_like(p))  # non-trivial GroupNorm affine parameters too
        sd = {f"b.{k}": v for k, v in block.state_dict().items()}
        torch.testing.assert_close(block(x), ref_resnet(sd, "b", x))
        # with conv2 silenced the block is its 1x1 shortcut alone: out[o] = sum_i W[o, i] x[i] + b[o]
        block.conv2.weight.zero_()
        block.conv2.bias.zero_()
        w, b = block.nin_shortcut.weight[:, :, 0, 0], block.nin_shortcut.bias
        torch.testing.assert_close(block(x), torch.einsum("oi,bihw->bohw", w, x) + b[:, None, None])
        same = ResnetBlock(32, 32)
        assert not hasattr(same, "nin_shortcut")
        same.conv2.weight.zero_()
        same.conv2.bias.zero_()
        assert torch.equal(same(x), x)  # identity shortcut


def test_attention_block_by_hand():
    torch.manual_seed(0)
    block = AttnBlock(32).eval()
    x = torch.randn(1, 32, 2, 2)
    with torch.no_grad():
        # Random weights: compare with a loop over query positions i and key positions j.
        h = F.group_norm(x, 32, block.norm.weight, block.norm.bias, eps=1e-6).reshape(32, 4)
        q, k, v = (getattr(block, p).weight[:, :, 0, 0] @ h + getattr(block, p).bias[:, None] for p in "qkv")
        out = torch.zeros(32, 4)
        for i in range(4):
            scores = torch.tensor([float(q[:, i] @ k[:, j]) / math.sqrt(32) for j in range(4)])
            weights = torch.exp(scores) / torch.exp(scores).sum()
            out[:, i] = sum(weights[j] * v[:, j] for j in range(4))
        expected = x + (block.proj_out.weight[:, :, 0, 0] @ out + block.proj_out.bias[:, None]).reshape(1, 32, 2, 2)
        torch.testing.assert_close(block(x), expected)
        # Zero queries: every score is 0, softmax is uniform, every position gets the mean value.
        block.q.weight.zero_()
        block.q.bias.zero_()
        mean_v = v.mean(dim=1, keepdim=True).expand(32, 4)
        expected = x + (block.proj_out.weight[:, :, 0, 0] @ mean_v + block.proj_out.bias[:, None]).reshape(1, 32, 2, 2)
        torch.testing.assert_close(block(x), expected)


# ---------------------------------------------------------------------------------------------------------------------
# The quantizer's loss convention
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [True, False])
def test_vq_loss_and_gradients_by_hand(legacy):
    quantizer = TamingVectorQuantizer(n_embed=2, embed_dim=2, beta=0.25, legacy=legacy)
    with torch.no_grad():
        quantizer.embedding.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    z = torch.tensor([0.2, 0.4]).reshape(1, 2, 1, 1).requires_grad_()
    out = quantizer(z)
    assert out.indices.tolist() == [[[0]]]  # |z - e0|^2 = 0.2 < |z - e1|^2 = 1.0
    # both terms equal mean((z - e0)^2) = (0.04 + 0.16) / 2 = 0.1, so the value is (1 + beta) * 0.1 either way
    assert out.loss.item() == pytest.approx(0.125)
    out.loss.backward()
    # d/dz mean((z - e)^2) = 2 (z - e) / 2 = (0.2, 0.4); d/de0 = -(0.2, 0.4)
    z_scale, code_scale = (1.0, 0.25) if legacy else (0.25, 1.0)  # legacy: beta on the codebook term
    torch.testing.assert_close(z.grad.flatten(), z_scale * torch.tensor([0.2, 0.4]))
    torch.testing.assert_close(quantizer.embedding.weight.grad,
                               torch.tensor([[-0.2, -0.4], [0.0, 0.0]]) * code_scale)


def test_quantizer_is_straight_through_and_legacy_by_default():
    quantizer = TamingVectorQuantizer(n_embed=8, embed_dim=4)
    assert quantizer.legacy is True and quantizer.beta == 0.25
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = quantizer(z)
    torch.testing.assert_close(out.quantized, quantizer.codes(out.indices))  # forward value: the codes
    (out.quantized * 3).sum().backward()
    torch.testing.assert_close(z.grad, torch.full_like(z, 3.0))  # backward: identity


# ---------------------------------------------------------------------------------------------------------------------
# Loading a taming checkpoint, end to end
# ---------------------------------------------------------------------------------------------------------------------


def test_load_taming_drops_loss_entries_and_keeps_every_weight(loaded, taming_state):
    model_state = loaded.state_dict()
    assert not any(key.startswith("loss.") for key in model_state)
    assert set(model_state) == {key for key in taming_state if not key.startswith("loss.")}
    for key, value in model_state.items():
        assert torch.equal(value, taming_state[key]), key
    assert not loaded.training


def test_forward_matches_functional_taming_reference(loaded, taming_state, images):
    with torch.no_grad():
        latents = loaded.encode_latents(images)
        expected_latents = reference_encode(taming_state, TINY_DD, images)
        torch.testing.assert_close(latents, expected_latents, rtol=1e-4, atol=1e-5)
        indices = loaded.encode_indices(images)
        codebook = taming_state["quantize.embedding.weight"]
        assert torch.equal(indices, brute_force_indices(expected_latents, codebook))
        assert indices.unique().numel() > 5  # the test data exercises many codes, not one
        recon, vq_loss, forward_indices = loaded(images)
        z_q = codebook[indices].permute(0, 3, 1, 2)
        torch.testing.assert_close(recon, reference_decode(taming_state, TINY_DD, z_q), rtol=1e-4, atol=1e-5)
        assert torch.equal(forward_indices, indices)
        torch.testing.assert_close(vq_loss, 1.25 * ((z_q - expected_latents) ** 2).mean(), rtol=1e-4, atol=1e-6)


def test_decode_of_encode_equals_the_forward_reconstruction(loaded, images):
    indices = loaded.encode_indices(images)
    assert indices.shape == (2, 16, 16) and indices.dtype == torch.long
    with torch.no_grad():
        recon, _, _ = loaded(images)
    decoded = loaded.decode_indices(indices)
    torch.testing.assert_close(decoded, recon.clamp(-1, 1))
    assert decoded.abs().max() <= 1 and recon.abs().max() > 1  # clamping actually happened on this data


def test_tokenizer_interface_rejects_bad_input(loaded):
    with pytest.raises(ValueError, match="multiples of 2"):
        loaded.encode_indices(torch.zeros(1, 3, 31, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        loaded.encode_indices(torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match=r"\[0, 63\]"):
        loaded.decode_indices(torch.full((1, 4, 4), 64))
    with pytest.raises(ValueError, match="integer tensor"):
        loaded.decode_indices(torch.zeros(1, 4, 4))


def test_config_forms_are_equivalent_and_yaml_is_read(taming_files):
    wrapped = yaml.safe_load(TAMING_YAML)
    assert vqgan_kwargs(wrapped) == vqgan_kwargs(wrapped["model"]["params"]) == vqgan_kwargs(TINY_PARAMS)
    kwargs = vqgan_kwargs(TINY_PARAMS)
    assert kwargs["embed_dim"] == 16 and kwargs["n_embed"] == 64 and kwargs["ch_mult"] == [1, 2]
    from_dict = load_taming(taming_files[0], wrapped)
    from_path = load_taming(*taming_files)
    for key, value in from_path.state_dict().items():
        assert torch.equal(value, from_dict.state_dict()[key])


def test_config_errors():
    with pytest.raises(ValueError, match="GumbelVQ"):
        vqgan_kwargs({"model": {"target": "taming.models.vqgan.GumbelVQ", "params": TINY_PARAMS}})
    with pytest.raises(ValueError, match="lacks n_embed"):
        vqgan_kwargs({"embed_dim": 16, "ddconfig": TINY_DD})
    with pytest.raises(ValueError, match="double_z"):
        VQGAN.from_config({**TINY_PARAMS, "ddconfig": {**TINY_DD, "double_z": True}})
    with pytest.raises(ValueError, match="multiples of 32"):
        VQGAN.from_config({**TINY_PARAMS, "ddconfig": {**TINY_DD, "ch": 48}})
    with pytest.raises(ValueError, match="remap"):
        vqgan_kwargs({**TINY_PARAMS, "remap": "used_codes.npy"})
    with pytest.raises(ValueError, match="typo_key"):
        vqgan_kwargs({**TINY_PARAMS, "ddconfig": {**TINY_DD, "typo_key": 1}})


def test_missing_config_file(taming_files, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_taming(taming_files[0], tmp_path / "nope.yaml")


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoint errors and the weights_only policy
# ---------------------------------------------------------------------------------------------------------------------


def test_missing_and_unexpected_keys_are_listed_in_one_error(taming_state, tmp_path):
    state = dict(taming_state)
    del state["decoder.up.1.attn.0.q.weight"]
    del state["quant_conv.bias"]
    state["encoder.extra.weight"] = torch.zeros(3)
    path = tmp_path / "broken.ckpt"
    torch.save({"state_dict": state, "epoch": 0}, path)
    with pytest.raises(CheckpointMismatchError) as info:
        load_taming(path, TINY_PARAMS)
    message = str(info.value)
    assert "broken.ckpt" in message
    assert "missing (2): decoder.up.1.attn.0.q.weight, quant_conv.bias" in message
    assert "unexpected (1): encoder.extra.weight" in message
    assert "loss.discriminator" not in message and "loss.perceptual" not in message  # dropped, not reported


def test_shape_mismatch_is_reported(taming_state, tmp_path):
    state = dict(taming_state)
    state["quantize.embedding.weight"] = torch.zeros(128, 16)
    path = tmp_path / "other_codebook.ckpt"
    torch.save({"state_dict": state}, path)
    expected = (r"other_codebook\.ckpt[\s\S]*shape mismatch \(1\): "
                r"quantize\.embedding\.weight: file \(128, 16\) vs model \(64, 16\)")
    with pytest.raises(CheckpointMismatchError, match=expected):
        load_taming(path, TINY_PARAMS)


@pytest.mark.parametrize("trust", [False, True])
def test_corrupt_files_give_a_clear_error(taming_files, tmp_path, trust):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(os.urandom(300))
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(taming_files[0].read_bytes()[:5000])
    bad_safetensors = tmp_path / "bad.safetensors"
    bad_safetensors.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    for path in (garbage, truncated, bad_safetensors):
        with pytest.raises(ValueError, match=rf"{path.name} is not a readable"):
            load_taming(path, TINY_PARAMS, trust_checkpoint=trust)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        load_taming(tmp_path / "missing.ckpt", TINY_PARAMS)


def test_a_file_without_state_dict_is_refused(tmp_path):
    path = tmp_path / "optimizer_only.ckpt"
    torch.save({"optimizer_states": [], "epoch": 1}, path)
    with pytest.raises(ValueError, match="optimizer_only.ckpt holds no state_dict"):
        load_taming(path, TINY_PARAMS)


def test_pickled_objects_need_trust_checkpoint(taming_state, tmp_path):
    """Real Lightning checkpoints pickle objects (here an argparse.Namespace of hyper-parameters, as PL 1.0 did)."""
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": taming_state, "epoch": 3, "global_step": 1000, "pytorch-lightning_version": "1.0.8",
                "hparams": argparse.Namespace(lr=4.5e-6)}, path)
    with pytest.raises(ValueError, match=r"lightning\.ckpt.*weights_only=True.*argparse\.Namespace"
                                         r"[\s\S]*trust_checkpoint=True"):
        load_taming(path, TINY_PARAMS)
    model = load_taming(path, TINY_PARAMS, trust_checkpoint=True)
    assert torch.equal(model.quantize.embedding.weight, taming_state["quantize.embedding.weight"])


def test_trusted_checkpoints_load_without_the_packages_they_pickle(taming_state, tmp_path, monkeypatch):
    """DALL-E mini's checkpoint pickles omegaconf hyper-parameters and Lightning callback types; the weights load
    even where neither package is installed."""
    module = tmp_path / "fake_lightning_pkg.py"
    module.write_text("class DictConfig(dict):\n    pass\n\nclass ModelCheckpoint:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import fake_lightning_pkg

    path = tmp_path / "dalle_mini_like.ckpt"
    torch.save({"state_dict": taming_state, "hyper_parameters": fake_lightning_pkg.DictConfig(lr=4.5e-6),
                "callbacks": {fake_lightning_pkg.ModelCheckpoint: {"best_model_score": None}}}, path)
    monkeypatch.delitem(sys.modules, "fake_lightning_pkg")
    module.unlink()  # the package is gone, as omegaconf and pytorch_lightning are on a fresh Colab
    with pytest.raises(ModuleNotFoundError):
        torch.load(path, weights_only=False)
    model = load_taming(path, TINY_PARAMS, trust_checkpoint=True)
    assert torch.equal(model.quantize.embedding.weight, taming_state["quantize.embedding.weight"])


def test_safetensors_checkpoint_is_accepted(taming_state, tmp_path, images, loaded):
    path = tmp_path / "vqgan.safetensors"
    safetensors.torch.save_file(taming_state, path)  # loss.* included, as a naive export would have them
    model = load_taming(path, TINY_PARAMS)
    assert torch.equal(model.encode_indices(images), loaded.encode_indices(images))


def test_plain_state_dict_and_half_precision_are_accepted(taming_state, tmp_path, images, loaded):
    path = tmp_path / "plain.pt"
    torch.save({key: value.half() for key, value in taming_state.items()}, path)
    model = load_taming(path, TINY_PARAMS)
    assert model.quant_conv.weight.dtype == torch.float32
    torch.testing.assert_close(model.quant_conv.weight, taming_state["quant_conv.weight"].half().float())


# ---------------------------------------------------------------------------------------------------------------------
# Conversion to a facegen folder
# ---------------------------------------------------------------------------------------------------------------------


def test_convert_to_safetensors_round_trip(taming_files, loaded, images, tmp_path):
    out = convert_to_safetensors(*taming_files, tmp_path / "vqgan")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vqgan"]  # no staging folder left behind
    assert {"config.json", "model.safetensors"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "config.json").read_text())
    assert config["n_embed"] == 64 and config["ch_mult"] == [1, 2] and config["legacy"] is True
    stored = safetensors.torch.load_file(out / "model.safetensors")
    assert set(stored) == set(loaded.state_dict())
    reloaded = load_vqgan(out)
    assert not reloaded.training
    for key, value in loaded.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key
    assert torch.equal(reloaded.encode_indices(images), loaded.encode_indices(images))
    # the same folder also loads through the Hub mixin, strictly
    via_hub = VQGAN.from_pretrained(out, strict=True)
    assert torch.equal(via_hub.quantize.embedding.weight, loaded.quantize.embedding.weight)
    # the folder can be read back as a checkpoint too (a .safetensors with taming's keys)
    again = load_taming(out / "model.safetensors", TINY_PARAMS)
    assert torch.equal(again.encode_indices(images), loaded.encode_indices(images))


def test_load_vqgan_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a VQGAN folder"):
        load_vqgan(tmp_path)
    (tmp_path / "config.json").write_text('{"n_embed": 64, "colour": "blue"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="config.json is not a VQGAN config"):
        load_vqgan(tmp_path)
