"""Issue 16's two levers, both off by default: l2-normalised low-dimensional codes (`L2VectorQuantizer`,
`vqvae.quantizer = "l2"`) and a perceptual term in the VQ-VAE's loss (`train_vqvae_perceptual`)."""

import math
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F

from facegen.config import L2VQVAEConfig, VQVAEConfig, get_profile
from facegen.quantize import L2VectorQuantizer, VectorQuantizer, nearest_codes
from facegen.vqvae import VQVAE
from helpers import square_images


def hand_quantizer(**kwargs) -> L2VectorQuantizer:
    vq = L2VectorQuantizer(3, 2, beta=0.25, kmeans_init=False, **kwargs)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, -1.0]]))
    return vq


def test_hand_example_picks_by_angle_not_by_distance():
    """z = (1, 1.2) is nearer (2, 0) than (0, 3) in plain Euclidean distance (2.44 against 4.24), but its angle is
    nearer (0, 3)'s: cos = 1/sqrt(2.44) = 0.640 against 1.2/sqrt(2.44) = 0.768. The l2 quantizer picks code 1 and
    gives the unit code (0, 1); commitment = beta * mean((z/|z| - (0, 1))^2)."""
    z = torch.tensor([[1.0, 1.2]])
    assert int(nearest_codes(z, hand_quantizer().codebook.detach())) == 0  # the plain VQ's choice
    vq = hand_quantizer().eval()
    out = vq(z)
    assert out.indices.tolist() == [1]
    assert torch.allclose(out.quantized, torch.tensor([[0.0, 1.0]]))
    unit = z / math.sqrt(2.44)
    expected = 0.25 * ((unit[0, 0] ** 2 + (unit[0, 1] - 1) ** 2) / 2)
    assert float(out.commitment_loss) == pytest.approx(float(expected), rel=1e-6)
    assert float(out.codebook_loss.detach()) == pytest.approx(float(((unit - torch.tensor([0.0, 1.0])) ** 2).mean()), rel=1e-6)
    assert vq.encode(z).tolist() == [1] and torch.allclose(vq.decode(torch.tensor([1])), torch.tensor([[0.0, 1.0]]))
    assert torch.allclose(vq.decode(torch.tensor([2])), torch.tensor([[-1.0, -1.0]]) / math.sqrt(2))


def test_nearest_by_cosine_is_nearest_by_distance_after_normalisation():
    torch.manual_seed(0)
    x, codes = torch.randn(500, 8) * 3, torch.randn(64, 8) * torch.rand(64, 1) * 5
    by_cosine = (F.normalize(x, dim=1) @ F.normalize(codes, dim=1).t()).argmax(dim=1)
    by_distance = torch.cdist(F.normalize(x, dim=1), F.normalize(codes, dim=1)).argmin(dim=1)
    assert torch.equal(by_cosine, by_distance)
    vq = L2VectorQuantizer(64, 8, kmeans_init=False)
    with torch.no_grad():
        vq.codebook.copy_(codes)
    assert torch.equal(vq.encode(x), by_cosine)
    assert torch.equal(vq.eval()(x).indices, by_cosine)


def test_straight_through_gradient_passes_the_normalisation():
    """Forward: the unit code; backward: the identity to the normalised vector, then the normalisation's Jacobian
    (I - u u^T)/|z|, so the gradient to z is orthogonal to z."""
    z = torch.tensor([[1.0, 1.2]], requires_grad=True)
    out = hand_quantizer().eval()(z)
    out.quantized.sum().backward()
    u = z.detach() / z.detach().norm()
    jac = (torch.eye(2) - u.t() @ u) / z.detach().norm()
    assert torch.allclose(z.grad, torch.ones(1, 2) @ jac, atol=1e-6)
    assert abs(float((z.grad * z.detach()).sum())) < 1e-6


@pytest.mark.parametrize("ema", [True, False])
def test_codebook_stays_on_the_sphere_through_kmeans_ema_and_restarts(ema):
    torch.manual_seed(0)
    vq = L2VectorQuantizer(16, 4, ema=ema, restart_after=2).train()
    opt = None if ema else torch.optim.SGD([vq.codebook], lr=0.5)
    z = torch.randn(2, 4, 5, 5) * 7
    one_way = torch.tensor([1.0, 0.0, 0.0, 0.0]).view(1, 4, 1, 1)
    for step in range(6):  # k-means on the first batch, then vectors that all point one way: other codes die
        out = vq(z if step == 0 else one_way + 0.3 * torch.randn_like(z))
        if opt:
            out.loss.backward()
            opt.step()
            opt.zero_grad()
            with torch.no_grad():
                vq.codebook.mul_(torch.rand(16, 1) + 0.5)  # as if a larger step had left the sphere
            assert torch.allclose(vq.lookup(torch.arange(16)).norm(dim=1), torch.ones(16))  # lookup does not
        else:
            assert torch.allclose(vq.codebook.norm(dim=1), torch.ones(16), atol=1e-5)
    vq(z)
    assert torch.allclose(vq.codebook.norm(dim=1), torch.ones(16), atol=1e-5)  # the next forward projects it back
    assert bool(vq.initialized) and int(vq.restarts) > 0
    if ema:
        flat = F.normalize(z.permute(0, 2, 3, 1).reshape(-1, 4) + 0.5, dim=1)
        before = vq.codebook.clone()
        vq.steps_unused[:3] = 5
        assert vq.restart_dead_codes(flat) >= 3
        changed = ~(vq.codebook == before).all(dim=1)
        for row in vq.codebook[changed]:  # re-seeded codes sit on a current (unit) encoder vector
            assert (flat - row).norm(dim=1).min() < 1e-5


