"""Finite scalar quantization (facegen/fsq.py) on its own, against the reference implementation, and inside the
VQ-VAE (a quantizer choice of the profile: `vqvae.quantizer = "fsq"`)."""

import json
import math
from dataclasses import asdict

import pytest
import torch
from vector_quantize_pytorch import FSQ as ReferenceFSQ

from facegen.config import FSQVAEConfig, VQVAEConfig, get_profile
from facegen.fsq import FSQ
from facegen.quantize import VectorQuantizer
from facegen.vqvae import VQVAE
from helpers import square_images

LEVELS = [(8, 8, 8), (8, 5, 5, 5), (7, 5, 5, 5, 5), (3, 4, 16)]  # the paper's 512, 1000, 4375 codes; odd + even


def codes_reaching(fsq: FSQ, q: torch.Tensor) -> torch.Tensor:
    """Inputs z (..., d) whose bounded value is exactly the integer level q: bound(z) = q solved for z."""
    half_l = (fsq.levels - 1) * (1 + fsq.eps) / 2
    offset = torch.where(fsq.levels % 2 == 0, 0.5, 0.0)
    return torch.atanh((q + offset) / half_l) - torch.atanh(offset / half_l)


def fsq_vqvae(levels=(8, 8, 8), seed: int = 0) -> VQVAE:
    torch.manual_seed(seed)
    return VQVAE(codebook_size=math.prod(levels), hidden=16, n_res_blocks=1, quantizer="fsq", fsq_levels=levels)


# ------------------------------------------------------------------------------------------ against the reference


@pytest.mark.parametrize("levels", LEVELS)
def test_same_codes_and_indices_as_vector_quantize_pytorch(levels):
    """Same levels, same inputs: the same quantized values and the same indices, bit for bit (both number the grid
    with the first channel as the least significant digit, so no re-ordering is needed)."""
    torch.manual_seed(0)
    ours, reference = FSQ(levels), ReferenceFSQ(list(levels))
    z = torch.randn(3, len(levels), 9, 11) * 2  # channels first, as the encoder gives them; wide enough to saturate
    out = ours(z)
    ref_quantized, ref_indices = reference(z)
    assert torch.equal(out.quantized, ref_quantized)
    assert torch.equal(out.indices, ref_indices.long()) and out.indices.shape == (3, 9, 11)
    assert torch.equal(ours.codebook, reference.implicit_codebook)  # the whole grid, in index order
    assert ours.codebook_size == reference.codebook_size == math.prod(levels)
    flat = z[:, :, 0, 0]  # (N, d) vectors, as the 2-D toy of notebook 01 gives them
    assert torch.equal(ours(flat).indices, reference(flat[:, None])[1][:, 0].long())
    assert torch.equal(ours.lookup(out.indices), reference.indices_to_codes(ref_indices).permute(0, 2, 3, 1))


