"""Training the VQ-VAE: the step the course reads, on the engine every trainer shares (facegen/train/engine.py).

loss = MSE(reconstruction, image) + VQ loss (commitment, plus the codebook term when the codebook is not EMA-updated).
Every `val_every` steps: PSNR, SSIM and codebook usage on validation images, a reconstruction grid, and a checkpoint
holding model, optimizer, scheduler, step, history and RNG states, so an interrupted run resumes exactly where it
stopped. Batches are a pure function of (seed, step), so resuming needs no data-loader state.
Mixed precision (bf16 autocast) is used on CUDA only; the quantizer keeps its distances and EMA statistics in fp32.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from facegen import metrics
from facegen.checkpoint import atomic_folder, atomic_write_json, load_model_folder, write_recipe
from facegen.config import Profile, get_profile, training_recipe
from facegen.data.transforms import from_uint8
from facegen.train.engine import Engine, cpu_copy
from facegen.train.batches import step_batches
from facegen.train.schedule import cosine_with_warmup, warmup_steps
from facegen.viz import save_image_grid
from facegen.vqvae import VQVAE

MODEL_DIR = "model"  # save_pretrained folder: config.json + model.safetensors, and the recipe (checkpoint.RECIPE_FILE)
VAL_IMAGES = 512  # validation images scored at each validation (the same ones every time)


@dataclass
class VQVAERun:
    model: VQVAE
    folder: Path
    history: list[dict] = field(default_factory=list)  # one row per step: step, loss, recon, vq, perplexity, lr
    validation: list[dict] = field(default_factory=list)  # one row per validation: step, psnr, ssim, usage, ...
    seconds: float = 0.0
    images_per_second: float = 0.0


def vqvae_folder(profile: Profile) -> Path:
    return profile.tokenizer_artifacts("vqvae")


@torch.no_grad()
def evaluate(model: VQVAE, images: torch.Tensor, batch_size: int = 128) -> dict:
    """PSNR, SSIM (images in [-1, 1]) and codebook usage of `model` on uint8 images (N, 3, H, W), computed in
    batches on the model's device."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    psnrs, ssims, codes = [], [], []
    for start in range(0, len(images), batch_size):
        x = from_uint8(images[start:start + batch_size].to(device))
        recon, vq = model(x)
        recon = recon.clamp(-1, 1)
        psnrs.append(metrics.psnr(recon, x) * len(x))
        ssims.append(metrics.ssim(recon, x) * len(x))
        codes.append(vq.indices.flatten())
    model.train(was_training)
    usage = metrics.codebook_usage(torch.cat(codes), model.codebook_size)
    return {"psnr": float(sum(psnrs) / len(images)), "ssim": float(sum(ssims) / len(images)),
            "usage": float(usage.used_fraction), "perplexity": float(usage.perplexity),
            "dead_codes": int(usage.dead_codes)}


