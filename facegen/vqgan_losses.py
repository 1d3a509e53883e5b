"""The losses that turn a VQ autoencoder into a VQGAN (Esser et al., 2021; taming's `VQLPIPSWithDiscriminator`).

A VQ-VAE trained on pixel errors alone averages what it is unsure of, and averages look blurry: strands of hair and
the glint of an eye come back as smooth smudges. The VQGAN keeps a pixel term and adds two critics:

- a *perceptual* distance, which compares images through the feature maps of a frozen network, so that a
  reconstruction is pushed to have the same local structure (edges, textures) rather than the same average colour;
- a *PatchGAN discriminator*, a small conv net that says for every patch whether it looks real; the generator is
  rewarded for patches it cannot tell apart from real ones.

    generator:      L1(x, x_rec) + perceptual_weight * P(x, x_rec) + lambda * (-mean D(x_rec)) + VQ loss
    discriminator:  hinge: mean(relu(1 - D(x))) / 2 + mean(relu(1 + D(x_rec))) / 2

lambda is adaptive: ||grad of the reconstruction terms|| / ||grad of the GAN term||, both with respect to the decoder's
last layer, times `disc_weight`, and 0 before `disc_start` steps, so the GAN term neither dominates nor vanishes.

Perceptual network. taming uses LPIPS (VGG16 features with learned per-channel weights). Its weights cannot be
downloaded here; `make_perceptual_loss` uses LPIPS when the `lpips` package and the VGG16 weights are already on disk,
and otherwise `ClassifierPerceptualLoss`: the same recipe (unit-normalised feature maps, squared differences, averaged
over positions and stages) on the course's own attribute classifier, frozen. It is not LPIPS: its
features were trained on SynthFaces attributes, not on human judgements of similarity, and it has no learned weights.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from facegen.data.transforms import blur_colour

# torchvision's ImageNet VGG16, the backbone `lpips.LPIPS(net="vgg")` loads from torch's hub cache.
VGG16_WEIGHTS = "vgg16-397923af.pth"


# ---------------------------------------------------------------------------------------------------------- critic


def _init_weights(module: nn.Module) -> None:
    """taming's (and pix2pix's) initialisation: convs ~ N(0, 0.02); BatchNorm scale ~ N(1, 0.02), shift 0."""
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class ColourBlurredInput(nn.Module):
    """A discriminator that sees its input with the colour detail finer than `block` pixels averaged away and the grey
    level untouched (`facegen.data.transforms.blur_colour`), real and reconstructed faces alike. The GAN term can then
    ask for sharper brightness (hair, lids, lashes) but not for fine colour: painting colour speckle earns the
    generator nothing, and the L1 and perceptual terms, which do see it, pull it out. JPEG keeps colour at a quarter
    of the resolution for the same reason: eyes resolve colour far more coarsely than brightness."""

    def __init__(self, discriminator: nn.Module, block: int):
        super().__init__()
        if block < 2:
            raise ValueError(f"ColourBlurredInput: block must be >= 2 (1 would blur nothing), got {block}")
        self.discriminator, self.block = discriminator, block

    def forward(self, images: Tensor) -> Tensor:
        return self.discriminator(blur_colour(images, self.block))


class NLayerDiscriminator(nn.Module):
    """PatchGAN (pix2pix; taming's discriminator): images (B, C, H, W) -> one logit per patch, (B, 1, h, w).

    4x4 convs: `n_layers` with stride 2 (the first without normalisation), one with stride 1, then a 1-channel
    stride-1 conv; BatchNorm and LeakyReLU(0.2) between them; channels ndf, 2 ndf, 4 ndf, ... capped at 8 ndf.
    Each logit sees a `receptive_field(n_layers)` square of pixels (70 for taming's n_layers=3): it judges texture
    and local structure, not the whole face. Module names follow taming (`main.0`, `main.2`, ...).

    `norm="spectral"` (issue 16's lever against speckle; Miyato et al. 2018, StyleGAN-T, BigGAN) drops BatchNorm and
    divides every conv's weight by its largest singular value (torch's `spectral_norm` parametrization, one power
    iteration per training forward): each layer is then 1-Lipschitz, so the discriminator cannot react sharply to
    tiny pixel changes, and a generator gains nothing by painting them."""

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        if n_layers < 1 or ndf < 1:
            raise ValueError(f"NLayerDiscriminator: n_layers and ndf must be >= 1, got n_layers={n_layers}, ndf={ndf}")
        if norm not in ("batch", "spectral"):
            raise ValueError(f"NLayerDiscriminator: norm must be 'batch' or 'spectral', got {norm!r}")
        spectral = norm == "spectral"
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        channels = ndf
        for n in range(1, n_layers + 1):
            out = ndf * min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            # No conv bias with BatchNorm: its shift replaces it.
            layers += [nn.Conv2d(channels, out, 4, stride=stride, padding=1, bias=spectral)]
            layers += [] if spectral else [nn.BatchNorm2d(out)]
            layers += [nn.LeakyReLU(0.2, True)]
            channels = out
        layers.append(nn.Conv2d(channels, 1, 4, stride=1, padding=1))
        self.main = nn.Sequential(*layers)
        self.apply(_init_weights)
        if spectral:
            for module in self.main:
                if isinstance(module, nn.Conv2d):
                    nn.utils.parametrizations.spectral_norm(module)

    def forward(self, images: Tensor) -> Tensor:
        return self.main(images)


def receptive_field(n_layers: int) -> int:
    """Side of the pixel square one PatchGAN logit sees: walk back from one output pixel through the 4x4 convs
    (two stride-1 ones, then `n_layers` stride-2 ones): r -> r + 3 for stride 1, r -> 2 r + 2 for stride 2."""
    size = 1
    for stride in [1, 1] + [2] * n_layers:
        size = size + 3 if stride == 1 else 2 * size + 2
    return size


def r1_penalty(discriminator: nn.Module, real: Tensor, gamma: float) -> Tensor:
    """R1 (Mescheder et al. 2018): gamma / 2 * E ||d D(x) / d x||^2 on REAL images, D(x) being the mean of an image's
    patch logits. It flattens the discriminator around real faces, so that it cannot tell a face from the same face
    with a few sharp coloured pixels by a steep slope -- the slope a decoder would otherwise climb into speckle.
    Taken in fp32; `real` is not modified (a leaf copy gets the gradient)."""
    real = real.detach().float().requires_grad_(True)
    logits = discriminator(real).float().mean(dim=tuple(range(1, real.ndim)))
    (gradient,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return 0.5 * gamma * gradient.pow(2).sum(dim=tuple(range(1, real.ndim))).mean()


def hinge_d_loss(logits_real: Tensor, logits_fake: Tensor) -> Tensor:
    """Discriminator hinge loss: 0.5 mean(relu(1 - D(x))) + 0.5 mean(relu(1 + D(x_rec))).

    Real patches are pushed to logits >= 1, fakes to <= -1; beyond that margin a patch costs nothing, which keeps
    the discriminator from growing its logits without bound."""
    logits_real, logits_fake = logits_real.float(), logits_fake.float()  # fp32 even under autocast
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def generator_adversarial_loss(logits_fake: Tensor) -> Tensor:
    """The generator's GAN term, -mean D(x_rec): lower when the discriminator rates the reconstructions as real."""
    return -logits_fake.float().mean()  # fp32 even under autocast


def adaptive_weight(nll_loss: Tensor, g_loss: Tensor, last_layer: Tensor, disc_weight: float = 1.0,
                    max_weight: float = 1e4) -> Tensor:
    """taming's balance of the GAN term: ||d nll / d W|| / (||d g_loss / d W|| + 1e-4), clamped to [0, max_weight],
    detached, times `disc_weight`, where W is the decoder's last layer (`VQGAN.last_layer`).

    With this weight the GAN term moves the last layer as strongly as the reconstruction terms do, whatever the
    scale of the discriminator's logits. Both graphs are kept (`retain_graph`) for the backward pass that follows."""
    nll_grad = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = nll_grad.norm() / (g_grad.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach() * disc_weight


def generator_loss(reconstructions: Tensor, targets: Tensor, perceptual: nn.Module, discriminator: nn.Module,
                   last_layer: Tensor, perceptual_weight: float, disc_weight: float, gan_on: bool) -> dict[str, Tensor]:
    """taming's generator objective, without the quantizer's own loss:

        loss = L1 + perceptual_weight * perceptual + lambda * (-mean D(x_rec)),   lambda = `adaptive_weight`

    Before `disc_start` (`gan_on` False) lambda and the GAN term are 0 and the discriminator is not run. Returns the
    total and its parts as tensors: loss, l1, perceptual, g_loss, gan_weight."""
    l1 = (reconstructions - targets).abs().mean()
    perceptual_loss = perceptual(reconstructions, targets).mean()
    nll = l1 + perceptual_weight * perceptual_loss
    if gan_on:
        g_loss = generator_adversarial_loss(discriminator(reconstructions))
        weight = adaptive_weight(nll, g_loss, last_layer, disc_weight)
    else:  # taming's disc_factor = 0 before disc_start: no GAN term, no discriminator pass
        g_loss = weight = nll.new_zeros(())  # on the loss's device and dtype
    return {"loss": nll + weight * g_loss, "l1": l1, "perceptual": perceptual_loss, "g_loss": g_loss,
            "gan_weight": weight}


# ------------------------------------------------------------------------------------------------------ perceptual


def _unit_channels(features: Tensor, eps: float = 1e-10) -> Tensor:
    """Divide the feature vector at each position by its length (LPIPS's `normalize_tensor`)."""
    return features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class ClassifierPerceptualLoss(nn.Module):
    """A perceptual distance on the feature maps of a frozen `AttributeClassifier` (LPIPS's recipe without LPIPS).

    For each of the classifier's stages: normalise each position's feature vector to unit length, take the squared
    difference between the two images, sum over channels and average over positions; then average over the stages
    (so each stage and the total lie in [0, 4]). Returns one value per image, (B,). 0 for identical images, > 0
    otherwise (up to all-zero features).

    The classifier is frozen: its parameters get no gradient and it stays in eval mode even when this module is
    put in training mode, so BatchNorm uses its running statistics and they are never updated."""

    name = "classifier feature distance (not LPIPS)"

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier.eval()
        for parameter in self.classifier.parameters():
            parameter.requires_grad_(False)

    def train(self, mode: bool = True) -> "ClassifierPerceptualLoss":
        super().train(mode)
        self.classifier.eval()  # frozen: BatchNorm must keep its running statistics
        return self

    def forward(self, reconstructions: Tensor, targets: Tensor) -> Tensor:
        both = torch.cat([reconstructions, targets]).contiguous(memory_format=torch.channels_last)
        stages = self.classifier.feature_maps(both)
        distance = reconstructions.new_zeros(len(reconstructions))
        for maps in stages:
            rec, ref = _unit_channels(maps).chunk(2)
            distance = distance + (rec - ref).pow(2).sum(dim=1).mean(dim=(1, 2))
        return distance / len(stages)


class LPIPSLoss(nn.Module):
    """LPIPS (Zhang et al., 2018) from the `lpips` package, (B,) distances: the perceptual loss taming uses."""

    name = "LPIPS (VGG16)"

    def __init__(self):
        super().__init__()
        import lpips

        self.lpips = lpips.LPIPS(net="vgg", verbose=False).eval()
        for parameter in self.lpips.parameters():
            parameter.requires_grad_(False)

    def train(self, mode: bool = True) -> "LPIPSLoss":
        super().train(mode)
        self.lpips.eval()
        return self

    def forward(self, reconstructions: Tensor, targets: Tensor) -> Tensor:
        return self.lpips(reconstructions, targets).flatten()


def lpips_available() -> bool:
    """True when LPIPS can be built without a download: the `lpips` package (which ships its linear-layer weights)
    and torchvision's VGG16 weights in torch's hub cache."""
    if importlib.util.find_spec("lpips") is None:
        return False
    return (Path(torch.hub.get_dir()) / "checkpoints" / VGG16_WEIGHTS).is_file()


def make_perceptual_loss(classifier: nn.Module | None = None, prefer_lpips: bool = True) -> nn.Module:
    """LPIPS when it is available locally (`lpips_available`), else `ClassifierPerceptualLoss(classifier)`.

    Both return (B,) distances and carry a `name` that says honestly which one is in use."""
    if prefer_lpips and lpips_available():
        return LPIPSLoss()
    if classifier is None:
        raise ValueError("make_perceptual_loss: LPIPS is not available locally (needs the `lpips` package and "
                         f"{VGG16_WEIGHTS} in {Path(torch.hub.get_dir()) / 'checkpoints'}), so a classifier is "
                         "needed for the fallback perceptual loss; pass classifier=ensure_classifier(profile)")
    return ClassifierPerceptualLoss(classifier)
