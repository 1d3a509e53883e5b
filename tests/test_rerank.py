"""Best of k (facegen/rerank.py): the request score against a hand computation, and the choice of faces against a
ranker whose scores are known, then once end to end with a tiny GPT, VQ-VAE and classifier."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from facegen import rerank
from facegen.rerank import request_log_likelihood, sample_best_of
from test_sampling import VOCAB, tiny_gpt

NAMES = ("Eyeglasses", "Smiling", "Young")


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_request_log_likelihood_by_hand():
    logits = torch.tensor([[2.0, -1.0, 0.5], [2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    requests = [{"Eyeglasses": 1, "Smiling": 0},  # Young unset
                {"Eyeglasses": 0, "Smiling": "?", "Young": None},
                {}]
    expected = torch.tensor([log_sigmoid(2.0) + log_sigmoid(1.0), log_sigmoid(-2.0), 0.0])
    torch.testing.assert_close(request_log_likelihood(logits, requests, NAMES), expected)


def test_request_log_likelihood_prefers_the_image_that_agrees_with_the_request():
    """Invariant: flipping the sign of the logit of an attribute asked present lowers the score; flipping that of an
    unset one changes nothing."""
    logits = torch.tensor([[1.5, 0.2, -0.7]])
    request = [{"Eyeglasses": 1, "Smiling": 0}]
    base = request_log_likelihood(logits, request, NAMES)
    assert request_log_likelihood(logits * torch.tensor([-1.0, 1.0, 1.0]), request, NAMES) < base
    torch.testing.assert_close(request_log_likelihood(logits * torch.tensor([1.0, 1.0, -1.0]), request, NAMES), base)


@pytest.mark.parametrize("requests, logits_shape, error, message", [
    ([{"Glasses": 1}], (1, 3), KeyError, "Glasses"),
    ([{"Smiling": 2}], (1, 3), ValueError, "must be 0, 1, None or '\\?'"),
    ([{"Smiling": True}], (1, 3), ValueError, "must be 0, 1, None or '\\?'"),
    ([{"Smiling": 1}], (2, 3), ValueError, "logits must be \\(requests, attributes\\) = \\(1, 3\\)"),
])
def test_request_log_likelihood_refuses_what_it_cannot_score(requests, logits_shape, error, message):
    with pytest.raises(error, match=message):
        request_log_likelihood(torch.zeros(logits_shape), requests, NAMES)


class BrightnessRanker(nn.Module):
    """A stand-in classifier whose every attribute's logit is 10 x the image's mean pixel: asked present, the
    brightest candidate wins; asked absent, the darkest. One attribute, "Smiling", unless told otherwise."""

    def __init__(self, attributes=("Smiling",)):
        super().__init__()
        self.attributes = list(attributes)
        self.anchor = nn.Parameter(torch.zeros(()))  # classifier_outputs finds the device through the parameters

    def forward(self, x):
        return (10 * x.mean(dim=(1, 2, 3)) + self.anchor)[:, None].expand(-1, len(self.attributes))


def fake_sample_faces(calls):
    """sample_faces stand-in: request i, seed s -> a constant image of value ((7 * s + 3 * i) % 5 - 2) / 2."""
    def sample(model, vocab, vqvae, n, attributes, seed, **kwargs):
        calls.append({"n": n, "attributes": attributes, "seed": seed, **kwargs})
        values = torch.tensor([((7 * seed + 3 * i) % 5 - 2) / 2 for i in range(n)])
        return values[:, None, None, None].expand(n, 3, 4, 4).clone()
    return sample


def test_sample_best_of_keeps_the_best_scored_round_per_request(monkeypatch):
    calls = []
    monkeypatch.setattr(rerank, "sample_faces", fake_sample_faces(calls))
    requests = [{"Smiling": 1}, {"Smiling": 0}, {"Smiling": 1}, {}]
    result = sample_best_of(None, VOCAB, None, BrightnessRanker(), requests, candidates=3, seed=10,
                            guidance_scale=2.0)
    # rounds use seeds 10, 11, 12 with the caller's other settings
    assert [c["seed"] for c in calls] == [10, 11, 12] and all(c["guidance_scale"] == 2.0 for c in calls)
    assert all(c["n"] == 4 and c["attributes"] == requests for c in calls)
    value = torch.tensor([[((7 * s + 3 * i) % 5 - 2) / 2 for s in (10, 11, 12)] for i in range(4)])  # (request, round)
    expected_round = torch.stack([value[0].argmax(), value[1].argmin(), value[2].argmax(), torch.tensor(0)])
    assert result.chosen.tolist() == expected_round.tolist()
    torch.testing.assert_close(result.faces[:, 0, 0, 0], value[torch.arange(4), expected_round])
    torch.testing.assert_close(result.first[:, 0, 0, 0], value[:, 0])  # round 0 = the plain call
    assert result.scores.shape == (4, 3) and (result.scores[3] == 0).all()  # an empty request scores 0 everywhere


def test_sample_best_of_with_one_candidate_is_the_plain_sample(monkeypatch):
    monkeypatch.setattr(rerank, "sample_faces", fake_sample_faces([]))
    result = sample_best_of(None, VOCAB, None, BrightnessRanker(), [{"Smiling": 1}] * 3, candidates=1, seed=4)
    torch.testing.assert_close(result.faces, result.first)
    assert result.chosen.tolist() == [0, 0, 0]


@pytest.mark.parametrize("kwargs, message", [({"candidates": 0}, "candidates must be >= 1"),
                                             ({"requests": []}, "at least one request")])
def test_sample_best_of_refuses_bad_arguments(kwargs, message):
    arguments = {"requests": [{"Smiling": 1}], "candidates": 2} | kwargs
    with pytest.raises(ValueError, match=message):
        sample_best_of(None, VOCAB, None, BrightnessRanker(), **arguments)


def test_sample_best_of_end_to_end_with_a_tiny_gpt_vqvae_and_classifier():
    """The real sample_faces and classifier_outputs: round 0 is exactly sample_faces' batch, and every chosen face is
    the best-scored of the rounds, recomputed here from fresh samples."""
    from facegen.classifier import AttributeClassifier
    from facegen.metrics import classifier_outputs
    from facegen.sampling import sample_faces
    from facegen.vqvae import VQVAE

    torch.manual_seed(0)
    vqvae = VQVAE(codebook_size=8, embed_dim=4, hidden=8, n_res_blocks=1).eval()
    ranker = AttributeClassifier(attributes=VOCAB.attributes).eval()
    model = tiny_gpt()
    requests = [{"Smiling": 1}, {"Eyeglasses": 0, "Smiling": 0}, {"Eyeglasses": 1}]
    result = sample_best_of(model, VOCAB, vqvae, ranker, requests, candidates=3, seed=7, guidance_scale=2.0)
    rounds = [sample_faces(model, VOCAB, vqvae, 3, requests, seed=7 + c, guidance_scale=2.0) for c in range(3)]
    torch.testing.assert_close(result.first, rounds[0])
    scores = torch.stack([request_log_likelihood(classifier_outputs(ranker, faces), requests, VOCAB.attributes)
                          for faces in rounds], dim=1)
    torch.testing.assert_close(result.scores, scores)
    for i in range(3):
        torch.testing.assert_close(result.faces[i], rounds[int(scores[i].argmax())][i])


def test_sample_best_of_uses_the_given_first_round_instead_of_drawing_it(monkeypatch):
    calls = []
    monkeypatch.setattr(rerank, "sample_faces", fake_sample_faces(calls))
    requests = [{"Smiling": 1}, {"Smiling": 0}]
    drawn = sample_best_of(None, VOCAB, None, BrightnessRanker(), requests, candidates=3, seed=2)
    calls.clear()
    reused = sample_best_of(None, VOCAB, None, BrightnessRanker(), requests, candidates=3, seed=2, first=drawn.first)
    assert [c["seed"] for c in calls] == [3, 4]  # round 0 (seed 2) not drawn again
    torch.testing.assert_close(reused.faces, drawn.faces)
    torch.testing.assert_close(reused.scores, drawn.scores)
    with pytest.raises(ValueError, match=r"first must be round 0's faces, \(2, 3, H, W\)"):
        sample_best_of(None, VOCAB, None, BrightnessRanker(), requests, candidates=2, first=drawn.first[:1])


def test_sample_best_of_draws_its_rounds_with_the_sampler_it_is_given(monkeypatch):
    monkeypatch.setattr(rerank, "sample_faces", lambda *a, **k: pytest.fail("the default sampler was used"))
    calls, requests = [], [{"Smiling": 1}, {"Smiling": 0}]
    result = sample_best_of(None, VOCAB, None, BrightnessRanker(), requests, candidates=2, seed=3,
                            sampler=fake_sample_faces(calls), top_k=5)
    assert [(c["seed"], c["n"], c["attributes"], c["top_k"]) for c in calls] == [(3, 2, requests, 5),
                                                                                (4, 2, requests, 5)]
    value = torch.tensor([[((7 * s + 3 * i) % 5 - 2) / 2 for s in (3, 4)] for i in range(2)])
    torch.testing.assert_close(result.faces[:, 0, 0, 0], torch.stack([value[0].max(), value[1].min()]))
