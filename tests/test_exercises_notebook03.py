"""The checks of notebook 03's exercises, on small hand-made token grids: the right answer is correct, typical wrong
ones are "not yet" with a hint that names the mistake, and an empty answer is "not attempted"."""

import math

import torch

from facegen import exercises
from facegen.attributes import CELEBA_ATTRIBUTES, attribute_index
from facegen.exercises import notebook03

K = 8
COUNTS = torch.tensor([4, 2, 1, 1, 0])  # perplexity 2 ** 1.75: the entropy is 1.75 bits


def assert_not_yet(verdict, *words):
    assert verdict.status == exercises.NOT_YET, verdict
    for word in words:
        assert word in verdict.message, (word, verdict.message)


def faces() -> tuple[torch.Tensor, torch.Tensor]:
    """12 grids of 16x16 tokens (codes 0..7), the first 6 smiling, faces 6-8 with eyeglasses. Background code 0;
    smiling faces hold code 5 at (11, 7) where the others hold 6, three of them code 7 at (12, 8) and code 4 all
    along row 0; the faces with glasses hold code 3 at (7, 4). So for Smiling the largest shift is at (11, 7), the
    mouth band ranks 5 then 7, the whole grid ranks 4 first, and the eye band ranks Eyeglasses' 3 first."""
    tokens = torch.zeros(12, 16, 16, dtype=torch.long)
    attributes = -torch.ones(12, len(CELEBA_ATTRIBUTES), dtype=torch.long)
    attributes[:6, attribute_index("Smiling")] = 1
    attributes[6:9, attribute_index("Eyeglasses")] = 1
    tokens[:6, 11, 7], tokens[6:, 11, 7] = 5, 6
    tokens[:3, 12, 8] = 7
    tokens[:3, 0, :] = 4
    tokens[6:9, 7, 4] = 3
    return tokens, attributes


def test_empty_answers_are_not_attempted():
    tokens, attributes = faces()
    for verdict, name in ((notebook03.perplexity_of_counts(None, COUNTS), "answer_1"),
                          (notebook03.codes_for_half_the_tokens(None, COUNTS), "answer_2"),
                          (notebook03.strongest_smile_position((None, None), tokens, attributes, K), "answer_3"),
                          (notebook03.smile_code_in_mouth_band(None, tokens, attributes, K), "answer_4")):
        assert verdict.status == exercises.NOT_ATTEMPTED and f"`{name}`" in str(verdict)


def test_perplexity_of_counts():
    assert notebook03.perplexity_of_counts(2 ** 1.75, COUNTS)
    assert notebook03.perplexity_of_counts(torch.tensor(2 ** 1.75, dtype=torch.float64), COUNTS)
    assert_not_yet(notebook03.perplexity_of_counts(1.75 * math.log(2), COUNTS), "entropy", "exp(H)")
    assert_not_yet(notebook03.perplexity_of_counts(math.exp(1.75), COUNTS), "logarithms")
    assert_not_yet(notebook03.perplexity_of_counts(4, COUNTS), "counts codes")  # the used codes
    assert_not_yet(notebook03.perplexity_of_counts(5, COUNTS), "counts codes")  # K
    assert_not_yet(notebook03.perplexity_of_counts(float("nan"), COUNTS), "0 * log 0")
    assert_not_yet(notebook03.perplexity_of_counts(3.0, COUNTS), "normalise")
    assert_not_yet(notebook03.perplexity_of_counts("3.36", COUNTS), "raised TypeError")


def test_codes_for_half_the_tokens():
    counts = torch.tensor([5, 1, 3, 0, 2, 4, 1, 0, 0, 0])  # 16 tokens; the two most used (5 + 4) hold half
    assert notebook03.codes_for_half_the_tokens(2, counts)
    assert notebook03.codes_for_half_the_tokens(torch.tensor(2), counts)
    assert_not_yet(notebook03.codes_for_half_the_tokens(9, counts), "least used")
    assert_not_yet(notebook03.codes_for_half_the_tokens(1, counts), "just under half")
    assert_not_yet(notebook03.codes_for_half_the_tokens(3, counts), "one code fewer")
    assert_not_yet(notebook03.codes_for_half_the_tokens(5, counts), "equally used")
    assert_not_yet(notebook03.codes_for_half_the_tokens(4, counts), "cumsum")
    assert_not_yet(notebook03.codes_for_half_the_tokens(2.5, counts), "whole number")


def test_strongest_smile_position():
    tokens, attributes = faces()
    assert notebook03.strongest_smile_position((11, 7), tokens, attributes, K)
    assert notebook03.strongest_smile_position([torch.tensor(11), torch.tensor(7)], tokens, attributes, K)
    assert_not_yet(notebook03.strongest_smile_position((7, 11), tokens, attributes, K), "swapped")
    assert_not_yet(notebook03.strongest_smile_position((3, 3), tokens, attributes, K), "least")
    assert_not_yet(notebook03.strongest_smile_position((12, 8), tokens, attributes, K), "0.50", "argmax")
    assert_not_yet(notebook03.strongest_smile_position((16, 2), tokens, attributes, K), "from 0 to 15")
    assert_not_yet(notebook03.strongest_smile_position(183, tokens, attributes, K), "2 values")


def test_smile_code_in_mouth_band():
    tokens, attributes = faces()
    verdict = notebook03.smile_code_in_mouth_band(5, tokens, attributes, K)
    assert verdict and "6 times in the mouth band of smiling faces, 0 times without" in verdict.message
    assert_not_yet(notebook03.smile_code_in_mouth_band(4, tokens, attributes, K), "whole grid")
    assert_not_yet(notebook03.smile_code_in_mouth_band(6, tokens, attributes, K), "WITHOUT")
    assert_not_yet(notebook03.smile_code_in_mouth_band(3, tokens, attributes, K), "Eyeglasses")
    assert_not_yet(notebook03.smile_code_in_mouth_band(0, tokens, attributes, K), "eye band")
    assert_not_yet(notebook03.smile_code_in_mouth_band(7, tokens, attributes, K), "top five")
    assert_not_yet(notebook03.smile_code_in_mouth_band(100, tokens, attributes, K), "MOUTH_BAND")
    assert_not_yet(notebook03.smile_code_in_mouth_band((5, 6, 0, 1.9), tokens, attributes, K), "one code id")


def test_fsq_token_of_levels():
    levels, q = (8, 8, 8), (3, -4, 0)  # digits (7, 0, 4): 7 + 8 * 0 + 64 * 4 = 263, worked by hand
    assert notebook03.fsq_token_of_levels(None, levels, q).status == exercises.NOT_ATTEMPTED
    verdict = notebook03.fsq_token_of_levels(263, levels, q)
    assert verdict.status == exercises.CORRECT and "token 263" in verdict.message
    assert_not_yet(notebook03.fsq_token_of_levels(7 * 64 + 0 * 8 + 4, levels, q), "least significant")  # 452
    assert_not_yet(notebook03.fsq_token_of_levels(3 - 4 * 8 + 0, levels, q), "shift each by L // 2")  # -29
    assert_not_yet(notebook03.fsq_token_of_levels((7, 0, 4), levels, q), "one token id")
    assert_not_yet(notebook03.fsq_token_of_levels(262, levels, q), "shift each level")
    assert notebook03.fsq_token_of_levels(1 + 5 * 2, (5, 5, 5), (-1, 0, -2)).status == exercises.CORRECT  # odd L
