"""What the GPT achieves on each tokenizer's tokens: the profile's GPT trained on VQ and on FSQ tokens, judged alike.

    python benchmarks/bench_tokenizer_gpt.py [--profile cpu] [--quantizers vq fsq] [--requests 500] [--scale 3]
        [--gpt-seed K] [--gpt-steps N] [--codebook-size K]

For each quantizer the profile's VQ-VAE with that bottleneck (`profile.replace(vqvae={"quantizer": ...})`), the
dataset tokenized by it and the profile's GPT trained on those tokens are built where missing, exactly as the
notebooks build the VQ ones (`ensure_gpt`: artifacts/<profile>/{vqvae,tokens,gpt} for VQ, ...-fsq for FSQ; the
course's own VQ artifacts are reused as they are). Then the held-out evaluation of notebook 06, the same for every
tokenizer:

- requests: the attribute rows of the first `--requests` test-split faces, seed 1, guidance scale `--scale`
  (notebook 06 chose 3 on development requests of the VQ GPT; FSQ gets the same scale, unchosen);
- judge: `ensure_judge_classifier` (in no loss, nothing chosen on it), per attribute, asked present and all asked,
  with 95% Wilson intervals, and the means with bootstrap intervals over requests (`metrics.accuracy_report`);
- the Frechet distance in the judge's features from the test faces, with its half-sampling interval, beside the
  floor (test faces vs as many training faces);
- the reference of what the tokens keep: the judge on each tokenizer's reconstructions of the same test faces;
- the GPT's validation loss in bits per image (the tokens' own entropy under the model: lower = easier to write).

`--gpt-seed K` (K other than the profile's `gpt.seed`) trains a second GPT per tokenizer from seed K, same recipe and
tokens, into artifacts/bench-tokenizer-gpt/<profile>/gpt-<quantizer>-seed<K> (loaded if finished), and judges it the
same way: how much of a difference between tokenizers is the GPT run's luck. `--gpt-steps N` (N other than the
profile's `gpt.steps`) does the same with a GPT trained for N steps, the learning-rate schedule stretched to them
(folders and files named ...-steps<N>; with `--gpt-seed`, both): what more compute than notebook 05's buys.

`--codebook-size K` gives the VQ-VAE K codes instead of the profile's number. Its folders are named like the
profile's (artifacts/<profile>/vqvae, tokens, gpt), so run it with FACEGEN_ARTIFACTS pointing at another root, where
a VQ-VAE trained with K codes can be copied into <root>/<profile>/vqvae (e.g. from `bench_tokenizers.py`'s
`codes2048` run) and the classifiers linked; the script refuses to run on the course's own artifacts.

Prints one table per quantizer and a side-by-side of the present-only accuracy; writes results.json and faces.png
(16 guided samples per quantizer, same requests; results-seed<K>.json and faces-seed<K>.png for another GPT seed)
under artifacts/bench-tokenizer-gpt/<profile>/.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
from held_out import held_out_set

from facegen import metrics
from facegen.config import get_profile
from facegen.course import describe_machine
from facegen.data.transforms import from_uint8
from facegen.gpt import MODEL_DIR, gpt_folder, load_gpt, train_gpt
from facegen.pipeline import ensure_gpt, ensure_tokens, ensure_vqvae
from facegen.sampling import sample_faces
from facegen.viz import save_image_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--quantizers", nargs="+", default=["vq", "fsq"], choices=["vq", "fsq", "l2"])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--scale", type=float, default=3.0)
    parser.add_argument("--gpt-seed", type=int, default=None, help="train and judge GPTs from this seed instead")
    parser.add_argument("--gpt-steps", type=int, default=None, help="train and judge GPTs of this many steps instead")
    parser.add_argument("--codebook-size", type=int, default=None, help="the VQ-VAE's number of codes")
    parser.add_argument("--out", type=Path, default=None, help="default: artifacts/bench-tokenizer-gpt/<profile>")
    args = parser.parse_args()

    base = get_profile(args.profile)
    if args.codebook_size is not None and args.codebook_size != base.vqvae.codebook_size:
        if "FACEGEN_ARTIFACTS" not in os.environ:
            raise SystemExit("--codebook-size: set FACEGEN_ARTIFACTS to another root first; the VQ-VAE, tokens and GPT "
                             f"with {args.codebook_size} codes would otherwise replace the course's in {base.artifacts}")
        base = base.replace(vqvae={"codebook_size": args.codebook_size})
    out = args.out or base.artifacts.parent / "bench-tokenizer-gpt" / base.name
    print(f"{describe_machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; profile {base.name!r}; "
          f"{args.requests} held-out requests (test split), seed 1, guidance scale {args.scale:g}", flush=True)

    n = args.requests
    held_out = held_out_set(base, n)
    judge, test_images, requests, targets = held_out.judge, held_out.test_images, held_out.requests, held_out.targets
    test_features, floor = held_out.test_features, held_out.floor
    real = metrics.accuracy_report(metrics.classifier_outputs(judge, test_images[:n]) > 0, targets, judge.attributes)
    print(f"judge on the real test faces: {real['mean'][0]:.1%} of all asked, {real['present_mean'][0]:.1%} of those "
          f"present; Frechet floor (test vs train, judge features) {floor[0]:.1f} "
          f"[{floor[1][0]:.1f}, {floor[1][1]:.1f}]", flush=True)

    other = {}  # the GPT's settings that differ from the profile's: its own folder, never the profile's GPT
    if args.gpt_seed is not None and args.gpt_seed != base.gpt.seed:
        other["seed"] = args.gpt_seed
    if args.gpt_steps is not None and args.gpt_steps != base.gpt.steps:
        other["steps"] = args.gpt_steps
    suffix = "".join(f"-{key}{value}" for key, value in other.items())
    results, grids = {}, [from_uint8(test_images[:16])]
    for quantizer in args.quantizers:
        profile = base.replace(vqvae={"quantizer": quantizer})
        started = time.perf_counter()
        loaded = ensure_gpt(profile, device="cpu")
        folder = gpt_folder(profile)
        if other:  # the same recipe and tokens, another seed or length: its own folder
            folder = out / f"gpt-{quantizer}{suffix}"
            if not (folder / MODEL_DIR).exists():
                train_gpt(profile.replace(gpt=other), splits=ensure_tokens(profile, device="cpu"),
                          folder=folder, vqvae_fingerprint=loaded.metadata["vqvae"]["fingerprint"])
            loaded = load_gpt(folder, device="cpu")
        built = time.perf_counter() - started
        vqvae = ensure_vqvae(profile, device="cpu")
        history = json.loads((folder / "history.json").read_text())
        val_loss = history["validation"][-1]["val_loss"]
        rebuilt = metrics.round_trip(vqvae, test_images[:n])
        keep = metrics.accuracy_report(metrics.classifier_outputs(judge, rebuilt) > 0, targets, judge.attributes)
        started = time.perf_counter()
        faces = sample_faces(loaded.model, loaded.vocab, vqvae, n, attributes=requests, guidance_scale=args.scale,
                             seed=1, progress=True)
        sampling = time.perf_counter() - started
        report = metrics.accuracy_report(metrics.classifier_outputs(judge, faces) > 0, targets, judge.attributes)
        fd = metrics.frechet_with_interval(metrics.classifier_outputs(judge, faces, features=True), test_features)
        grids.append(faces[:16])
        results[quantizer] = {"report": report, "tokens_keep": keep, "frechet": fd, "val_loss_nats": val_loss,
                              "bits_per_image": 256 * val_loss / math.log(2), "build_seconds": built,
                              "sampling_seconds": sampling}
        print(f"\n{quantizer}: GPT validation loss {val_loss:.3f} nats/token = {256 * val_loss / math.log(2):,.0f} "
              f"bits/image; sampled {n} faces in {sampling:.0f} s; built/loaded in {built:.0f} s", flush=True)
        print(f"  guided s={args.scale:g}: all asked {report['mean'][0]:.1%} [{report['mean'][1][0]:.1%}, "
              f"{report['mean'][1][1]:.1%}], asked present {report['present_mean'][0]:.1%} "
              f"[{report['present_mean'][1][0]:.1%}, {report['present_mean'][1][1]:.1%}]; Frechet (judge) "
              f"{fd[0]:.1f} [{fd[1][0]:.1f}, {fd[1][1]:.1f}] = {fd[0] / floor[0]:.1f}x the floor", flush=True)
        print(f"  its tokens keep (judge on reconstructions): all {keep['mean'][0]:.1%}, present "
              f"{keep['present_mean'][0]:.1%}", flush=True)

    print(f"\nasked present, per attribute (judge; 95% Wilson interval); 'keep' = the same faces' reconstructions")
    header = f"{'attribute':<20} {'n':>4} {'real':>6} " + " ".join(
        f"{q + ' keep':>10} {q + ' sampled':>22}" for q in args.quantizers)
    print(header)
    for j, row in enumerate(real["rows"]):
        cells = []
        for q in args.quantizers:
            keep, samp = results[q]["tokens_keep"]["rows"][j], results[q]["report"]["rows"][j]
            lo, hi = samp["present_interval"]
            sampled = f"{samp['present']:.1%} [{lo:.0%}, {hi:.0%}]"
            cells.append(f"{keep['present']:>10.1%} {sampled:>22}")
        print(f"{row['attribute']:<20} {row['n_present']:>4} {row['present']:>6.1%} " + " ".join(cells))

    out.mkdir(parents=True, exist_ok=True)
    png = save_image_grid(torch.cat(grids), out / f"faces{suffix}.png", nrow=16)
    (out / f"results{suffix}.json").write_text(json.dumps({
        "profile": base.name, "requests": n, "scale": args.scale, "seed": 1, "machine": describe_machine(),
        "gpt_seed": other.get("seed", base.gpt.seed), "gpt_steps": other.get("steps", base.gpt.steps),
        "date": time.strftime("%Y-%m-%d"), "real": real, "floor": floor, "results": results}, indent=1, default=str))
    print(f"\nwrote {png} (rows: test faces 0-15, then one row per quantizer: {', '.join(args.quantizers)}) and "
          f"{out / f'results{suffix}.json'}")


if __name__ == "__main__":
    main()
