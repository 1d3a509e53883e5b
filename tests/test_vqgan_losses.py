"""Tests of facegen.vqgan_losses: values by hand, the adaptive weight against a manual autograd computation, the
PatchGAN's shape and receptive field, and the frozen perceptual network."""

import pytest
import torch
import torch.nn.functional as F

from facegen.classifier import AttributeClassifier
from facegen.vqgan import VQGAN
from facegen.vqgan_losses import (
    ClassifierPerceptualLoss,
    ColourBlurredInput,
    NLayerDiscriminator,
    adaptive_weight,
    generator_adversarial_loss,
    generator_loss,
    hinge_d_loss,
    lpips_available,
    make_perceptual_loss,
    r1_penalty,
    receptive_field,
)


def test_hinge_d_loss_by_hand():
    real = torch.tensor([2.0, 0.5, -1.0])  # relu(1 - x): 0, 0.5, 2     -> mean 2.5 / 3
    fake = torch.tensor([-2.0, 0.0, 1.5, 3.0])  # relu(1 + x): 0, 1, 2.5, 4 -> mean 7.5 / 4
    expected = 0.5 * (2.5 / 3 + 7.5 / 4)
    assert hinge_d_loss(real, fake).item() == pytest.approx(expected)
    # Beyond the margins a patch costs nothing.
    assert hinge_d_loss(torch.full((5,), 1.0), torch.full((5,), -1.0)).item() == 0.0


def test_generator_adversarial_loss_is_minus_the_mean_logit():
    assert generator_adversarial_loss(torch.tensor([[1.0, -3.0], [2.0, 4.0]])).item() == pytest.approx(-1.0)


def test_adaptive_weight_matches_a_manual_autograd_computation():
    torch.manual_seed(0)
    last = torch.randn(4, 3, requires_grad=True)
    x = torch.randn(5, 4)
    out = x @ last
    nll = (out - 1).abs().mean()
    g_loss = -(out.tanh() * 7).mean()
    weight = adaptive_weight(nll, g_loss, last, disc_weight=0.8)
    # By hand: d|out - 1|/dW = x^T sign(out - 1) / numel; d(-7 mean tanh(out))/dW = x^T (-7 (1 - tanh^2)) / numel.
    with torch.no_grad():
        grad_nll = x.T @ torch.sign(out - 1) / out.numel()
        grad_g = x.T @ (-7 * (1 - out.tanh() ** 2)) / out.numel()
        expected = grad_nll.norm() / (grad_g.norm() + 1e-4) * 0.8
    assert weight.item() == pytest.approx(expected.item(), rel=1e-5)
    assert not weight.requires_grad
    (nll + weight * g_loss).backward()  # the graphs were retained for the real backward pass
    assert last.grad is not None


def test_adaptive_weight_is_clamped():
    last = torch.ones(3, requires_grad=True)
    nll = (last * 1e6).sum()
    g_loss = (last * 1e-3).sum()  # ratio 1e6 / (1.7e-3 + 1e-4) ~ 6e8, far above the clamp
    assert adaptive_weight(nll, g_loss, last, disc_weight=2.0).item() == pytest.approx(2e4)
    g_zero = (last * 0).sum()
    assert adaptive_weight((last * 0).sum(), g_zero, last).item() == 0.0


