"""A VQGAN decoder for the VQ-VAE's tokens: fine-tune only the decoder with taming's losses.

Training taming's whole VQGAN from scratch needs far more compute than a CPU gives (benchmarks/README.md: ten CPU
minutes reach ~18 dB PSNR). The large projects did not start from scratch either: DALL-E mini fine-tuned a trained
VQGAN, and Stable Diffusion's improved autoencoders (sd-vae-ft-mse / -ema) fine-tuned only the decoder, so that
every image keeps exactly the same tokens. We do the latter with the course's VQ-VAE:

- the encoder and the codebook are frozen: same tokens, so the GPT of notebook 05 can use the new decoder unchanged;
- the decoder is trained with the VQGAN's generator loss (facegen.vqgan_losses):
      L1 + perceptual_weight * perceptual + lambda * (-mean D(x_rec)),   lambda = taming's adaptive weight,
  and a PatchGAN discriminator with the hinge loss; Adam with taming's betas (0.5, 0.9) for both;
- one departure from taming, against speckle (issue 16): the PatchGAN's convs are spectrally normalised instead of
  followed by BatchNorm (`disc_norm="spectral"`, the default; "batch" is taming's); an R1 penalty on real faces
  (`r1_gamma`) and a discriminator that sees colour only in coarse blocks (`disc_colour_block`) are there too;
  all measured in benchmarks/README.md ("Against speckle");
- what is saved is an exponential moving average of the decoder's weights (`ema_decay`; sd-vae-ft-ema's choice,
  and StyleGAN's): a GAN's generator jitters from step to step, and the average keeps the sharpening while
  smoothing away the speckle that any single step's weights paint.

The result is a complete VQ-VAE (same config, new decoder weights) in `artifacts/<profile>/gan_decoder/model`,
readable by `facegen.vqvae_training.load_vqvae`, with `base_vqvae.json` naming the VQ-VAE it was made from.
Conventions as the other trainers: batches are pure functions of (seed, step), a progress bar, validation (PSNR,
SSIM, sharpness) and an atomic checkpoint with every RNG state every `val_every` steps so an interrupted run resumes
exactly; history.json; sample grids in `samples/`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from facegen import metrics
from facegen.checkpoint import atomic_folder, atomic_write_json, write_recipe
from facegen.config import Profile, get_profile, training_recipe
from facegen.data.transforms import from_uint8
from facegen.viz import save_image_grid
from facegen.vqgan_losses import ColourBlurredInput, NLayerDiscriminator, generator_loss, r1_penalty
from facegen.train.averaging import weight_average
from facegen.train.engine import Engine, cpu_copy
from facegen.train.batches import step_batches
from facegen.vqgan_training import discriminator_loss, perceptual_loss_for
from facegen.vqvae import VQVAE
from facegen.vqvae_training import load_vqvae, vqvae_folder

MODEL_DIR = "model"
BASE_FILE = "base_vqvae.json"  # inside MODEL_DIR: the fingerprint of the VQ-VAE whose encoder and codebook it uses
BETAS = (0.5, 0.9)  # taming's Adam betas


@dataclass
class GANDecoderRun:
    model: VQVAE  # the VQ-VAE whose decoder is trained (the raw weights of the last step)
    averaged: VQVAE  # the same with the averaged decoder: what is evaluated and saved
    discriminator: nn.Module  # an NLayerDiscriminator, or one inside ColourBlurredInput
    folder: Path
    base_fingerprint: str
    perceptual: str = ""
    history: list[dict] = field(default_factory=list)
    validation: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    images_per_second: float = 0.0


def gan_decoder_folder(profile: Profile) -> Path:
    return profile.artifacts / "gan_decoder"


def decoder_last_layer(model: VQVAE) -> Tensor:
    """The weight of the decoder's final layer (a ConvTranspose2d), where the adaptive GAN weight is measured."""
    return model.decoder.net[-1].weight


def freeze_tokens(model: VQVAE) -> None:
    """Freeze the encoder and the codebook (no gradients, no EMA codebook updates): the tokens must not change."""
    for parameter in list(model.encoder.parameters()) + list(model.quantizer.parameters()):
        parameter.requires_grad_(False)
    model.encoder.eval()
    model.quantizer.eval()  # in training mode the quantizer would move its EMA codebook and restart codes