def vqvae_step(model: VQVAE, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The loss of one batch `x` (floats in [-1, 1]) and its parts: what one training step minimises. Under
    autocast the reconstruction error is still taken in fp32."""
    recon, vq = model(x)
    recon_loss = F.mse_loss(recon.float(), x.float())
    return {"loss": recon_loss + vq.loss, "recon": recon_loss, "vq": vq.loss, "perplexity": vq.perplexity}


def train_vqvae(profile: Profile | None = None, train_images: torch.Tensor | None = None,
                val_images: torch.Tensor | None = None, folder: Path | None = None, steps: int | None = None,
                stop_after: int | None = None, resume: bool = True, progress: bool = True,
                batch_loss=vqvae_step, settings: dict | None = None) -> VQVAERun:
    """Train (or resume training) the profile's VQ-VAE on uint8 images (N, 3, S, S) (a tensor, or a streamed
    `FaceImages`), on the profile's device.

    `stop_after` ends the run early at that step (a checkpoint is written there), as an interruption would;
    `resume=False` starts over, replacing the checkpoint. Without images, the profile's dataset is loaded (and
    SynthFaces generated if missing). `batch_loss(model, x)` is one training step's loss (`vqvae_step`; a
    variant joins `settings`, which the checkpoint records, so a run of another variant is not resumed)."""
    profile = profile or get_profile()
    cfg = profile.vqvae
    steps = cfg.steps if steps is None else steps
    folder = Path(folder or vqvae_folder(profile))
    if train_images is None or val_images is None:
        from facegen.data.images import load_images

        train_images = load_images(profile, "train") if train_images is None else train_images
        val_images = load_images(profile, "valid") if val_images is None else val_images
    val_images = val_images[:VAL_IMAGES]

    torch.manual_seed(cfg.seed)
    # channels_last lets the CPU's oneDNN convolutions skip layout conversions: ~1.7x faster training here.
    model = VQVAE.from_profile(profile).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    with Engine("VQ-VAE", folder, steps, settings={**asdict(cfg), **(settings or {})}, val_every=cfg.val_every,
                items_per_step=cfg.batch_size, stop_after=stop_after, resume=resume, progress=progress) as engine:
        scheduler = cosine_with_warmup(optimizer, warmup=warmup_steps(engine.total, 100), total=engine.total)
        model, optimizer, scheduler = engine.prepare(model=model, optimizer=optimizer, scheduler=scheduler)
        batches = step_batches(train_images, engine.start, engine.end, cfg.batch_size, cfg.seed, engine.device,
                               profile.data.num_workers)
        model.train()
        for step, (_, batch) in zip(engine.steps(), batches):
            x = from_uint8(batch).contiguous(memory_format=torch.channels_last)
            with engine.autocast():
                terms = batch_loss(model, x)
            engine.optimize(terms["loss"], optimizer, scheduler)
            engine.log(**terms, lr=scheduler.get_last_lr()[0])
            if engine.validating:
                plain = engine.unwrap(model)
                engine.validation.append({"step": engine.done, **evaluate(plain, val_images)})
                if engine.is_main:
                    save_image_grid(_recon_pairs(plain, val_images[:8]),
                                    folder / "samples" / f"step_{engine.done:06d}.png", nrow=8)
        run = VQVAERun(model=engine.unwrap(model), folder=folder, history=engine.history,
                       validation=engine.validation, seconds=engine.seconds,
                       images_per_second=engine.items_per_second)
        if engine.saves_trained(folder / MODEL_DIR):
            save_trained(run, recipe=training_recipe(cfg) | (settings or {}))
    return run


def perceptual_vqvae_step(model: VQVAE, x: torch.Tensor, perceptual: torch.nn.Module,
                          weight: float) -> dict[str, torch.Tensor]:
    """`vqvae_step` plus a perceptual term: loss = MSE + VQ loss + weight * mean perceptual distance (issue 16's
    first lever; taming's VQGAN objective without the GAN). `perceptual` maps (reconstructions, images) to (B,)
    distances (`facegen.vqgan_losses.make_perceptual_loss`), taken in fp32 like the reconstruction error."""
    recon, vq = model(x)
    recon_loss = F.mse_loss(recon.float(), x.float())
    distance = perceptual(recon.float(), x.float()).mean()
    return {"loss": recon_loss + vq.loss + weight * distance, "recon": recon_loss, "vq": vq.loss,
            "perceptual": distance, "perplexity": vq.perplexity}


def train_vqvae_perceptual(profile: Profile | None = None, train_images: torch.Tensor | None = None,
                           val_images: torch.Tensor | None = None, folder: Path | None = None,
                           steps: int | None = None, weight: float = 0.1, classifier: torch.nn.Module | None = None,
                           stop_after: int | None = None, resume: bool = True, progress: bool = True) -> VQVAERun:
    """`train_vqvae` with `perceptual_vqvae_step`: the same model, data, batches, schedule and validation, with
    `weight` times a perceptual distance added to the loss. The distance is LPIPS when it is available locally, else
    the feature distance of `classifier` (default: the profile's attribute classifier, artifacts/<profile>/classifier)
    -- so judge such a model with another network (`facegen.pipeline.ensure_judge_classifier`), never this one.

    Off unless called: the profile's own VQ-VAE (`train_vqvae`, notebooks 02-07) has no perceptual term. It runs
    `train_vqvae` with this step; the weight and the distance's name join the run's settings, so a checkpoint of
    another weight is refused on resume. No default folder: pass one (e.g. benchmarks/bench_tokenizers.py's)."""
    from facegen.vqgan_losses import make_perceptual_loss

    profile = profile or get_profile()
    if folder is None:
        raise ValueError("train_vqvae_perceptual: pass a folder (the profile's vqvae folder holds the plain VQ-VAE)")
    if classifier is None:
        from facegen.classifier import classifier_folder, load_classifier

        classifier = load_classifier(classifier_folder(profile))
    perceptual = make_perceptual_loss(classifier).to(profile.device)
    return train_vqvae(profile, train_images, val_images, folder, steps, stop_after, resume, progress,
                       batch_loss=functools.partial(perceptual_vqvae_step, perceptual=perceptual, weight=weight),
                       settings={"perceptual_weight": weight, "perceptual": perceptual.name})


@torch.no_grad()
def _recon_pairs(model: VQVAE, images: torch.Tensor) -> torch.Tensor:
    """Originals on the first row, reconstructions on the second (on the CPU, for a figure)."""
    was_training = model.training
    model.eval()
    x = from_uint8(images.to(next(model.parameters()).device))
    recon = model(x)[0].clamp(-1, 1)
    model.train(was_training)
    return torch.cat([x, recon]).cpu()


def save_trained(run: VQVAERun, recipe: dict) -> Path:
    """The shareable model folder (config.json + model.safetensors, and the `recipe` it was trained with), swapped in
    whole so that an interrupted save never leaves half a model, plus the run's history, metrics and speed."""
    target = run.folder / MODEL_DIR
    with atomic_folder(target) as tmp:
        cpu_copy(run.model).save_pretrained(tmp)
        write_recipe(tmp, recipe)
    atomic_write_json(run.folder / "history.json", {"train": run.history, "validation": run.validation,
                                                     "seconds": run.seconds,
                                                     "images_per_second": run.images_per_second})
    return target



def load_vqvae(folder: Path, device: str = "cpu") -> VQVAE:
    """A trained VQ-VAE from a `save_pretrained` folder (or its parent artifact folder), loaded strictly, eval mode."""
    folder = Path(folder)
    if (folder / MODEL_DIR / "config.json").is_file():
        folder = folder / MODEL_DIR
    return load_model_folder(VQVAE, folder, "VQ-VAE", "train one with `facegen train-vqvae`").to(device).eval()