def test_discriminator_shape_init_and_taming_names():
    torch.manual_seed(0)
    d = NLayerDiscriminator(ndf=64, n_layers=3)
    assert d(torch.randn(2, 3, 128, 128)).shape == (2, 1, 14, 14)  # 128 -> 64 -> 32 -> 16 -> 15 -> 14
    shapes = {key: tuple(t.shape) for key, t in d.state_dict().items()}
    # taming's checkpoints hold these under `loss.discriminator.`
    assert shapes["main.0.weight"] == (64, 3, 4, 4) and shapes["main.2.weight"] == (128, 64, 4, 4)
    assert shapes["main.11.weight"] == (1, 512, 4, 4)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    weights = torch.cat([c.weight.flatten() for c in convs])
    assert weights.mean().abs() < 2e-3 and weights.std().item() == pytest.approx(0.02, rel=0.05)
    assert all(c.bias is None for c in convs[1:-1])  # BatchNorm follows them
    leaky = [m for m in d.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert len(leaky) == 4 and all(m.negative_slope == 0.2 for m in leaky)


@pytest.mark.parametrize("n_layers", [2, 3])
def test_receptive_field_matches_the_gradient_support(n_layers):
    torch.manual_seed(0)
    d = NLayerDiscriminator(ndf=8, n_layers=n_layers).eval()  # eval: BatchNorm must not mix positions
    x = torch.randn(1, 3, 160, 160, requires_grad=True)
    out = d(x)
    centre = out.shape[-1] // 2
    out[0, 0, centre, centre].backward()
    rows, cols = (x.grad[0].abs().sum(0) > 0).nonzero(as_tuple=True)
    size = receptive_field(n_layers)
    assert size == {2: 34, 3: 70}[n_layers]
    assert rows.max() - rows.min() + 1 == size and cols.max() - cols.min() + 1 == size


def tiny_classifier() -> AttributeClassifier:
    torch.manual_seed(0)
    classifier = AttributeClassifier(width=8)
    classifier.train()
    for _ in range(2):  # give BatchNorm non-trivial running statistics
        classifier(torch.randn(4, 3, 32, 32))
    return classifier.eval()


def test_perceptual_loss_is_zero_for_identical_images_and_positive_otherwise():
    loss = ClassifierPerceptualLoss(tiny_classifier())
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    assert torch.allclose(loss(x, x), torch.zeros(3), atol=1e-6)
    y = x.clone()
    y[1] = torch.rand(3, 32, 32) * 2 - 1
    distance = loss(y, x)
    assert distance[1] > 1e-3 and distance[0].abs() < 1e-6 and distance[2].abs() < 1e-6  # per image, not batch
    assert distance[1] <= 4.0  # unit vectors: each stage's squared difference is at most 4


def test_perceptual_loss_by_hand_for_one_stage():
    classifier = tiny_classifier()
    loss = ClassifierPerceptualLoss(classifier)
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = 0
        for a, b in zip(classifier.feature_maps(x), classifier.feature_maps(y)):
            a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
            b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
            expected = expected + ((a - b) ** 2).sum(1).mean((1, 2))
        expected = expected / len(classifier.stages)
    assert torch.allclose(loss(x, y), expected, atol=1e-5)


def test_the_classifier_is_not_updated():
    classifier = tiny_classifier()
    before = {key: value.clone() for key, value in classifier.state_dict().items()}
    loss = ClassifierPerceptualLoss(classifier)
    loss.train()  # as a training loop would: the classifier must stay in eval mode
    assert not classifier.training and all(not p.requires_grad for p in classifier.parameters())
    source = torch.zeros(2, 3, 32, 32, requires_grad=True)
    optimizer = torch.optim.SGD([source] + list(classifier.parameters()), lr=1.0)
    loss(source, torch.rand(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    assert source.grad is not None and source.grad.abs().sum() > 0  # gradients reach the images...
    for key, value in classifier.state_dict().items():  # ...but not the weights or BatchNorm statistics
        assert torch.equal(value, before[key]), key


def test_make_perceptual_loss_falls_back_to_the_classifier_without_lpips(monkeypatch):
    import facegen.vqgan_losses as losses

    monkeypatch.setattr(losses, "lpips_available", lambda: False)
    made = make_perceptual_loss(tiny_classifier())
    assert isinstance(made, ClassifierPerceptualLoss) and "not LPIPS" in made.name
    with pytest.raises(ValueError, match="classifier is needed"):
        make_perceptual_loss(None)


def test_lpips_available_needs_package_and_weights(monkeypatch, tmp_path):
    import importlib.util

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object() if name == "lpips" else real_find_spec(name))
    assert not lpips_available()  # package but no VGG weights
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "vgg16-397923af.pth").write_bytes(b"")
    assert lpips_available()


def test_gan_gradient_reaches_the_vqgan_last_layer():
    torch.manual_seed(0)
    model = VQGAN(ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[], z_channels=32, resolution=16,
                  embed_dim=8, n_embed=16)
    d = NLayerDiscriminator(ndf=8, n_layers=2)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    recon, vq_loss, _ = model(x)
    nll = F.l1_loss(recon, x)
    weight = adaptive_weight(nll, generator_adversarial_loss(d(recon)), model.last_layer)
    assert 0 < weight.item() < 1e4


def test_generator_loss_by_hand_before_and_after_disc_start():
    last_layer = torch.tensor([0.5, -1.0], requires_grad=True)
    targets = torch.zeros(1, 1, 1, 2)
    recon_shifted = (last_layer * torch.tensor([2.0, 1.0])).reshape(1, 1, 1, 2) + 0.25  # [1.25, -0.75]
    perceptual = lambda rec, ref: (rec - ref).pow(2).sum(dim=(1, 2, 3))  # noqa: E731  1.5625 + 0.5625 = 2.125
    discriminator = lambda images: images.sum().reshape(1, 1)  # noqa: E731  one logit, 0.5 here
    off = generator_loss(recon_shifted, targets, perceptual, discriminator, last_layer, 0.1, 0.8, gan_on=False)
    assert off["l1"].item() == pytest.approx(1.0) and off["perceptual"].item() == pytest.approx(2.125)
    assert off["g_loss"].item() == 0.0 and off["gan_weight"].item() == 0.0
    assert off["loss"].item() == pytest.approx(1.0 + 0.1 * 2.125)
    on = generator_loss(recon_shifted, targets, perceptual, discriminator, last_layer, 0.1, 0.8, gan_on=True)
    nll = (recon_shifted - targets).abs().mean() + 0.1 * perceptual(recon_shifted, targets).mean()
    weight = adaptive_weight(nll, -discriminator(recon_shifted).mean(), last_layer, 0.8)
    assert on["g_loss"].item() == pytest.approx(-0.5)
    assert on["gan_weight"].item() == pytest.approx(weight.item()) and on["gan_weight"].item() > 0
    assert on["loss"].item() == pytest.approx(off["loss"].item() + weight.item() * -0.5)


def test_spectral_discriminator_has_unit_spectral_norm_and_no_batchnorm():
    torch.manual_seed(0)
    discriminator = NLayerDiscriminator(ndf=8, n_layers=2, norm="spectral").train()
    x = torch.randn(2, 3, 32, 32)
    for _ in range(30):  # power iterations run in training forwards
        discriminator(x)
    convs = [m for m in discriminator.main if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in discriminator.main)
    for conv in convs:  # the weight a forward uses, reshaped as a matrix, has its largest singular value at 1
        matrix = conv.weight.detach().reshape(conv.weight.shape[0], -1)
        assert torch.linalg.matrix_norm(matrix, ord=2) == pytest.approx(1.0, abs=0.02)
    assert discriminator(x).shape == NLayerDiscriminator(ndf=8, n_layers=2)(x).shape
    with pytest.raises(ValueError, match="norm must be 'batch' or 'spectral'"):
        NLayerDiscriminator(norm="layer")


def test_r1_penalty_by_hand_for_a_linear_discriminator():
    class Linear(torch.nn.Module):  # D(x) = <w, x> per patch logit map of one pixel: gradient w for every image
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.arange(12.0).reshape(1, 3, 2, 2))

        def forward(self, x):
            return (x * self.w).sum(dim=(1, 2, 3), keepdim=True)

    real, discriminator = torch.randn(4, 3, 2, 2), Linear()
    penalty = r1_penalty(discriminator, real, gamma=10.0)
    assert penalty.item() == pytest.approx(0.5 * 10.0 * float((torch.arange(12.0) ** 2).sum()))  # 5 * 506
    assert not real.requires_grad
    penalty.backward()  # create_graph: the penalty trains the discriminator (d/dw of 5 |w|^2 = 10 w)
    torch.testing.assert_close(discriminator.w.grad, 10.0 * discriminator.w.detach())


