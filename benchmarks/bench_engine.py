"""What the training engine costs: the VQ-VAE's real trainer (`train_vqvae`, on facegen/train/engine.py) against a
hand-written loop around the same step (`vqvae_step`, the same batches, Adam and schedule), in one process.

    python benchmarks/bench_engine.py [--profile cpu] [--steps 60] [--rounds 3]

Both run `--steps` steps of the profile's VQ-VAE on random uint8 images; the engine's run also does what the bare
loop does not: one validation on 8 images, a checkpoint, saving the model, its progress bar and logging. The two are
timed in alternating rounds and the medians compared, so a load that comes and goes hits both alike.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from facegen.config import get_profile
from facegen.data.transforms import from_uint8
from facegen.train.schedule import batch_indices, cosine_with_warmup, warmup_steps
from facegen.vqvae import VQVAE
from facegen.vqvae_training import train_vqvae, vqvae_step


def bare_loop_seconds(profile, images: torch.Tensor, steps: int) -> float:
    cfg = profile.vqvae
    torch.manual_seed(cfg.seed)
    model = VQVAE.from_profile(profile).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = cosine_with_warmup(optimizer, warmup=warmup_steps(steps, 100), total=steps)
    began = time.perf_counter()
    for step in range(steps):
        batch = images[batch_indices(step, len(images), cfg.batch_size, cfg.seed)]
        x = from_uint8(batch).contiguous(memory_format=torch.channels_last)
        loss = vqvae_step(model, x)["loss"]
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()  # what a hand-written loop prints or records each step
    return time.perf_counter() - began


def engine_seconds(profile, images: torch.Tensor, steps: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        began = time.perf_counter()
        train_vqvae(profile, images, images[:8], folder=folder, steps=steps, progress=False)
        return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    profile = get_profile(args.profile)
    profile = profile.replace(vqvae={"val_every": args.steps})
    images = torch.randint(0, 256, (256, 3, profile.data.image_size, profile.data.image_size), dtype=torch.uint8)
    engine_seconds(profile, images, 3)  # warm-up: imports, oneDNN kernel choice, accelerate's first Accelerator
    bare, engine = [], []
    for _ in range(args.rounds):
        bare.append(bare_loop_seconds(profile, images, args.steps))
        engine.append(engine_seconds(profile, images, args.steps))
    b, e = statistics.median(bare), statistics.median(engine)
    batch = profile.vqvae.batch_size
    print(f"VQ-VAE of profile {profile.name!r}, {args.steps} steps x {batch} images, {torch.get_num_threads()} threads, "
          f"median of {args.rounds} alternating rounds")
    print(f"hand-written loop: {b:.2f} s ({args.steps * batch / b:.1f} img/s)")
    print(f"train_vqvae on the engine: {e:.2f} s ({args.steps * batch / e:.1f} img/s, incl. one validation, "
          f"checkpoint and save)")
    print(f"engine / hand-written time: {e / b:.3f} (rounds: hand-written "
          f"{', '.join(f'{t:.1f}' for t in bare)} s; engine {', '.join(f'{t:.1f}' for t in engine)} s)")


if __name__ == "__main__":
    main()
