"""Attribute accuracy and Frechet distance of guided samples, per sampling setting, with a per-attribute breakdown.

    python benchmarks/eval_guidance.py [--profile cpu] [--gpt FOLDER] [--n 96] \
        [--scales 2 3 4] [--temperatures 1.0 0.8] [--top-k 0]

Each setting samples `n` faces whose requests are the first `n` validation faces' attribute rows (all 18
attributes specified, as notebook 06 does), with seed 0, and scores them with the profile's attribute classifier:
the mean accuracy over attributes (facegen.metrics.attribute_accuracy), the same restricted to attributes asked
to be present, the worst attributes, and the Frechet distance to as many validation faces against the
validation-vs-train floor. `--gpt` scores another trained GPT folder (a `save_pretrained` folder with facegen.json).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from facegen import metrics
from facegen.attributes import requests_from_rows
from facegen.config import get_profile
from facegen.gpt import gpt_folder, load_gpt
from facegen.pipeline import ensure_classifier, ensure_vqvae, load_images
from facegen.sampling import sample_faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--gpt", type=Path, default=None, help="a trained GPT folder (default: the profile's)")
    parser.add_argument("--n", type=int, default=96)
    parser.add_argument("--scales", type=float, nargs="+", default=[2.0, 3.0, 4.0])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0])
    parser.add_argument("--top-k", type=int, nargs="+", default=[0], help="0 = no top-k")
    args = parser.parse_args()

    profile = get_profile(args.profile)
    loaded = load_gpt(args.gpt or gpt_folder(profile))
    model, vocab = loaded.model, loaded.vocab
    vqvae = ensure_vqvae(profile)
    classifier = ensure_classifier(profile)
    valid_images, valid_attributes = load_images(profile, "valid", attributes=True)
    train_images = load_images(profile, "train")
    asked = requests_from_rows(valid_attributes[:args.n], vocab.attributes)
    targets = torch.tensor([[r[name] for name in classifier.attributes] for r in asked])
    present_only = torch.where(targets == 1, 1, -1)
    floor = metrics.frechet_feature_distance(classifier, valid_images[:args.n], train_images[:args.n])
    print(f"GPT: {loaded.metadata.get('steps')} steps, validation loss {loaded.metadata.get('val_loss')}; "
          f"{args.n} requests; Frechet floor {floor:.2f}")
    for temperature in args.temperatures:
        for top_k in args.top_k:
            for scale in args.scales:
                began = time.perf_counter()
                faces = sample_faces(model, vocab, vqvae, args.n, asked, guidance_scale=scale, seed=0,
                                     temperature=temperature, top_k=top_k or None)
                result = metrics.attribute_accuracy(classifier, faces, targets)
                present = metrics.attribute_accuracy(classifier, faces, present_only)["mean"]
                fd = metrics.frechet_feature_distance(classifier, faces, valid_images[:args.n])
                worst = sorted(result["per_attribute"].items(), key=lambda kv: kv[1])[:5]
                print(f"T {temperature:.2f} top-k {top_k or '-':>3} s {scale:4.1f}: accuracy {result['mean']:.1%} "
                      f"present {present:.1%} FD {fd:.2f} ({fd / floor:.1f}x floor) "
                      f"[{time.perf_counter() - began:.0f} s] worst: "
                      + ", ".join(f"{k} {v:.0%}" for k, v in worst), flush=True)


if __name__ == "__main__":
    main()