def test_r1_penalty_is_zero_where_the_discriminator_is_flat():
    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.b = torch.nn.Parameter(torch.ones(()))

        def forward(self, x):
            return self.b * torch.ones(len(x), 1, 1, 1) + 0 * x.sum(dim=(1, 2, 3), keepdim=True)

    assert r1_penalty(Constant(), torch.randn(3, 3, 4, 4), gamma=1.0).item() == 0.0


def test_spectral_discriminator_and_r1_under_bf16_autocast_on_cpu():
    """The GPU path trains under bf16 autocast: the spectral norm's power iteration and the hinge loss must run there,
    and R1 (taken outside autocast, in fp32) must accept the discriminator that autocast just used."""
    torch.manual_seed(0)
    discriminator = NLayerDiscriminator(ndf=8, n_layers=2, norm="spectral").train()
    real, fake = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = hinge_d_loss(discriminator(real), discriminator(fake))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    penalty = r1_penalty(discriminator, real, gamma=1.0)
    assert penalty.dtype == torch.float32 and penalty > 0
    (loss + penalty).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in discriminator.parameters() if p.requires_grad)


def test_a_colour_blurred_discriminator_cannot_see_fine_colour_and_sees_brightness():
    torch.manual_seed(0)
    inner = NLayerDiscriminator(ndf=8, n_layers=2, norm="spectral").eval()
    discriminator = ColourBlurredInput(inner, block=4)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2 - 1.0  # +-1, mean 0 in every 4 x 4
    speckled = x + 0.2 * torch.stack([checker, -checker, torch.zeros(32, 32)])  # red - green flips pixel by pixel
    torch.testing.assert_close(discriminator(speckled), discriminator(x))  # the speckle is invisible to it
    assert not torch.allclose(inner(speckled), inner(x))  # the plain discriminator sees it
    brighter = x + 0.2 * checker  # the same pattern in brightness (all channels alike): seen
    assert not torch.allclose(discriminator(brighter), discriminator(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the GPU path's autocast
        loss = hinge_d_loss(discriminator(x), discriminator(speckled))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert r1_penalty(discriminator, x, gamma=1.0) > 0
    with pytest.raises(ValueError, match="block must be >= 2"):
        ColourBlurredInput(inner, block=1)