@torch.no_grad()
def quantized_latents(model: VQVAE, images: Tensor) -> Tensor:
    """The quantized codes the decoder reads, (B, embed_dim, h, w), for float images in [-1, 1]."""
    return model.quantizer(model.encoder(images)).quantized.detach()


def train_gan_decoder(profile: Profile | None = None, vqvae: VQVAE | None = None, train_images: Tensor | None = None,
                      val_images: Tensor | None = None, classifier: nn.Module | None = None,
                      folder: Path | None = None, steps: int | None = None, stop_after: int | None = None,
                      resume: bool = True, progress: bool = True) -> GANDecoderRun:
    """Fine-tune the decoder of `vqvae` (default: the profile's trained VQ-VAE) with the VQGAN losses on uint8
    images (N, 3, S, S), on the profile's device. `classifier` is the frozen network of the perceptual loss when
    LPIPS is not available locally (default: the profile's trained attribute classifier). `stop_after` ends the run
    early at that step with a checkpoint, as an interruption would; `resume=True` continues exactly (a checkpoint
    made from another VQ-VAE is refused). The finished model goes to `folder/model` (default
    `artifacts/<profile>/gan_decoder`)."""
    from facegen.data.images import load_images
    from facegen.tokenize_dataset import vqvae_fingerprint

    profile = profile or get_profile()
    cfg = profile.gan_decoder
    steps = cfg.steps if steps is None else steps
    folder = Path(folder or gan_decoder_folder(profile))
    base = vqvae if vqvae is not None else load_vqvae(vqvae_folder(profile))
    train_images = load_images(profile, "train") if train_images is None else train_images
    val_images = (load_images(profile, "valid") if val_images is None else val_images)[:256]
    perceptual = perceptual_loss_for(profile, classifier)
    base_fingerprint = vqvae_fingerprint(base)

    torch.manual_seed(cfg.seed)
    # channels_last lets the CPU's oneDNN convolutions skip layout conversions (the VQ-VAE trains ~1.7x faster).
    model = copy.deepcopy(base).to(memory_format=torch.channels_last)
    freeze_tokens(model)
    discriminator = NLayerDiscriminator(ndf=cfg.disc_channels, n_layers=cfg.disc_layers, norm=cfg.disc_norm)
    if cfg.disc_colour_block > 1:
        discriminator = ColourBlurredInput(discriminator, cfg.disc_colour_block)
    discriminator = discriminator.to(memory_format=torch.channels_last)
    averaged_decoder = weight_average(model.decoder, cfg.ema_decay, warmup=False)  # starts at the trained one
    optimizer_g = torch.optim.Adam(model.decoder.parameters(), lr=cfg.lr, betas=BETAS)
    optimizer_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr, betas=BETAS)
    settings = {**asdict(cfg), "base_fingerprint": base_fingerprint, "perceptual": perceptual.name}
    with Engine("GAN decoder", folder, steps, settings=settings, val_every=cfg.val_every,
                items_per_step=cfg.batch_size, stop_after=stop_after, resume=resume, progress=progress) as engine:
        model.to(engine.device)  # the frozen encoder and codebook too: the engine places what it trains
        decoder, discriminator, optimizer_g, optimizer_d, averaged_decoder = engine.prepare(
            decoder=model.decoder, discriminator=discriminator, optimizer_g=optimizer_g, optimizer_d=optimizer_d,
            averaged_decoder=averaged_decoder)
        perceptual.to(engine.device)
        averaged = copy.deepcopy(model)
        averaged.decoder = averaged_decoder.module  # shares the averaged weights: always up to date
        if engine.start == 0:  # the average starts at the trained decoder (AveragedModel would start at step 1's)
            averaged_decoder.update_parameters(model.decoder)
        base_on_device = copy.deepcopy(base).to(engine.device).eval()
        last_layer = decoder_last_layer(model)
        model.decoder.train()
        discriminator.train()
        batches = step_batches(train_images, engine.start, engine.end, cfg.batch_size, cfg.seed, engine.device,
                               profile.data.num_workers)
        for step, (_, batch) in zip(engine.steps(), batches):
            x = from_uint8(batch).contiguous(memory_format=torch.channels_last)
            gan_on = step >= cfg.disc_start
            with engine.autocast():
                terms = decoder_terms(model, decoder, discriminator, perceptual, x, gan_on, last_layer, cfg)
            engine.optimize(terms["loss"], optimizer_g)
            recon = terms.pop("reconstruction")
            if gan_on:
                with engine.autocast():
                    terms["d_loss"] = discriminator_loss(discriminator, x, recon)
                d_total = terms["d_loss"]
                if cfg.r1_gamma > 0:  # outside autocast: a gradient of a gradient, kept in fp32
                    terms["r1"] = r1_penalty(discriminator, x, cfg.r1_gamma)
                    d_total = d_total + terms["r1"]
                engine.optimize(d_total, optimizer_d)
            averaged_decoder.update_parameters(model.decoder)
            engine.log(**terms)
            if engine.validating:
                engine.validation.append({"step": engine.done, **metrics.reconstruction_metrics(
                    averaged, val_images, averaged.codebook_size)})
                if engine.is_main:
                    save_image_grid(recon_pairs(base_on_device, averaged, val_images[:8]),
                                    folder / "samples" / f"step_{engine.done:06d}.png", nrow=8)
        run = GANDecoderRun(model=model, averaged=averaged, discriminator=engine.unwrap(discriminator),
                            folder=folder, base_fingerprint=base_fingerprint, perceptual=perceptual.name,
                            history=engine.history, validation=engine.validation, seconds=engine.seconds,
                            images_per_second=engine.items_per_second)
        if engine.saves_trained(folder / MODEL_DIR):
            save_trained(run, recipe=training_recipe(cfg))
    return run


