"""Judging samples: the Frechet distance, feature statistics and the attribute-accuracy helpers of facegen.metrics."""

import numpy as np
import pytest
import torch
from torch import nn

from facegen import metrics
from facegen.classifier import AttributeClassifier




def random_covariance(size: int, seed: int, rank: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(size, rank or 2 * size, generator=g, dtype=torch.float64)
    return a @ a.T / a.shape[1]


def test_identical_gaussians_are_at_distance_zero():
    mu, sigma = torch.randn(20, dtype=torch.float64), random_covariance(20, seed=0)
    assert metrics.frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9)
    low_rank = random_covariance(20, seed=1, rank=5)  # singular: what few samples of many features give
    assert metrics.frechet_distance(mu, low_rank, mu, low_rank) == pytest.approx(0.0, abs=1e-6)


def test_diagonal_covariances_have_the_closed_form():
    g = torch.Generator().manual_seed(0)
    mu1, mu2 = torch.randn(8, generator=g), torch.randn(8, generator=g)
    s1, s2 = torch.rand(8, generator=g) + 0.1, torch.rand(8, generator=g) + 0.1
    expected = ((mu1 - mu2) ** 2).sum() + (s1 + s2 - 2 * (s1 * s2).sqrt()).sum()
    assert metrics.frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2)) == pytest.approx(expected.item(),
                                                                                               rel=1e-6)
    # one dimension by hand: N(0, 1) and N(3, 4) -> 9 + 1 + 4 - 2 * 2 = 10
    assert metrics.frechet_distance([0.0], [[1.0]], [3.0], [[4.0]]) == pytest.approx(10.0)


def test_full_covariances_match_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        mu1, mu2 = torch.randn(30, generator=g, dtype=torch.float64), torch.randn(30, generator=g, dtype=torch.float64)
        sigma1, sigma2 = random_covariance(30, seed=10 + seed), random_covariance(30, seed=20 + seed)
        root = linalg.sqrtm(sigma1.numpy() @ sigma2.numpy()).real  # the reference FID code (pytorch-fid) does this
        reference = float(((mu1 - mu2) ** 2).sum() + sigma1.trace() + sigma2.trace() - 2 * np.trace(root))
        assert metrics.frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(reference, rel=1e-8)


def test_frechet_distance_is_symmetric_and_checks_shapes():
    mu1, mu2 = torch.zeros(5), torch.ones(5)
    sigma1, sigma2 = random_covariance(5, seed=5), random_covariance(5, seed=6)
    assert metrics.frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(
        metrics.frechet_distance(mu2, sigma2, mu1, sigma1), rel=1e-9)
    with pytest.raises(ValueError, match=r"sigma2 has shape \(4, 4\)"):
        metrics.frechet_distance(mu1, sigma1, mu2, sigma2[:4, :4])
    with pytest.raises(ValueError, match="mu2 holds NaN"):
        metrics.frechet_distance(mu1, sigma1, mu2 * float("nan"), sigma2)


def test_feature_statistics_match_numpy():
    features = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
    mu, sigma = metrics.feature_statistics(features)
    assert mu.dtype == torch.float64
    np.testing.assert_allclose(mu.numpy(), features.numpy().mean(axis=0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(sigma.numpy(), np.cov(features.numpy(), rowvar=False), rtol=1e-6, atol=1e-7)
    assert metrics.feature_statistics(features[:, :1])[1].shape == (1, 1)
    with pytest.raises(ValueError, match="N >= 2"):
        metrics.feature_statistics(features[:1])


def test_frechet_feature_distance_uses_the_classifiers_pooled_features():
    torch.manual_seed(0)
    classifier = AttributeClassifier(width=4)
    images_a = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8)
    images_b = (torch.rand(10, 3, 32, 32) * 2 - 1) * 0.5  # floats in [-1, 1] work as well
    distance = metrics.frechet_feature_distance(classifier, images_a, images_b, batch_size=5)
    with torch.no_grad():
        classifier.eval()
        features_a = classifier.features(images_a.float() / 127.5 - 1)
        features_b = classifier.features(images_b)
    expected = metrics.frechet_distance(*metrics.feature_statistics(features_a),
                                        *metrics.feature_statistics(features_b))
    assert distance == pytest.approx(expected, rel=1e-5) and distance > 0
    assert metrics.frechet_feature_distance(classifier, images_a, images_a) == pytest.approx(0.0, abs=1e-6)


class PixelClassifier(nn.Module):
    """A stand-in classifier for hand examples: the logit of attribute j is channel j of the top-left pixel."""

    attributes = ("Bald", "Smiling", "Young")

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))  # gives the module a device

    def forward(self, images):
        return images[:, :3, 0, 0]

    def features(self, images):
        return images[:, :, 0, 0]


