"""Notebook 06's held-out evaluation set, for the benchmarks that judge samples the same way (bench_rerank.py,
bench_tokenizer_gpt.py): the attribute rows of the first n test-split faces as requests, the judge classifier's
targets for them, its features of those test faces, and the Frechet floor (those faces against as many training
faces), each as the notebook computes them."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from facegen import metrics
from facegen.attributes import requests_from_rows
from facegen.pipeline import ensure_judge_classifier, load_images


@dataclass
class HeldOut:
    judge: torch.nn.Module
    test_images: torch.Tensor  # uint8 (n, 3, H, W)
    requests: list[dict[str, int]]
    targets: torch.Tensor  # (n, attributes) of 1 / 0, in the judge's attribute order
    test_features: torch.Tensor  # the judge's pooled features of the test faces
    floor: tuple[float, tuple[float, float]]  # Frechet distance test vs train in those features, with its interval


def held_out_set(profile, n: int) -> HeldOut:
    judge = ensure_judge_classifier(profile, device="cpu")
    test_images, test_attributes = load_images(profile, "test", attributes=True)
    train_images = load_images(profile, "train")
    requests = requests_from_rows(test_attributes[:n])
    targets = torch.stack([torch.tensor([r[name] for name in judge.attributes]) for r in requests])
    test_features = metrics.classifier_outputs(judge, test_images[:n], features=True)
    floor = metrics.frechet_with_interval(test_features,
                                          metrics.classifier_outputs(judge, train_images[:n], features=True))
    return HeldOut(judge, test_images[:n], requests, targets, test_features, floor)