def test_bf16_autocast_on_cpu_keeps_fp32_statistics():
    torch.manual_seed(0)
    model = VQVAE(codebook_size=16, hidden=16, n_res_blocks=1, quantizer="l2", l2_dim=4).train()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = model.encoder(x)
        out = model.quantizer(z)
    assert z.dtype == torch.bfloat16
    assert out.quantized.dtype == torch.float32 and out.loss.dtype == torch.float32
    q = model.quantizer
    assert q.codebook.dtype == q.ema_cluster_size.dtype == q.ema_embed_sum.dtype == torch.float32
    assert torch.allclose(q.codebook.norm(dim=1), torch.ones(16), atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        indices = model.encode_indices(x)
    assert torch.equal(indices, q.encode(model.encoder(x).float()))


def test_config_switch_keeps_the_vq_settings_and_builds_the_l2_model(tmp_path):
    cpu = get_profile("cpu")
    assert type(cpu.vqvae) is VQVAEConfig and "l2_dim" not in asdict(cpu.vqvae)
    assert type(VQVAE.from_profile(cpu).quantizer) is VectorQuantizer
    l2 = cpu.replace(vqvae={"quantizer": "l2"})
    assert isinstance(l2.vqvae, L2VQVAEConfig) and l2.vqvae.l2_dim == 8 and l2.vqvae.quantizer == "l2"
    assert {k: v for k, v in asdict(l2.vqvae).items() if k != "l2_dim"} == asdict(cpu.vqvae)
    assert type(l2.replace(vqvae={"quantizer": "vq"}).vqvae) is VQVAEConfig
    model = VQVAE.from_profile(l2)
    assert isinstance(model.quantizer, L2VectorQuantizer) and model.quantizer.codebook.shape == (512, 8)
    assert model.encoder.net[-1].out_channels == 8 and model.decoder.net[0].in_channels == 8
    model.save_pretrained(tmp_path)
    loaded = VQVAE.from_pretrained(tmp_path)
    assert isinstance(loaded.quantizer, L2VectorQuantizer)


def test_l2_vqvae_trains_resumes_and_loads(tmp_path):
    from facegen.vqvae_training import load_vqvae, train_vqvae

    tiny = get_profile("ci").replace(vqvae={"quantizer": "l2", "l2_dim": 4, "codebook_size": 16, "hidden": 16,
                                            "n_res_blocks": 1, "batch_size": 4, "val_every": 3, "steps": 6})
    train, val = square_images(16), square_images(4, seed=1)
    whole = train_vqvae(tiny, train, val, folder=tmp_path / "whole", progress=False)
    train_vqvae(tiny, train, val, folder=tmp_path / "split", stop_after=3, progress=False)
    resumed = train_vqvae(tiny, train, val, folder=tmp_path / "split", progress=False)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    loaded = load_vqvae(tmp_path / "split")
    assert isinstance(loaded.quantizer, L2VectorQuantizer)
    assert torch.allclose(loaded.quantizer.codebook.norm(dim=1), torch.ones(16), atol=1e-5)
    for key, value in whole.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


class ConstantDistance(torch.nn.Module):
    name = "test distance"

    def forward(self, reconstructions, targets):
        return (reconstructions - targets).abs().mean(dim=(1, 2, 3)) + 1.0


def test_perceptual_step_adds_the_weighted_distance():
    from facegen.vqvae_training import perceptual_vqvae_step, vqvae_step

    torch.manual_seed(0)
    model = VQVAE(codebook_size=16, embed_dim=4, hidden=16, n_res_blocks=1).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    plain = vqvae_step(model, x)
    terms = perceptual_vqvae_step(model, x, ConstantDistance(), 0.3)
    recon = model(x)[0]
    distance = (recon - x).abs().mean(dim=(1, 2, 3)).mean() + 1.0
    assert float(terms["perceptual"].detach()) == pytest.approx(float(distance.detach()), rel=1e-6)
    assert float(terms["loss"].detach()) == pytest.approx(float((plain["loss"] + 0.3 * distance).detach()), rel=1e-6)
    assert float(terms["recon"].detach()) == pytest.approx(float(plain["recon"].detach()), rel=1e-6)
    terms["perceptual"].backward()
    assert model.encoder.net[0].weight.grad.abs().sum() > 0  # the distance reaches the encoder (straight through)


def test_perceptual_training_records_its_weight_and_uses_a_frozen_classifier(tmp_path):
    from facegen.classifier import AttributeClassifier
    from facegen.train.engine import SettingsChanged
    from facegen.vqvae_training import train_vqvae_perceptual

    torch.manual_seed(0)
    classifier = AttributeClassifier(width=4)
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    tiny = get_profile("ci").replace(vqvae={"codebook_size": 16, "embed_dim": 4, "hidden": 16, "n_res_blocks": 1,
                                            "batch_size": 4, "steps": 4, "val_every": 2})
    train, val = square_images(8), square_images(2, seed=1)
    run = train_vqvae_perceptual(tiny, train, val, folder=tmp_path, weight=0.1, classifier=classifier,
                                 progress=False)
    assert len(run.history) == 4 and all(row["perceptual"] > 0 for row in run.history)
    assert all(row["loss"] == pytest.approx(row["recon"] + row["vq"] + 0.1 * row["perceptual"], rel=1e-5)
               for row in run.history)
    for key, value in classifier.state_dict().items():  # frozen: no weight, no BatchNorm statistic moved
        assert torch.equal(value, before[key]), key
    with pytest.raises(SettingsChanged, match="perceptual_weight"):
        train_vqvae_perceptual(tiny, train, val, folder=tmp_path, steps=6, weight=0.5, classifier=classifier,
                               progress=False)
    with pytest.raises(ValueError, match="folder"):
        train_vqvae_perceptual(tiny, train, val, classifier=classifier, progress=False)
