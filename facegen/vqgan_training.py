"""Training the small VQGAN: taming's recipe at the scale of a CPU, written as a loop to read top to bottom.

Each step updates two networks with Adam (betas 0.5, 0.9, as in taming):

    generator (the VQGAN):  L1 + perceptual_weight * perceptual + lambda * (-mean D(x_rec)) + VQ loss
    discriminator (PatchGAN): hinge loss on real images and detached reconstructions

Before `disc_start` steps lambda is 0 and the discriminator is not trained (taming's `disc_start`); after it, lambda
is the adaptive weight of `facegen.vqgan_losses.adaptive_weight`. The losses are explained there.

Two things taming does not do, both for a short CPU budget and both kept out of the model's weights layout:
- the codebook starts from k-means of the first batch's encoder outputs, and codes unused for `restart_every` steps
  are re-seeded with current encoder outputs (the VQ-VAE's remedies against dead codes: `facegen.quantize`);
- training runs on random `crop_size` crops when set (taming trains on random crops too; a 64 px crop costs a
  quarter of a 128 px face, and the network is convolutional, so it runs on whole faces afterwards).

The conventions are the VQ-VAE's (`facegen.vqvae_training`): batches and crops are pure functions of (seed, step),
validation (PSNR, SSIM, codebook usage) and an atomic checkpoint with every RNG state every `val_every` steps, so an
interrupted run resumes exactly; a progress bar; history.json; sample grids in `samples/`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from facegen import metrics
from facegen.checkpoint import atomic_folder, atomic_write_json, write_recipe
from facegen.config import Profile, get_profile, training_recipe
from facegen.data.transforms import from_uint8
from facegen.quantize import kmeans
from facegen.viz import save_image_grid
from facegen.vqgan import VQGAN, load_vqgan
from facegen.vqgan_losses import NLayerDiscriminator, generator_loss, hinge_d_loss, make_perceptual_loss
from facegen.train.engine import Engine, cpu_copy
from facegen.train.batches import step_batches
from facegen.train.schedule import batch_indices, cosine_with_warmup, step_generator, warmup_steps

MODEL_DIR = "model"  # config.json + model.safetensors, readable by facegen.vqgan.load_vqgan
BETAS = (0.5, 0.9)  # taming's Adam betas for both networks
KMEANS_IMAGES = 64  # images whose encoder outputs seed the codebook


@dataclass
class VQGANRun:
    model: VQGAN
    discriminator: NLayerDiscriminator
    folder: Path
    perceptual: str = ""  # which perceptual loss was used (its `name`)
    history: list[dict] = field(default_factory=list)  # one row per step: losses, GAN weight, lr
    validation: list[dict] = field(default_factory=list)  # one row per validation: step, psnr, ssim, usage, ...
    seconds: float = 0.0
    images_per_second: float = 0.0


def vqgan_folder(profile: Profile) -> Path:
    return profile.artifacts / "vqgan"


def build_vqgan(profile: Profile) -> VQGAN:
    """The profile's small VQGAN (taming's architecture; resolution = the profile's image size)."""
    cfg = profile.vqgan
    return VQGAN(ch=cfg.ch, ch_mult=cfg.ch_mult, num_res_blocks=cfg.num_res_blocks,
                 attn_resolutions=cfg.attn_resolutions, z_channels=cfg.z_channels,
                 resolution=profile.data.image_size, embed_dim=cfg.embed_dim, n_embed=cfg.n_embed)


def build_discriminator(profile: Profile) -> NLayerDiscriminator:
    return NLayerDiscriminator(ndf=profile.vqgan.disc_channels, n_layers=profile.vqgan.disc_layers)


def random_crops(images: Tensor, size: int | None, generator: torch.Generator) -> Tensor:
    """A random `size` x `size` crop of each image (its own offset); the images unchanged when size is None."""
    height, width = images.shape[-2:]
    if size is None or (size == height and size == width):
        return images
    if size > min(height, width):
        raise ValueError(f"crop_size {size} is larger than the images ({height}x{width})")
    tops = torch.randint(0, height - size + 1, (len(images),), generator=generator).tolist()
    lefts = torch.randint(0, width - size + 1, (len(images),), generator=generator).tolist()
    return torch.stack([image[:, top:top + size, left:left + size] for image, top, left in zip(images, tops, lefts)])


@torch.no_grad()
def init_codebook(model: VQGAN, images: Tensor) -> None:
    """Set the codebook to k-means centres of the encoder outputs of `images` (float, [-1, 1]), so that every code
    starts where the data is instead of in taming's tiny uniform cloud around 0."""
    latents = model.encode_latents(images)
    vectors = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    model.quantize.embedding.weight.copy_(kmeans(vectors, model.n_embed))


