"""Tokenization and GPT training speed on this machine, with the GPT's model FLOPs utilisation (MFU) measured against
the fp32 matmul peak of the same machine in the same run.

    python benchmarks/bench_gpt.py [--profile cpu] [--steps 12] [--n-layer L --n-embd D --n-head H --batch-size B]

- matmul peak: the best of several timed 1024x1024 @ 1024x1024 fp32 matmuls (2 n^3 FLOPs each): what this CPU's
  BLAS reaches on a large, friendly matmul, i.e. the ceiling a training step can approach;
- tokenization: `tokenize_split` on the profile's validation JPEGs (decoding, cropping and VQ-VAE encoding, as
  `facegen tokenize` does) with the profile's trained VQ-VAE (random weights if none is trained yet: speed does not
  depend on the weights);
- GPT training: the real optimizer step (`accumulate_gradients`, clipping, fused AdamW) on random sequences with the
  profile's batch size; tokens/s is from the median step time after two warm-up steps (robust to a neighbour's
  burst), counts all 277 positions of every sequence, and MFU = tokens/s x `training_flops_per_token` / the higher
  of the two peak measurements taken before and after.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from accelerate import Accelerator

from facegen.config import get_profile
from facegen.gpt import (GRAD_CLIP, accumulate_gradients, build_gpt, count_parameters, gpt_config, make_optimizer,
                         training_flops_per_token)
from facegen.tokens import Vocabulary


def matmul_peak_flops(n: int = 1024, repeats: int = 10) -> float:
    """Best fp32 FLOP/s of an n x n matmul over `repeats` timed runs (after a warm-up)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def tokenization_images_per_second(profile) -> tuple[float, int]:
    """Images/s of `tokenize_split` over the profile's validation split, read from its JPEGs."""
    from facegen.data.dataset import open_dataset
    from facegen.pipeline import ensure_synthfaces
    from facegen.tokenize_dataset import tokenize_split
    from facegen.vqvae import VQVAE
    from facegen.vqvae_training import load_vqvae, vqvae_folder

    ensure_synthfaces(profile, progress=False)
    folder = vqvae_folder(profile)
    vqvae = load_vqvae(folder) if folder.is_dir() else VQVAE.from_profile(profile)
    faces = open_dataset(profile, "valid")
    tokenize_split(vqvae, faces, progress=False)  # once to warm the page cache and oneDNN's kernel choice
    start = time.perf_counter()
    tokenize_split(vqvae, faces, progress=False)
    return len(faces) / (time.perf_counter() - start), len(faces)


def gpt_training_tokens_per_second(profile, vocab: Vocabulary, steps: int) -> float:
    cfg = profile.gpt
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum)
    torch.manual_seed(0)
    model = build_gpt(profile, vocab)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    generator = torch.Generator().manual_seed(0)

    def micro_batch() -> torch.Tensor:
        codes = torch.randint(0, vocab.codebook_size, (cfg.batch_size, vocab.n_image_tokens), generator=generator)
        attributes = torch.where(torch.rand(cfg.batch_size, 40, generator=generator) < 0.5, -1, 1)
        return vocab.encode_batch(attributes, codes)

    seconds = []
    for step in range(steps + 2):
        batches = [micro_batch() for _ in range(cfg.grad_accum)]
        start = time.perf_counter()
        accumulate_gradients(accelerator, model, batches, vocab)
        accelerator.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds.append(time.perf_counter() - start)
    median = float(np.median(seconds[2:]))  # the first two steps (allocator, oneDNN kernel choice) are warm-up
    return cfg.grad_accum * cfg.batch_size * vocab.length / median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--n-layer", type=int)
    parser.add_argument("--n-embd", type=int)
    parser.add_argument("--n-head", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--skip-tokenization", action="store_true")
    args = parser.parse_args()
    overrides = {k: v for k, v in (("n_layer", args.n_layer), ("n_embd", args.n_embd), ("n_head", args.n_head),
                                   ("batch_size", args.batch_size)) if v is not None}
    profile = get_profile(args.profile).replace(gpt=overrides)
    vocab = Vocabulary.for_profile(profile)
    print(f"profile {profile.name!r}, {torch.get_num_threads()} threads")

    peak_before = matmul_peak_flops()
    print(f"fp32 matmul peak: {peak_before / 1e9:.1f} GFLOP/s (best 1024^3 matmul)")
    if not args.skip_tokenization:
        speed, n = tokenization_images_per_second(profile)
        print(f"tokenization: {speed:.1f} images/s ({n} validation JPEGs: decode, crop, VQ-VAE encode)")

    config = gpt_config(profile, vocab)
    cfg = profile.gpt
    params = count_parameters(config)["total"]
    flops = training_flops_per_token(config)
    tokens = gpt_training_tokens_per_second(profile, vocab, args.steps)
    peak_after = matmul_peak_flops()
    peak = max(peak_before, peak_after)  # the higher one: a busy machine lowers a measurement, never raises it
    mfu = tokens * flops / peak
    print(f"GPT {cfg.n_layer}L/{cfg.n_embd}d/{cfg.n_head}h ({params:,} params, {flops / 1e6:.1f} MFLOP per "
          f"training token), batch {cfg.batch_size} x accumulation {cfg.grad_accum}, fp32")
    print(f"fp32 matmul peak after the run: {peak_after / 1e9:.1f} GFLOP/s (a large drift means a busy machine)")
    print(f"GPT training (median step): {tokens:,.0f} tokens/s = {tokens / vocab.length:.1f} sequences/s; "
          f"{tokens * flops / 1e9:.1f} GFLOP/s = {mfu:.0%} MFU of the higher measured matmul peak")


if __name__ == "__main__":
    main()
