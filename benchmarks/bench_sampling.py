"""Sampling speed on this machine: faces/s for a batch with the KV cache, and the speed-up over `use_cache=False`
measured in the same run.

    python benchmarks/bench_sampling.py [--profile cpu] [--n 16] [--repeats 3]

The GPT is the profile's trained one (artifacts/<profile>/gpt/model) when it exists, else a freshly built one with
random weights: the speed of `generate()` does not depend on the weights, since the grammar fixes every sequence at
257 new tokens. Timed: `sample_codes` (prompt -> 256 codes + END, no VQ-VAE decoding), the median of `repeats` runs
with the cache (after a warm-up), one run without it (it is the slow one), and the median of `repeats` runs with
classifier-free guidance (which runs the unconditional prompt alongside, so about twice the work).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from facegen.config import get_profile
from facegen.gpt import METADATA_FILE, MODEL_DIR, build_gpt, gpt_folder, load_gpt
from facegen.sampling import sample_codes
from facegen.tokens import Vocabulary


def profile_gpt(profile):
    """(model, vocab, description): the trained GPT of the profile, or a random one of its size."""
    folder = gpt_folder(profile) / MODEL_DIR
    if (folder / METADATA_FILE).is_file():
        loaded = load_gpt(folder)
        return loaded.model, loaded.vocab, f"trained {profile.name} GPT from {folder}"
    vocab = Vocabulary.for_profile(profile)
    torch.manual_seed(0)
    return build_gpt(profile, vocab).eval(), vocab, f"random-weight {profile.name} GPT (no trained one in {folder})"


def seconds_per_batch(model, vocab, n: int, repeats: int, **settings) -> float:
    times = []
    for seed in range(repeats):
        start = time.perf_counter()
        sample_codes(model, vocab, n, seed=seed, **settings)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--n", type=int, default=16, help="faces per batch")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs with the cache (median)")
    args = parser.parse_args()

    profile = get_profile(args.profile)
    model, vocab, description = profile_gpt(profile)
    params = sum(p.numel() for p in model.parameters())
    cfg = model.config
    print(f"{description}: {cfg.n_layer} layers x {cfg.n_embd} wide, {params:,} parameters; batch {args.n}; "
          f"{torch.get_num_threads()} threads; load before {os.getloadavg()[0]:.1f}", flush=True)

    sample_codes(model, vocab, 2, seed=0)  # warm-up: first-call allocations and kernel choices are not timed
    cached = seconds_per_batch(model, vocab, args.n, args.repeats)
    print(f"KV cache:    {args.n / cached:6.2f} faces/s ({cached:.2f} s per batch of {args.n}, median of "
          f"{args.repeats})", flush=True)
    uncached = seconds_per_batch(model, vocab, args.n, 1, use_cache=False)
    print(f"no cache:    {args.n / uncached:6.2f} faces/s ({uncached:.2f} s per batch)", flush=True)
    print(f"KV-cache speed-up: {uncached / cached:.1f}x", flush=True)
    guided = seconds_per_batch(model, vocab, args.n, args.repeats, attributes={"Smiling": 1}, guidance_scale=2.0)
    print(f"KV cache + guidance 2.0: {args.n / guided:6.2f} faces/s ({guided:.2f} s per batch)", flush=True)


if __name__ == "__main__":
    main()
