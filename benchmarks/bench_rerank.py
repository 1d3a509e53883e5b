"""Best of k (facegen/rerank.py) on notebook 06's held-out requests: what each extra candidate buys, in one run.

    python benchmarks/bench_rerank.py [--profile cpu] [--candidates 4] [--requests 500] [--scale 4]

Draws `--candidates` rounds of guided samples for the attribute rows of the first `--requests` test-split faces
(round c with seed 1 + c, so round 0 is notebook 06's held-out row at that scale), scores every face by
`request_log_likelihood` under the profile's attribute classifier (the ranker), and for j = 1 .. k keeps per
request the best of the first j rounds (exactly what `sample_best_of(..., candidates=j)` returns). Each is judged
like notebook 06's held-out evaluation by the judge classifier (`ensure_judge_classifier`, trained from another seed,
ranking nothing): accuracy over all attributes asked and over those asked present, with bootstrap intervals, the
attributes below 85% asked present, and the Frechet distance in the judge's features from the test faces beside its
floor (test vs as many training faces). Prints the seconds each round of sampling took.
"""

from __future__ import annotations

import argparse
import time

import torch

from held_out import held_out_set

from facegen import metrics
from facegen.config import get_profile
from facegen.course import describe_machine
from facegen.pipeline import ensure_classifier, ensure_gpt, ensure_vqvae
from facegen.rerank import request_log_likelihood
from facegen.sampling import sample_faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--scale", type=float, default=4.0, help="guidance scale (notebook 06 chose 4 for the cpu GPT)")
    args = parser.parse_args()
    profile = get_profile(args.profile)
    print(f"{describe_machine()}, {torch.get_num_threads()} threads; profile {profile.name!r}; {args.requests} "
          f"held-out requests, s = {args.scale:g}, {args.candidates} candidates each", flush=True)

    n = args.requests
    held_out, ranker = held_out_set(profile, n), ensure_classifier(profile, device="cpu")
    judge, requests, targets = held_out.judge, held_out.requests, held_out.targets
    test_features, floor = held_out.test_features, held_out.floor
    loaded, vqvae = ensure_gpt(profile, device="cpu"), ensure_vqvae(profile, device="cpu")

    rounds, scores = [], []
    for c in range(args.candidates):
        began = time.perf_counter()
        faces = sample_faces(loaded.model, loaded.vocab, vqvae, n, requests, guidance_scale=args.scale, seed=1 + c)
        print(f"round {c}: {n} faces in {time.perf_counter() - began:.0f} s", flush=True)
        rounds.append(faces)
        scores.append(request_log_likelihood(metrics.classifier_outputs(ranker, faces), requests, ranker.attributes))
    scores = torch.stack(scores, dim=1)

    print(f"\nfloor (test vs train, judge features): {floor[0]:.1f} [{floor[1][0]:.1f}, {floor[1][1]:.1f}]")
    for j in range(1, args.candidates + 1):
        chosen = scores[:, :j].argmax(dim=1)
        faces = torch.stack([rounds[int(c)][i] for i, c in enumerate(chosen)])
        report = metrics.accuracy_report(metrics.classifier_outputs(judge, faces) > 0, targets, judge.attributes)
        fd = metrics.frechet_with_interval(metrics.classifier_outputs(judge, faces, features=True), test_features)
        below = [f"{r['attribute']} {r['present']:.0%}" for r in report["rows"]
                 if r["n_present"] and r["present"] < 0.85]
        mean, present = report["mean"], report["present_mean"]
        print(f"best of {j}: all asked {mean[0]:.1%} [{mean[1][0]:.1%}, {mean[1][1]:.1%}], asked present "
              f"{present[0]:.1%} [{present[1][0]:.1%}, {present[1][1]:.1%}], Frechet (judge) {fd[0]:.1f} "
              f"[{fd[1][0]:.1f}, {fd[1][1]:.1f}] = {fd[0] / floor[0]:.2f}x the floor; below 85% asked present: "
              f"{len(below)} ({', '.join(below)})", flush=True)


if __name__ == "__main__":
    main()
