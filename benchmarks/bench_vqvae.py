"""VQ-VAE speed on this machine for a profile's model: training images/s and encoding images/s.

    python benchmarks/bench_vqvae.py [--profile cpu] [--steps 30] [--sizes 64x2 96x2 64x4] [--codebooks 1024]
        [--levers]

Training runs the real `train_vqvae` step (channels_last, batch size from the profile) on random images; encoding
runs `encode_indices` in batches of 256 (the batch size tokenization uses). Prints one line per figure.
`--sizes HIDDENxRESBLOCKS ...` times the training step of the profile's model at other widths and depths too, in one
run, each as a ratio to the profile's own: what a wider or deeper VQ-VAE costs in the notebook's time budget.
`--codebooks K ...` does the same for the profile's model with K codes instead of its own number (a larger
codebook makes every step search more codes).
`--levers` times the profile's step in one run three ways, as ratios to the first: channels_last (what
`train_vqvae` uses), contiguous NCHW, and channels_last with the model under `torch.compile` (its first steps,
where it compiles, are reported apart and not timed).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from facegen.config import get_profile
from facegen.vqvae import VQVAE


def training_images_per_second(model: torch.nn.Module, batch_size: int, steps: int,
                               memory_format: torch.memory_format = torch.channels_last, warmup: int = 3) -> float:
    """Training images per second of `model` (a VQVAE, or one under torch.compile) over `steps` steps of random
    faces, after `warmup` untimed steps (k-means init, oneDNN kernel selection, compilation)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()
    x = (torch.rand(batch_size, 3, 128, 128) * 2 - 1).contiguous(memory_format=memory_format)
    for step in range(steps + warmup):
        if step == warmup:
            start = time.perf_counter()
        recon, vq = model(x)
        loss = F.mse_loss(recon, x) + vq.loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - start)


def fresh_model(profile, memory_format: torch.memory_format = torch.channels_last) -> VQVAE:
    """The profile's VQ-VAE from seed 0, so that every timing in a run starts from the same weights."""
    torch.manual_seed(0)
    return VQVAE.from_profile(profile).to(memory_format=memory_format)


def time_levers(profile, steps: int) -> None:
    """The profile's training step as channels_last, as NCHW and compiled, each a fresh model from the same seed."""
    base = training_images_per_second(fresh_model(profile), profile.vqvae.batch_size, steps)
    print(f"lever channels_last (train_vqvae's): {base:.1f} images/s = 1.00x")
    nchw = training_images_per_second(fresh_model(profile, torch.contiguous_format), profile.vqvae.batch_size, steps,
                                      memory_format=torch.contiguous_format)
    print(f"lever NCHW: {nchw:.1f} images/s = {nchw / base:.2f}x")
    began = time.perf_counter()
    compiled = torch.compile(fresh_model(profile))
    training_images_per_second(compiled, profile.vqvae.batch_size, 1, warmup=5)  # compiles forward and backward
    first = time.perf_counter() - began
    speed = training_images_per_second(compiled, profile.vqvae.batch_size, steps)
    print(f"lever torch.compile (channels_last): {speed:.1f} images/s = {speed / base:.2f}x, after {first:.1f} s "
          f"for its first 6 steps (compilation)")


@torch.no_grad()
def encoding_images_per_second(model: VQVAE, n: int = 1024, batch_size: int = 256) -> float:
    model.eval()
    images = torch.rand(n, 3, 128, 128) * 2 - 1
    model.encode_indices(images[:batch_size])  # warm-up
    start = time.perf_counter()
    for i in range(0, n, batch_size):
        model.encode_indices(images[i:i + batch_size].contiguous(memory_format=torch.channels_last))
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--sizes", nargs="*", default=[], help="other (hidden)x(residual blocks) to time, e.g. 96x2")
    parser.add_argument("--codebooks", nargs="*", type=int, default=[], help="other codebook sizes to time")
    parser.add_argument("--levers", action="store_true", help="also time NCHW and torch.compile against channels_last")
    args = parser.parse_args()
    profile = get_profile(args.profile)
    model = fresh_model(profile)
    params = sum(p.numel() for p in model.parameters())
    print(f"VQ-VAE of profile {profile.name!r}: {params:,} parameters, {torch.get_num_threads()} threads")
    train = training_images_per_second(model, profile.vqvae.batch_size, args.steps)
    print(f"training: {train:.1f} images/s (batch {profile.vqvae.batch_size}, 128 px, fp32)")
    encode = encoding_images_per_second(model)
    print(f"encoding: {encode:.1f} images/s (batch 256) -> CelebA's 202,599 images in {202_599 / encode / 60:.1f} min")
    variants = {}
    for size in args.sizes:
        hidden, blocks = (int(part) for part in size.split("x"))
        variants[f"hidden {hidden}, {blocks} residual blocks"] = {"hidden": hidden, "n_res_blocks": blocks}
    for codes in args.codebooks:
        variants[f"{codes} codes"] = {"codebook_size": codes}
    for name, change in variants.items():
        other = fresh_model(profile.replace(vqvae=change))
        speed = training_images_per_second(other, profile.vqvae.batch_size, args.steps)
        print(f"training {name}: {sum(p.numel() for p in other.parameters()):,} "
              f"parameters, {speed:.1f} images/s = {train / speed:.2f}x the time of the profile's step")
    if args.levers:
        time_levers(profile, args.steps)


if __name__ == "__main__":
    main()
