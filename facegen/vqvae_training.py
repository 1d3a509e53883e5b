"""Training the VQ-VAE: a plain loop the course can read top to bottom.

loss = MSE(reconstruction, image) + VQ loss (commitment, plus the codebook term when the codebook is not EMA-updated).
Every `val_every` steps: PSNR, SSIM and codebook usage on validation images, a reconstruction grid, and a checkpoint
holding model, optimizer, scheduler, step, history and RNG states, so an interrupted run resumes exactly where it
stopped. Batches are a pure function of (seed, step), so resuming needs no data-loader state.
AMP (bf16 autocast) is used on CUDA only: most CPUs emulate bf16, far slower than fp32 (notebook 05 measures yours).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from facegen import metrics
from facegen.checkpoint import atomic_write_json, load_model_folder, load_checkpoint, save_checkpoint
from facegen.config import Profile, get_profile
from facegen.data.transforms import from_uint8
from facegen.viz import save_image_grid
from facegen.vqvae import VQVAE

CHECKPOINT = "checkpoint.pt"
MODEL_DIR = "model"  # save_pretrained folder: config.json + model.safetensors


@dataclass
class VQVAERun:
    model: VQVAE
    folder: Path
    history: list[dict] = field(default_factory=list)  # one row per logged step: step, loss, recon, vq, lr
    validation: list[dict] = field(default_factory=list)  # one row per validation: step, psnr, ssim, usage, ...
    seconds: float = 0.0
    images_per_second: float = 0.0


def vqvae_folder(profile: Profile) -> Path:
    return profile.artifacts / "vqvae"


def batch_indices(step: int, n: int, batch_size: int, seed: int) -> torch.Tensor:
    """Indices of the batch at `step`: epoch-wise random permutations seeded by (seed, epoch), so any step's batch
    can be recomputed after a restart."""
    per_epoch = max(n // batch_size, 1)
    epoch, position = divmod(step, per_epoch)
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=generator)
    return order[position * batch_size:(position + 1) * batch_size]


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to 10% of the peak learning rate."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def record_speed(run, began: float, steps_done: int, batch_size: int) -> None:
    """At the end of a (possibly resumed) training call: add its wall time since `began` (a `time.perf_counter()`
    value) to `run.seconds`, and set `run.images_per_second` from the `steps_done` steps of `batch_size` it ran."""
    elapsed = time.perf_counter() - began
    run.seconds += elapsed
    run.images_per_second = steps_done * batch_size / elapsed if steps_done > 0 else 0.0


@torch.no_grad()
def evaluate(model: VQVAE, images: torch.Tensor, batch_size: int = 128) -> dict:
    """PSNR, SSIM (images in [-1, 1]) and codebook usage of `model` on uint8 images (N, 3, H, W)."""
    was_training = model.training
    model.eval()
    psnrs, ssims, codes = [], [], []
    for start in range(0, len(images), batch_size):
        x = from_uint8(images[start:start + batch_size])
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


def _autocast(device: str):
    if device == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def train_vqvae(profile: Profile | None = None, train_images: torch.Tensor | None = None,
                val_images: torch.Tensor | None = None, folder: Path | None = None, steps: int | None = None,
                stop_after: int | None = None, resume: bool = True, progress: bool = True,
                device: str | None = None) -> VQVAERun:
    """Train (or resume training) the profile's VQ-VAE on uint8 images (N, 3, S, S).

    `stop_after` ends the run early at that step (a checkpoint is written there), as an interruption would.
    Without images, the profile's dataset is loaded (and SynthFaces generated if missing)."""
    profile = profile or get_profile()
    cfg = profile.vqvae
    steps = steps or cfg.steps
    folder = Path(folder or vqvae_folder(profile))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if train_images is None or val_images is None:
        from facegen.data.images import load_images

        train_images = load_images(profile, "train") if train_images is None else train_images
        val_images = load_images(profile, "valid") if val_images is None else val_images
    val_images = val_images[:512]

    torch.manual_seed(cfg.seed)
    # channels_last lets the CPU's oneDNN convolutions skip layout conversions: ~1.7x faster training here.
    model = VQVAE.from_profile(profile).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = cosine_with_warmup(optimizer, warmup=min(100, steps // 10 + 1), total=steps)
    run = VQVAERun(model=model, folder=folder)
    start = 0
    checkpoint = folder / CHECKPOINT
    if resume and checkpoint.is_file():
        state = load_checkpoint(checkpoint, model=model, optimizer=optimizer, scheduler=scheduler)
        start, run.history, run.validation = state["step"], state["history"], state["validation"]
        run.seconds = state.get("seconds", 0.0)

    end = min(steps, stop_after) if stop_after is not None else steps
    model.train()
    began = time.perf_counter()
    bar = tqdm(range(start, end), initial=start, total=steps, desc="VQ-VAE", disable=not progress)
    for step in bar:
        batch = train_images[batch_indices(step, len(train_images), cfg.batch_size, cfg.seed)]
        x = from_uint8(batch).to(device, memory_format=torch.channels_last)
        with _autocast(device):
            recon, vq = model(x)
            recon_loss = F.mse_loss(recon.float(), x)
            loss = recon_loss + vq.loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        run.history.append({"step": step + 1, "loss": loss.item(), "recon": recon_loss.item(),
                            "vq": vq.loss.item(), "perplexity": float(vq.perplexity),
                            "lr": scheduler.get_last_lr()[0]})
        bar.set_postfix(recon=f"{recon_loss.item():.4f}", ppl=f"{float(vq.perplexity):.0f}")
        done = step + 1
        if done % cfg.val_every == 0 or done == end:
            run.validation.append({"step": done, **evaluate(model, val_images.to(device))})
            save_image_grid(_recon_pairs(model, val_images[:8].to(device)), folder / "samples" / f"step_{done:06d}.png",
                            nrow=8)
            save_checkpoint(checkpoint, model=model, optimizer=optimizer, scheduler=scheduler, step=done,
                            history=run.history, validation=run.validation,
                            seconds=run.seconds + time.perf_counter() - began)
    bar.close()
    record_speed(run, began, end - start, cfg.batch_size)
    if end == steps:
        save_trained(run)
    return run


@torch.no_grad()
def _recon_pairs(model: VQVAE, images: torch.Tensor) -> torch.Tensor:
    """Originals on the first row, reconstructions on the second."""
    was_training = model.training
    model.eval()
    x = from_uint8(images)
    recon = model(x)[0].clamp(-1, 1)
    model.train(was_training)
    return torch.cat([x, recon])


def save_trained(run: VQVAERun) -> Path:
    """The shareable model folder (config.json + model.safetensors) plus the run's history and metrics."""
    target = run.folder / MODEL_DIR
    run.model.save_pretrained(target)
    atomic_write_json(run.folder / "history.json", {"train": run.history, "validation": run.validation,
                                                     "seconds": run.seconds})
    return target


def load_vqvae(folder: Path, device: str = "cpu") -> VQVAE:
    """A trained VQ-VAE from a `save_pretrained` folder (or its parent artifact folder), loaded strictly, eval mode."""
    folder = Path(folder)
    if (folder / MODEL_DIR / "config.json").is_file():
        folder = folder / MODEL_DIR
    return load_model_folder(VQVAE, folder, "VQ-VAE", "train one with `facegen train-vqvae`").to(device).eval()
