"""The checks of notebook 01's exercises: the right answer is correct, typical wrong ones are "not yet" with a hint
that names the mistake, and an empty answer is "not attempted"."""

import math

import torch

from facegen import exercises
from facegen.exercises import notebook01
from facegen.quantize import VectorQuantizer
from facegen.toy import ToyRun, ToyVQAutoencoder, gaussian_blobs, ring_centers


def assert_not_yet(verdict, *words):
    assert verdict.status == exercises.NOT_YET, verdict
    for word in words:
        assert word in verdict.message, (word, verdict.message)


def test_empty_answers_are_not_attempted():
    ring = torch.zeros(4, 2)
    for verdict, name in ((notebook01.quantize_by_hand(None), "answer_1"),
                          (notebook01.quantize_by_hand((None, None)), "answer_1"),
                          (notebook01.perplexity_function(None), "answer_2"),
                          (notebook01.token_grid_bits(None), "answer_3"),
                          (notebook01.codes_placed_on_the_data(None, ring), "answer_4")):
        assert verdict.status == exercises.NOT_ATTEMPTED and f"`{name}`" in str(verdict)


# --- exercise 1: quantize by hand (z = (1, 2), codes (0, 0), (1, 3), (3, 1), beta = 0.25) ----------------------------


def test_quantize_by_hand():
    assert notebook01.quantize_by_hand((1, 0.125))  # squared distances 5, 1, 5; 0.25 * (0 + 1) / 2
    assert notebook01.quantize_by_hand([torch.tensor(1), torch.tensor(0.125)])
    assert_not_yet(notebook01.quantize_by_hand((2, 0.125)), "count from 0")
    assert_not_yet(notebook01.quantize_by_hand((0, 0.125)), "squared distance")
    assert_not_yet(notebook01.quantize_by_hand((1, 0.25)), "mean over the D = 2 coordinates")
    assert_not_yet(notebook01.quantize_by_hand((1, 0.5)), "beta")
    assert_not_yet(notebook01.quantize_by_hand((1, 0.3)), "mean over the 2 coordinates")
    assert_not_yet(notebook01.quantize_by_hand((1.0, 0.125)), "integer")
    assert_not_yet(notebook01.quantize_by_hand(1), "2 values")


# --- exercise 2: a perplexity function -------------------------------------------------------------------------------


def right_perplexity(counts):
    p = torch.tensor(counts, dtype=torch.float64)
    p = p[p > 0] / p.sum()
    return math.exp(-(p * p.log()).sum().item())


def test_perplexity_function():
    assert notebook01.perplexity_function(right_perplexity)

    def entropy(counts):
        return math.log(right_perplexity(counts))

    def keeps_empty_bins(counts):
        p = torch.tensor(counts, dtype=torch.float64) / sum(counts)
        return math.exp(-(p * p.log()).sum().item())

    def log2_then_exp(counts):
        p = torch.tensor(counts, dtype=torch.float64)
        p = p[p > 0] / p.sum()
        return math.exp(-(p * p.log2()).sum().item())

    def used_bins(counts):
        return sum(c > 0 for c in counts)

    assert_not_yet(notebook01.perplexity_function(entropy), "exponential")
    assert_not_yet(notebook01.perplexity_function(keeps_empty_bins), "nan", "empty")
    assert_not_yet(notebook01.perplexity_function(log2_then_exp), "logarithms")
    assert_not_yet(notebook01.perplexity_function(used_bins), "non-empty bins")
    assert_not_yet(notebook01.perplexity_function(lambda counts: 1.0), "exp(H)")
    assert_not_yet(notebook01.perplexity_function(lambda counts: None), "raised TypeError")  # an unfinished stub
    assert_not_yet(notebook01.perplexity_function(right_perplexity([4, 2, 1, 1])), "your function itself")


# --- exercise 3: bits in a token grid ------------------------------------------------------------------------------


def test_token_grid_bits():
    assert notebook01.token_grid_bits((2304, 393216, 393216 / 2304))
    assert notebook01.token_grid_bits((16 * 16 * 9, 128 * 128 * 24, 170.66666666666666))
    assert_not_yet(notebook01.token_grid_bits((16 * 16 * 512, 393216, 3.0)), "log2 K")
    assert_not_yet(notebook01.token_grid_bits((16 * 16 * math.log(512), 393216, 3.0)), "base-2")
    assert_not_yet(notebook01.token_grid_bits((2304, 128 * 128 * 3, 3.0)), "8 bits")
    assert_not_yet(notebook01.token_grid_bits((2304, 393216, 2304 / 393216)), "other way round")
    assert_not_yet(notebook01.token_grid_bits((2304, 393216, 170)), "pixel bits divided by token bits")
    # the expected values come from the sizes, not from stored numbers
    assert notebook01.token_grid_bits((64 * 8, 64 * 64 * 24, 64 * 64 * 24 / 512), codebook_size=256, image_size=64)


# --- exercise 4: start the codes on the data (a hand-made run: the toy's encoder starts as the identity) --------------


def toy_run(codebook=None, steps=300, lr=0.05, **options) -> ToyRun:
    options.setdefault("kmeans_init", False)
    torch.manual_seed(0)
    quantizer = VectorQuantizer(16, 2, **options)
    if codebook is not None:
        with torch.no_grad():
            quantizer.codebook.copy_(codebook)
    return ToyRun(model=ToyVQAutoencoder(quantizer), codes_used=[0] * steps, lr=lr)


def test_codes_placed_on_the_data():
    ring, _ = gaussian_blobs(400, ring_centers(12, 3.0), std=0.3, seed=0)
    on_the_ring = ring_centers(16, 3.0)
    assert notebook01.codes_placed_on_the_data(toy_run(on_the_ring), ring)
    verdict = notebook01.codes_placed_on_the_data(toy_run(), ring)  # the uniform init: a cloud at the origin
    assert_not_yet(verdict, "of 16 codes in use", "never moves")
    assert_not_yet(notebook01.codes_placed_on_the_data(toy_run(on_the_ring, restart_after=20), ring), "no remedy")
    assert_not_yet(notebook01.codes_placed_on_the_data(toy_run(kmeans_init=True), ring), "no remedy")
    assert_not_yet(notebook01.codes_placed_on_the_data(toy_run(on_the_ring, steps=50), ring), "steps=300")
    # the learning rate or beta changed instead of the start: not this exercise
    assert_not_yet(notebook01.codes_placed_on_the_data(toy_run(on_the_ring, lr=0.5), ring), "lr=0.05")
    assert_not_yet(notebook01.codes_placed_on_the_data(toy_run(on_the_ring, beta=1.0), ring), "beta=0.25")
    assert_not_yet(notebook01.codes_placed_on_the_data(on_the_ring, ring), "ToyRun")
    small = ToyRun(model=ToyVQAutoencoder(VectorQuantizer(8, 2, kmeans_init=False)), codes_used=[0] * 300, lr=0.05)
    assert_not_yet(notebook01.codes_placed_on_the_data(small, ring), "VectorQuantizer(16, 2")
