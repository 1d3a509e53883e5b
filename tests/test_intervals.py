"""Confidence intervals of the evaluation (facegen.metrics: proportion_interval, bootstrap_interval,
accuracy_report, frechet_with_interval), checked against hand formulas and invariants."""

import math

import pytest
import torch

from facegen import metrics


def wilson_by_hand(k, n, z=1.959963984540054):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(8, 10), (0, 20), (20, 20), (412, 500)])
def test_proportion_interval_is_wilsons(k, n):
    low, high = metrics.proportion_interval(k, n)
    assert (low, high) == pytest.approx(wilson_by_hand(k, n), abs=1e-9)
    assert 0 <= low <= k / n <= high <= 1


def test_proportion_interval_edges():
    assert all(math.isnan(v) for v in metrics.proportion_interval(0, 0))
    with pytest.raises(ValueError, match="0..n = 3"):
        metrics.proportion_interval(4, 3)


def test_bootstrap_interval_of_a_mean_matches_the_normal_approximation():
    values = torch.randn(2000, generator=torch.Generator().manual_seed(0)).double()
    low, high = metrics.bootstrap_interval(lambda rows: float(values[rows].mean()), len(values))
    half = 1.96 * float(values.std()) / math.sqrt(len(values))
    assert low < float(values.mean()) < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)


def test_accuracy_report_counts_intervals_and_present_only():
    attributes = ("A", "B")
    targets = torch.tensor([[1, 0], [1, -1], [0, 1], [0, -1]])
    predicted = torch.tensor([[1, 0], [0, 1], [0, 0], [0, 1]])
    report = metrics.accuracy_report(predicted, targets, attributes, resamples=200)
    a, b = report["rows"]
    assert (a["n"], a["accuracy"], a["n_present"], a["present"]) == (4, 0.75, 2, 0.5)
    assert (b["n"], b["accuracy"], b["n_present"], b["present"]) == (2, 0.5, 1, 0.0)
    assert (a["n_absent"], a["absent"], b["n_absent"], b["absent"]) == (2, 1.0, 1, 1.0)
    assert a["interval"] == pytest.approx(wilson_by_hand(3, 4))
    assert a["absent_interval"] == pytest.approx(wilson_by_hand(2, 2))
    assert b["present_interval"] == pytest.approx(wilson_by_hand(0, 1))
    assert report["mean"][0] == pytest.approx((0.75 + 0.5) / 2)
    assert report["present_mean"][0] == pytest.approx((0.5 + 0.0) / 2)
    low, high = report["mean"][1]
    assert low <= report["mean"][0] <= high


def test_accuracy_report_leaves_out_attributes_never_asked():
    report = metrics.accuracy_report(torch.ones(3, 2), torch.tensor([[1, -1]] * 3), ("A", "B"), resamples=50)
    assert [r["attribute"] for r in report["rows"]] == ["A"] and report["mean"][0] == 1.0


def test_frechet_with_interval_value_is_the_plain_distance_and_the_interval_its_spread():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 4, generator=g), torch.randn(400, 4, generator=g) + 0.5
    value, (low, high) = metrics.frechet_with_interval(a, b, resamples=60)
    assert value == pytest.approx(metrics.frechet_distance(*metrics.feature_statistics(a),
                                                           *metrics.feature_statistics(b)))
    assert low < value < high and value - low == pytest.approx(high - value)
    # the interval describes how the distance varies between samples: check against fresh samples
    fresh = []
    for seed in range(1, 41):
        g = torch.Generator().manual_seed(seed)
        x, y = torch.randn(400, 4, generator=g), torch.randn(400, 4, generator=g) + 0.5
        fresh.append(metrics.frechet_distance(*metrics.feature_statistics(x), *metrics.feature_statistics(y)))
    fresh = torch.tensor(fresh)
    assert (high - low) / 2 == pytest.approx(1.96 * float(fresh.std()), rel=0.5)


def test_frechet_with_interval_needs_a_few_rows():
    with pytest.raises(ValueError, match="at least 4"):
        metrics.frechet_with_interval(torch.randn(3, 2), torch.randn(10, 2))


class _MeanColourClassifier(torch.nn.Module):
    """Says "red" where the red channel's mean is above 0 and "green" likewise: answers computable by hand."""
    attributes = ("red", "green")

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images):
        return images[:, :2].mean(dim=(2, 3))


def test_attribute_agreement_counts_faces_whose_answer_survives():
    originals = torch.full((10, 3, 8, 8), 0.5)  # every original: red yes, green yes
    originals[:4, 1] = -0.5  # faces 0-3: green no
    reconstructions = originals.clone()
    reconstructions[:3, 0] = -0.5  # the tokens lose red on faces 0-2
    reconstructions[9, 1] = -0.5  # and green on face 9
    reconstructions[0, 1] = 0.5  # face 0 gains green: also a change of answer
    result = metrics.attribute_agreement(_MeanColourClassifier(), originals, reconstructions)
    assert result["share"] == {"red": 0.7, "green": 0.8}
    assert result["agree"].shape == (10, 2) and result["agree"][:3, 0].sum() == 0 and not result["agree"][9, 1]
    assert result["interval"]["red"] == metrics.proportion_interval(7, 10)
    assert result["mean"] == pytest.approx(0.75) and result["lowest"] == ("red", 0.7)
    assert metrics.attribute_agreement(_MeanColourClassifier(), originals, originals)["share"] == {"red": 1.0,
                                                                                                  "green": 1.0}
    with pytest.raises(ValueError, match="10 originals but 9 reconstructions"):
        metrics.attribute_agreement(_MeanColourClassifier(), originals, reconstructions[:9])