def test_the_papers_listing_differs_only_next_to_rounding_boundaries():
    """Appendix A.1 of the paper writes half_l with (1 - eps) and the shift with tan; facegen (like the reference)
    uses (1 + eps) and atanh. Both give each channel exactly L values; their ranges differ by 0.2%, so they disagree
    (by one level) only where the bounded value lies within ~0.006 of a rounding boundary."""
    levels = (8, 5, 5, 5)
    ours = FSQ(levels)
    lv = torch.tensor(levels)

    def paper_quantize(z):
        eps = 1e-3
        half_l = (lv - 1) * (1 - eps) / 2
        offset = torch.where(lv % 2 == 1, 0.0, 0.5)
        shift = torch.tan(offset / half_l)
        return (torch.tanh(z + shift) * half_l - offset).round() / (lv // 2)

    z = torch.randn(200_000, 4, generator=torch.Generator().manual_seed(0)) * 2
    theirs, mine = paper_quantize(z), ours.quantize(z)
    differ = theirs != mine
    assert 0 < differ.float().mean() < 4e-3  # measured: 0.19% of the channel values of these inputs
    bounded = ours.bound(z)[differ]
    assert (bounded - (bounded.floor() + 0.5)).abs().max() < 0.01  # all next to a boundary
    assert torch.allclose((theirs - mine)[differ].abs(), (1 / (lv // 2)).expand_as(z)[differ])  # one level apart
    for channel, n in enumerate(levels):
        assert theirs[:, channel].unique().numel() == mine[:, channel].unique().numel() == n


# ----------------------------------------------------------------------------------------------- by hand


def test_a_tiny_example_by_hand():
    """levels (3, 4): 12 codes.
    L = 3: half_l = 2 x 1.001 / 2 = 1.001, no offset, no shift: bound = 1.001 tanh(z); codes q / 1 in {-1, 0, 1}.
    L = 4: half_l = 3 x 1.001 / 2 = 1.5015, offset 0.5, shift = atanh(0.5 / 1.5015) = 0.34620:
           bound = 1.5015 tanh(z + 0.34620) - 0.5; codes q / 2 in {-1, -0.5, 0, 0.5}.
    index = k1 + 3 k2 with digits k1 = q1 + 1, k2 = q2 + 2."""
    fsq = FSQ((3, 4))
    z = torch.tensor([[0.0, 0.0],  # bound (0, 0): q (0, 0), digits (1, 2), index 1 + 3 x 2 = 7
                      [10.0, 10.0],  # bound (1.001, 1.0015): q (1, 1), codes (1, 0.5), digits (2, 3), index 11
                      [-10.0, -10.0],  # bound (-1.001, -2.0015): q (-1, -2), codes (-1, -1), index 0
                      [0.5, -0.5],  # bound (0.46258, -0.72913): q (0, -1), codes (0, -0.5), digits (1, 1), index 4
                      [0.6, 0.3]])  # bound (0.53759, 0.35451): q (1, 0), codes (1, 0), digits (2, 2), index 8
    torch.testing.assert_close(fsq.bound(z), torch.tensor([[0.0, 0.0], [1.001, 1.0015], [-1.001, -2.0015],
                                                            [0.46258, -0.72913], [0.53759, 0.35451]]),
                               atol=1e-5, rtol=0)
    out = fsq(z)
    assert out.quantized.tolist() == [[0, 0], [1, 0.5], [-1, -1], [0, -0.5], [1, 0]]
    assert out.indices.tolist() == [7, 11, 0, 4, 8]
    assert fsq.codebook_size == 12 and fsq.dim == 2
    assert fsq.lookup(torch.tensor([7, 11, 0, 4, 8])).tolist() == out.quantized.tolist()
    # The L = 3 channel switches from 0 to 1 where 1.001 tanh(z) = 0.5, i.e. z = atanh(0.5 / 1.001) = 0.54864
    edge = torch.tensor([[0.5486, 0.0], [0.5487, 0.0]])
    assert fsq(edge).quantized[:, 0].tolist() == [0, 1]


def test_losses_are_zero_fp32_scalars_on_the_inputs_device():
    out = FSQ((8, 8, 8))(torch.randn(2, 3, 4, 4, dtype=torch.float64))
    for loss in (out.loss, out.codebook_loss, out.commitment_loss):
        assert loss.shape == () and float(loss) == 0.0 and loss.device == torch.device("cpu")
    out = FSQ((8, 8, 8))(torch.randn(2, 3, 4, 4, dtype=torch.bfloat16))
    assert out.loss.dtype == out.quantized.dtype == torch.float32  # bf16 in, computed in fp32
    assert out.perplexity.dtype == torch.float32 and 1 <= float(out.perplexity) <= 32


# -------------------------------------------------------------------------------------------- the grid


@pytest.mark.parametrize("levels", LEVELS)
def test_indices_to_codes_round_trip_and_every_code_is_reachable(levels):
    fsq = FSQ(levels)
    every = torch.arange(fsq.codebook_size)
    assert torch.equal(fsq.codes_to_indices(fsq.lookup(every)), every)
    assert fsq.codebook.shape == (math.prod(levels), len(levels))
    assert fsq.codebook.unique(dim=0).shape[0] == fsq.codebook_size  # K distinct codes
    assert fsq.codebook.min() == -1 and fsq.codebook.max() <= 1
    # Reachable through the forward pass: the input that bounds exactly onto each code's levels gives that code.
    q = fsq.lookup(every) * (fsq.levels // 2)  # integer levels of every code
    z = codes_reaching(fsq, q)
    assert torch.isfinite(z).all()
    assert torch.equal(fsq.encode(z), every) and torch.equal(fsq(z).indices, every)


def test_encode_decode_agree_with_forward():
    torch.manual_seed(0)
    fsq = FSQ((8, 5, 5, 5))
    z = torch.randn(2, 4, 6, 6) * 3
    out = fsq(z)
    assert torch.equal(fsq.encode(z), out.indices) and out.indices.dtype == torch.long
    assert torch.equal(fsq.decode(out.indices), out.quantized)  # channels first, like VectorQuantizer.decode
    assert torch.equal(fsq.decode(out.indices.flatten()), out.quantized.permute(0, 2, 3, 1).reshape(-1, 4))
    with pytest.raises(ValueError, match=r"z must be \(B, 4, H, W\) or \(N, 4\)"):
        fsq(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="indices must be"):
        fsq.decode(torch.zeros(2, 4, dtype=torch.long))


@pytest.mark.parametrize("bad", [(), (8, 2, 8), (8, 1.5), (True, 8)])
def test_bad_levels_get_one_clear_error(bad):
    with pytest.raises(ValueError, match="levels must be a non-empty sequence of integers >= 3"):
        FSQ(bad)


# ----------------------------------------------------------------------------------------- the gradient


def test_straight_through_gradient_is_the_derivative_of_the_bound():
    """d quantize / dz = d/dz [bound(z) / (L // 2)] = half_l (1 - tanh^2(z + shift)) / (L // 2): rounding passes the
    gradient through unchanged, the tanh squashes it."""
    levels = (8, 5, 3)
    fsq = FSQ(levels)
    z = (torch.randn(2, 3, 4, 4) * 2).requires_grad_()
    fsq(z).quantized.sum().backward()
    lv = torch.tensor(levels, dtype=torch.float32)
    half_l = (lv - 1) * 1.001 / 2
    shift = torch.atanh(torch.tensor([0.5, 0.0, 0.0]) / half_l)
    zc = z.detach().permute(0, 2, 3, 1)
    expected = half_l * (1 - torch.tanh(zc + shift) ** 2) / (lv // 2)
    torch.testing.assert_close(z.grad.permute(0, 2, 3, 1), expected)
    assert (z.grad > 0).all()  # never zero: the encoder always gets a signal, unlike a hard clamp


# ---------------------------------------------------------------------------------------- mixed precision


def test_bf16_autocast_on_cpu_keeps_fp32_outputs_and_the_same_codes():
    """Under autocast the encoder hands over bf16; the bound and the rounding must run in fp32, else values near a
    rounding boundary land on the wrong side (bf16 keeps 8 bits of mantissa)."""
    torch.manual_seed(0)
    fsq = FSQ((8, 8, 8))
    z = (torch.randn(4, 3, 8, 8) * 2).to(torch.bfloat16)  # what an encoder under autocast gives
    expected = fsq(z.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fsq(z)
        indices = fsq.encode(z)
    assert out.quantized.dtype == torch.float32 and out.loss.dtype == torch.float32
    assert torch.equal(out.quantized, expected.quantized) and torch.equal(out.indices, expected.indices)
    assert torch.equal(indices, expected.indices)


def test_fsq_vqvae_step_under_bf16_autocast():
    from facegen.data.transforms import from_uint8
    from facegen.vqvae_training import vqvae_step

    model = fsq_vqvae().train()
    x = from_uint8(square_images(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = vqvae_step(model, x)
    assert terms["loss"].dtype == torch.float32 and torch.isfinite(terms["loss"])
    assert float(terms["vq"]) == 0.0 and torch.equal(terms["loss"], terms["recon"])
    terms["loss"].backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.encoder.parameters())


def test_fsq_stays_on_the_inputs_device():
    from fake_cuda import fake_cuda

    fsq = FSQ((8, 5, 5, 5))
    z = torch.randn(2, 4, 3, 3)
    expected = fsq(z)
    with fake_cuda() as cuda:
        fsq.to("cuda")
        zc = cuda.put(z.clone().requires_grad_())
        out = fsq(zc)
        out.quantized.sum().backward()  # the straight-through backward mixes no CPU tensor in either
        assert cuda.on_device([out.quantized, out.indices, out.loss, out.perplexity, fsq.codebook])
        indices = fsq.encode(zc)
        assert cuda.on_device([indices, fsq.decode(indices), fsq.lookup(indices.flatten())])
        assert torch.equal(cuda.real(indices), expected.indices)


# --------------------------------------------------------------------------------------------- in the VQ-VAE


def test_the_default_is_still_the_vector_quantizer():
    assert VQVAEConfig().quantizer == "vq" and get_profile("cpu").vqvae.quantizer == "vq"
    torch.manual_seed(0)
    model = VQVAE(codebook_size=16, embed_dim=8, hidden=16, n_res_blocks=1)
    assert isinstance(model.quantizer, VectorQuantizer)
    assert model.encoder.net[-1].out_channels == 8


def test_fsq_vqvae_tokenizes_and_decodes_like_the_vq_one():
    model = fsq_vqvae().eval()
    assert isinstance(model.quantizer, FSQ) and model.codebook_size == 512
    assert model.encoder.net[-1].out_channels == 3 and model.decoder.net[0].in_channels == 3  # one per level
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    indices = model.encode_indices(x)
    assert indices.shape == (2, 16, 16) and indices.dtype == torch.long
    assert 0 <= indices.min() and indices.max() < 512
    with torch.no_grad():
        recon, vq = model(x)
    assert torch.equal(vq.indices, indices)
    torch.testing.assert_close(model.decode_indices(indices), recon.clamp(-1, 1))
    with pytest.raises(ValueError, match=r"\[0, 511\]"):
        model.decode_indices(torch.full((1, 4, 4), 512))


def test_fsq_vqvae_saves_and_loads_with_its_levels(tmp_path):
    from facegen.vqvae_training import load_vqvae

    model = fsq_vqvae((8, 5, 5, 5)).eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["quantizer"] == "fsq" and config["fsq_levels"] == [8, 5, 5, 5] and config["codebook_size"] == 1000
    loaded = load_vqvae(tmp_path)
    assert isinstance(loaded.quantizer, FSQ) and loaded.quantizer.levels.tolist() == [8, 5, 5, 5]
    indices = torch.randint(0, 1000, (1, 4, 4))
    assert torch.equal(loaded.decode_indices(indices), model.decode_indices(indices))
    assert loaded.state_dict().keys() == model.state_dict().keys() and "quantizer.levels" in model.state_dict()
    # Another grid with the same number of codes and channels would load silently without the saved levels' check.
    (tmp_path / "config.json").write_text(json.dumps({**config, "fsq_levels": [5, 8, 5, 5]}))
    with pytest.raises(ValueError, match=r"(?s)does not match.*FSQ levels differ.*\(8, 5, 5, 5\).*\(5, 8, 5, 5\)"):
        load_vqvae(tmp_path)


def test_a_vq_model_saved_before_fsq_existed_loads_as_vq(tmp_path):
    from facegen.vqvae_training import load_vqvae

    torch.manual_seed(0)
    model = VQVAE(codebook_size=16, embed_dim=8, hidden=16, n_res_blocks=1)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["quantizer"] == "vq"
    old = {k: v for k, v in config.items() if k not in ("quantizer", "fsq_levels")}
    (tmp_path / "config.json").write_text(json.dumps(old))
    loaded = load_vqvae(tmp_path)
    assert isinstance(loaded.quantizer, VectorQuantizer)
    assert torch.equal(loaded.quantizer.codebook, model.quantizer.codebook)


def test_tokens_of_different_grids_have_different_fingerprints():
    from facegen.tokenize_dataset import vqvae_fingerprint

    a, b = fsq_vqvae((8, 8, 8)), fsq_vqvae((4, 8, 16))  # same seed, same shapes: only the levels differ
    assert vqvae_fingerprint(a) != vqvae_fingerprint(b)


def test_the_profile_chooses_the_quantizer():
    profile = get_profile("ci").replace(vqvae={"quantizer": "fsq", "steps": 7})
    assert isinstance(profile.vqvae, FSQVAEConfig) and profile.vqvae.quantizer == "fsq"
    assert profile.vqvae.hidden == get_profile("ci").vqvae.hidden and profile.vqvae.steps == 7  # the rest is kept
    model = VQVAE.from_profile(profile)
    assert isinstance(model.quantizer, FSQ) and model.quantizer.levels.tolist() == [8, 8, 8]
    assert model.codebook_size == 512 == profile.vqvae.codebook_size
    assert profile.replace(vqvae={"lr": 1e-3}).vqvae.quantizer == "fsq"  # other changes keep the quantizer
    back = profile.replace(vqvae={"quantizer": "vq"}).vqvae
    assert type(back) is VQVAEConfig and back == get_profile("ci").replace(vqvae={"steps": 7}).vqvae
    with pytest.raises(ValueError, match=r"make 1000 codes but vqvae.codebook_size is 512"):
        get_profile("ci").replace(vqvae={"quantizer": "fsq", "fsq_levels": (8, 5, 5, 5)})
    assert get_profile("ci").replace(vqvae={"quantizer": "fsq", "fsq_levels": (8, 5, 5, 5),
                                            "codebook_size": 1000}).vqvae.codebook_size == 1000
    with pytest.raises(ValueError, match="vqvae.quantizer must be one of 'vq', 'fsq', 'l2', got 'lfq'"):
        get_profile("ci").replace(vqvae={"quantizer": "lfq"})
    with pytest.raises(ValueError, match="pass codebook_size=1000"):
        VQVAE(quantizer="fsq", fsq_levels=(8, 5, 5, 5))
    with pytest.raises(ValueError, match="quantizer must be one of vq, fsq, l2"):
        VQVAE(quantizer="FSQ")


def test_a_vq_run_records_the_settings_it_always_recorded_and_an_fsq_run_cannot_resume_it(tmp_path):
    """`quantizer` is a class attribute, not a field: the settings of a VQ checkpoint (asdict of the config) are
    exactly those of checkpoints written before FSQ existed, so they still resume; an FSQ run records its levels,
    so it refuses to continue a VQ run's checkpoint (and the other way round)."""
    from facegen.train.engine import SettingsChanged
    from facegen.vqvae_training import train_vqvae

    assert list(asdict(get_profile("cpu").vqvae)) == [
        "codebook_size", "embed_dim", "hidden", "n_res_blocks", "beta", "ema", "ema_decay", "restart_after", "steps",
        "batch_size", "lr", "val_every", "seed"]
    assert asdict(get_profile("cpu").replace(vqvae={"quantizer": "fsq"}).vqvae)["fsq_levels"] == (8, 8, 8)
    vq = get_profile("ci").replace(vqvae={"codebook_size": 16, "embed_dim": 8, "hidden": 16, "n_res_blocks": 1,
                                          "batch_size": 4, "steps": 4, "val_every": 2})
    train_vqvae(vq, square_images(8), square_images(2, seed=1), folder=tmp_path, stop_after=2, progress=False)
    fsq = vq.replace(vqvae={"quantizer": "fsq", "fsq_levels": (4, 4), "codebook_size": 16})
    with pytest.raises(SettingsChanged, match="fsq_levels"):
        train_vqvae(fsq, square_images(8), square_images(2, seed=1), folder=tmp_path, progress=False)


def test_fsq_vqvae_trains_resumes_and_is_measured_like_the_vq_one(tmp_path):
    from facegen import metrics
    from facegen.data.transforms import from_uint8
    from facegen.tokenize_dataset import tokenize_split
    from facegen.vqvae_training import load_vqvae, train_vqvae

    tiny = get_profile("ci").replace(vqvae={"quantizer": "fsq", "hidden": 16, "n_res_blocks": 1, "batch_size": 4,
                                            "val_every": 3, "steps": 6, "lr": 3e-3})
    train, val = square_images(16), square_images(4, seed=1)
    whole = train_vqvae(tiny, train, val, folder=tmp_path / "whole", progress=False)
    assert all(row["vq"] == 0.0 for row in whole.history) and whole.validation[-1]["usage"] > 0
    train_vqvae(tiny, train, val, folder=tmp_path / "split", stop_after=3, progress=False)
    resumed = train_vqvae(tiny, train, val, folder=tmp_path / "split", progress=False)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    loaded = load_vqvae(tmp_path / "split")
    assert isinstance(loaded.quantizer, FSQ)
    for key, value in whole.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    scores = metrics.reconstruction_metrics(loaded, val, loaded.codebook_size)
    assert scores["psnr"] == pytest.approx(whole.validation[-1]["psnr"], abs=1e-4)
    codes = tokenize_split(loaded, val, progress=False)
    assert codes.shape == (4, 4, 4) and codes.dtype == torch.int16
    assert torch.equal(codes.long(), loaded.encode_indices(from_uint8(val)))