def pixel_images(logits: list[list[float]]) -> torch.Tensor:
    images = torch.zeros(len(logits), 3, 4, 4)
    images[:, :, 0, 0] = torch.tensor(logits)
    return images


def test_classifier_outputs_batches_converts_and_restores_the_mode():
    classifier = AttributeClassifier(width=4).train()
    images = torch.randint(0, 256, (7, 3, 32, 32), dtype=torch.uint8)
    logits = metrics.classifier_outputs(classifier, images, batch_size=3)
    assert classifier.training  # restored
    with torch.no_grad():
        expected = classifier.eval()(images.float() / 127.5 - 1)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)
    features = metrics.classifier_outputs(classifier, images, batch_size=7, features=True)
    assert features.shape == (7, classifier.n_features)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        metrics.classifier_outputs(classifier, images[0])


def test_requested_targets_from_a_dict_or_a_tensor():
    names = PixelClassifier.attributes
    assert metrics.requested_targets({"Smiling": 1, "Bald": 0, "Young": "?"}, 2, names).tolist() == [[0, 1, -1]] * 2
    assert metrics.requested_targets({"Young": None}, 1, names).tolist() == [[-1, -1, -1]]
    table = torch.tensor([[1, -1, 0]])
    assert torch.equal(metrics.requested_targets(table, 1, names), table)
    with pytest.raises(ValueError, match="CelebA's -1 means absent"):
        metrics.requested_targets({"Bald": -1}, 1, names)
    with pytest.raises(KeyError, match="'Male'"):
        metrics.requested_targets({"Male": 1}, 1, names)
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        metrics.requested_targets(table, 2, names)
    with pytest.raises(ValueError, match=r"values must be 1, 0 or -1.*2"):
        metrics.requested_targets(torch.tensor([[2, 0, 0]]), 1, names)


def test_prediction_accuracy_ignores_unspecified_and_averages_attributes():
    predicted = torch.tensor([[1, 0, 1], [1, 1, 0], [0, 1, 1], [0, 0, 0]])
    targets = torch.tensor([[1, -1, -1], [1, 1, -1], [1, 0, -1], [1, 0, -1]])
    result = metrics.prediction_accuracy(predicted, targets, ("Bald", "Smiling", "Young"))
    # Bald: 2 of 4 right; Smiling: 2 of 3 right (row 0 unspecified); Young: never specified, left out
    assert result["per_attribute"] == pytest.approx({"Bald": 0.5, "Smiling": 2 / 3})
    assert result["count"] == {"Bald": 4, "Smiling": 3}
    assert result["mean"] == pytest.approx((0.5 + 2 / 3) / 2)
    nothing = metrics.prediction_accuracy(predicted, torch.full_like(targets, -1), ("Bald", "Smiling", "Young"))
    assert nothing["per_attribute"] == {} and np.isnan(nothing["mean"])


def test_attribute_accuracy_by_hand():
    classifier = PixelClassifier()
    images = pixel_images([[2.0, -1.0, 0.5], [-3.0, 1.0, 0.0], [1.0, 1.0, -2.0]])
    # predictions (logit > 0): Bald 1 0 1, Smiling 0 1 1, Young 1 0 0
    result = metrics.attribute_accuracy(classifier, images, {"Bald": 1, "Smiling": 0})
    assert result["per_attribute"] == pytest.approx({"Bald": 2 / 3, "Smiling": 1 / 3})
    assert result["mean"] == pytest.approx(0.5)
    per_image = torch.tensor([[1, -1, 1], [0, 1, -1], [-1, 1, 0]])
    result = metrics.attribute_accuracy(classifier, images, per_image, batch_size=2)
    assert result["per_attribute"] == pytest.approx({"Bald": 1.0, "Smiling": 1.0, "Young": 1.0})