@torch.no_grad()
def restart_dead_codes(model: VQGAN, counts: Tensor, latents: Tensor) -> int:
    """Re-seed the codes whose `counts` are 0 with random encoder output vectors of `latents` (B, D, h, w); return
    how many were re-seeded. A dead code gets no gradient, so without this it would stay unused for good."""
    dead = (counts == 0).nonzero().flatten()
    if len(dead) == 0:
        return 0
    vectors = latents.detach().permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    picks = torch.randint(len(vectors), (len(dead),))
    model.quantize.embedding.weight[dead] = vectors[picks]
    return len(dead)


def train_vqgan(profile: Profile | None = None, train_images: Tensor | None = None, val_images: Tensor | None = None,
                classifier: nn.Module | None = None, folder: Path | None = None, steps: int | None = None,
                stop_after: int | None = None, resume: bool = True, progress: bool = True) -> VQGANRun:
    """Train (or resume) the profile's small VQGAN on uint8 images (N, 3, S, S), on the profile's device.

    `classifier` is the frozen network of the perceptual loss when LPIPS is not available locally (default: the
    profile's trained attribute classifier). `stop_after` ends the run early at that step with a checkpoint, as an
    interruption would; calling again with `resume=True` continues exactly. The finished model is saved in
    `folder/model` (default `artifacts/<profile>/vqgan`)."""
    profile = profile or get_profile()
    cfg = profile.vqgan
    steps = cfg.steps if steps is None else steps
    folder = Path(folder or vqgan_folder(profile))
    if train_images is None or val_images is None:
        from facegen.data.images import load_images

        train_images = load_images(profile, "train") if train_images is None else train_images
        val_images = load_images(profile, "valid") if val_images is None else val_images
    val_images = val_images[:256]
    perceptual = perceptual_loss_for(profile, classifier)

    torch.manual_seed(cfg.seed)
    # channels_last lets the CPU's oneDNN convolutions skip layout conversions (~1.9x faster here, measured).
    model = build_vqgan(profile).to(memory_format=torch.channels_last)
    discriminator = build_discriminator(profile).to(memory_format=torch.channels_last)
    optimizer_g = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=BETAS)
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr, betas=BETAS)
    with Engine("VQGAN", folder, steps, settings={**asdict(cfg), "perceptual": perceptual.name},
                val_every=cfg.val_every, items_per_step=cfg.batch_size, stop_after=stop_after, resume=resume,
                progress=progress) as engine:
        scheduler_g = cosine_with_warmup(optimizer_g, warmup=warmup_steps(engine.total, 100), total=engine.total)
        engine.extra["code_counts"] = torch.zeros(cfg.n_embed, dtype=torch.long)  # code uses since the last restart
        model, discriminator, optimizer_g, optimizer_d, scheduler_g = engine.prepare(
            model=model, discriminator=discriminator, optimizer_g=optimizer_g, optimizer_d=optimizer_d,
            scheduler_g=scheduler_g)
        perceptual.to(engine.device)
        plain = engine.unwrap(model)
        if engine.start == 0:  # k-means on the encoder outputs of the first images of step 0's order
            first = train_images[batch_indices(0, len(train_images), KMEANS_IMAGES, cfg.seed)]
            init_codebook(plain, crops(first.to(engine.device), cfg, step=0))
        counts = engine.extra["code_counts"] = engine.extra["code_counts"].to(engine.device)
        model.train()
        discriminator.train()
        batches = step_batches(train_images, engine.start, engine.end, cfg.batch_size, cfg.seed, engine.device,
                               profile.data.num_workers)
        for step, (_, batch) in zip(engine.steps(), batches):
            x = crops(batch, cfg, step)
            gan_on = step >= cfg.disc_start
            with engine.autocast():
                terms = generator_terms(model, discriminator, perceptual, x, gan_on, cfg)
            engine.optimize(terms["loss"], optimizer_g, scheduler_g)
            if gan_on:
                with engine.autocast():
                    terms["d_loss"] = discriminator_loss(discriminator, x, terms["reconstruction"])
                engine.optimize(terms["d_loss"], optimizer_d)
            for group in optimizer_d.param_groups:  # one schedule for both networks
                group["lr"] = scheduler_g.get_last_lr()[0]
            counts += torch.bincount(terms.pop("indices").flatten(), minlength=cfg.n_embed)
            latents = terms.pop("latents")
            del terms["reconstruction"]
            if engine.done % cfg.restart_every == 0:
                terms["restarted"] = restart_dead_codes(plain, counts, latents)
                counts.zero_()
            engine.log(**terms, lr=scheduler_g.get_last_lr()[0])
            if engine.validating:
                engine.validation.append({"step": engine.done,
                                          **metrics.reconstruction_metrics(plain, val_images, cfg.n_embed)})
                if engine.is_main:
                    save_image_grid(recon_pairs(plain, val_images[:8]),
                                    folder / "samples" / f"step_{engine.done:06d}.png", nrow=8)
        run = VQGANRun(model=plain, discriminator=engine.unwrap(discriminator), folder=folder,
                       perceptual=perceptual.name, history=engine.history, validation=engine.validation,
                       seconds=engine.seconds, images_per_second=engine.items_per_second)
        if engine.saves_trained(folder / MODEL_DIR):
            save_trained(run, recipe=training_recipe(cfg))
    return run