def decoder_terms(model: VQVAE, decoder: nn.Module, discriminator: nn.Module, perceptual: nn.Module, x: Tensor,
                  gan_on: bool, last_layer: Tensor, cfg) -> dict[str, Tensor]:
    """The decoder's VQGAN loss on a batch `x` and its parts (facegen.vqgan_losses.generator_loss), with the
    reconstruction the discriminator then sees. `decoder` is `model.decoder` as the engine prepared it."""
    recon = decoder(quantized_latents(model, x))
    terms = generator_loss(recon.float(), x, perceptual, discriminator, last_layer, cfg.perceptual_weight,
                           cfg.disc_weight, gan_on)
    return {**terms, "reconstruction": recon.detach()}


@torch.no_grad()
def recon_pairs(base: VQVAE, tuned: VQVAE, images: Tensor) -> Tensor:
    """Three rows: the uint8 `images`, the base VQ-VAE's reconstructions, the fine-tuned decoder's; in [-1, 1]."""
    x = from_uint8(images.to(next(tuned.parameters()).device))
    codes = base.encode_indices(x.to(next(base.parameters()).device))
    return torch.cat([x, base.decode_indices(codes).to(x.device), tuned.decode_indices(codes.to(x.device))]).cpu()


def save_trained(run: GANDecoderRun, recipe: dict) -> Path:
    """`folder/model` (a complete VQ-VAE with the averaged decoder + base_vqvae.json + the `recipe` it was trained
    with) and history.json."""
    with atomic_folder(run.folder / MODEL_DIR) as tmp:
        cpu_copy(run.averaged).save_pretrained(tmp)
        write_recipe(tmp, recipe)
        (Path(tmp) / BASE_FILE).write_text(json.dumps({"vqvae_fingerprint": run.base_fingerprint}) + "\n")
    atomic_write_json(run.folder / "history.json", {"train": run.history, "validation": run.validation,
                                                     "seconds": run.seconds, "perceptual": run.perceptual})
    return run.folder / MODEL_DIR


def gan_decoder_stale_reason(folder: Path, base_fingerprint: str) -> str | None:
    """Why the fine-tuned decoder in `folder` cannot be used with the VQ-VAE of `base_fingerprint`, or None."""
    model_dir = Path(folder) / MODEL_DIR
    if not (model_dir / "model.safetensors").is_file() or not (model_dir / BASE_FILE).is_file():
        return "no fine-tuned decoder yet"
    try:
        saved = json.loads((model_dir / BASE_FILE).read_text()).get("vqvae_fingerprint")
    except ValueError:
        return f"{model_dir / BASE_FILE} is unreadable"
    return None if saved == base_fingerprint else "it was fine-tuned from another VQ-VAE"


def load_gan_decoder(folder: Path, device: str = "cpu") -> VQVAE:
    """The VQ-VAE with the fine-tuned decoder (eval mode, on `device`) from its artifact folder or its `model`
    folder."""
    folder = Path(folder)
    if (folder / MODEL_DIR / "config.json").is_file():
        folder = folder / MODEL_DIR
    return load_vqvae(folder, device=device)