def perceptual_loss_for(profile: Profile, classifier: nn.Module | None) -> nn.Module:
    """The perceptual loss of the profile's VQGAN losses: LPIPS when it is available locally, else the classifier
    feature distance on `classifier` (default: the profile's trained attribute classifier; facegen.pipeline's
    ensure_vqgan / ensure_gan_decoder train it first when it is missing)."""
    from facegen.vqgan_losses import lpips_available

    if classifier is None and not lpips_available():
        from facegen.classifier import classifier_folder, load_classifier

        classifier = load_classifier(classifier_folder(profile))
    return make_perceptual_loss(classifier)


def crops(batch: Tensor, cfg, step: int) -> Tensor:
    """A uint8 training batch as floats in [-1, 1], randomly cropped to `cfg.crop_size`: the crops are a pure function
    of (seed, step), drawn on the CPU so every device crops alike."""
    x = random_crops(from_uint8(batch), cfg.crop_size, step_generator(cfg.seed, step))
    return x.contiguous(memory_format=torch.channels_last)


def generator_terms(model: VQGAN, discriminator: nn.Module, perceptual: nn.Module, x: Tensor, gan_on: bool,
                    cfg) -> dict[str, Tensor]:
    """The generator's loss on a batch `x` and its parts (taming's objective + the quantizer's loss), with what
    the step needs afterwards: the reconstruction (for the discriminator), the codes and the encoder outputs."""
    latents = model.encode_latents(x)
    quantized, vq_loss, indices = model.quantize(latents)
    recon = model.decode_latents(quantized)
    terms = generator_loss(recon.float(), x, perceptual, discriminator, model.last_layer, cfg.perceptual_weight,
                           cfg.disc_weight, gan_on)
    return {**terms, "loss": terms["loss"] + vq_loss, "vq": vq_loss, "reconstruction": recon.detach(),
            "indices": indices, "latents": latents.detach()}


def discriminator_loss(discriminator: nn.Module, x: Tensor, recon: Tensor) -> Tensor:
    """The PatchGAN's hinge loss: real images `x` against (detached) reconstructions; in fp32 under autocast."""
    return hinge_d_loss(discriminator(x), discriminator(recon.detach()))


@torch.no_grad()
def recon_pairs(model: VQGAN, images: Tensor) -> Tensor:
    """Originals (uint8 images) on the first row, reconstructions on the second, in [-1, 1]."""
    was_training = model.training
    model.eval()
    x = from_uint8(images.to(next(model.parameters()).device))
    recon = model(x.contiguous(memory_format=torch.channels_last))[0].clamp(-1, 1)
    model.train(was_training)
    return torch.cat([x, recon]).cpu()


def save_trained(run: VQGANRun, recipe: dict) -> Path:
    """The model folder (config.json + model.safetensors, for `facegen.vqgan.load_vqgan`, and the `recipe` it was
    trained with) and history.json."""
    with atomic_folder(run.folder / MODEL_DIR) as tmp:
        cpu_copy(run.model).save_pretrained(tmp)
        write_recipe(tmp, recipe)
    atomic_write_json(run.folder / "history.json", {"train": run.history, "validation": run.validation,
                                                     "seconds": run.seconds, "perceptual": run.perceptual})
    return run.folder / MODEL_DIR


def load_trained_vqgan(folder: Path, device: str = "cpu") -> VQGAN:
    """A trained small VQGAN (eval mode, on `device`) from its artifact folder (or the `model` folder inside it)."""
    folder = Path(folder)
    if (folder / MODEL_DIR / "config.json").is_file():
        folder = folder / MODEL_DIR
    return load_vqgan(folder).to(device)
