"""Checks for the exercises of notebook 06 (sampling)."""

from __future__ import annotations

import math

import torch
from transformers import TopKLogitsWarper

from facegen.exercises import Verdict, as_number, check, correct, not_yet, unpack
from facegen.metrics import proportion_interval
from facegen.sampling import ImageGrammar
from facegen.tokens import Vocabulary


@check("answer_1")
def wilson_by_hand(answer, successes: int = 16, n: int = 17) -> Verdict:
    """Exercise 1: the 95% Wilson interval (low, high) of `successes` out of `n`, as metrics.proportion_interval."""
    low, high = (as_number(a, "each value of answer_1") for a in unpack(answer, 2, "answer_1"))
    expected = proportion_interval(successes, n)
    if abs(low - expected[0]) < 1e-3 and abs(high - expected[1]) < 1e-3:
        return correct(f"[{expected[0]:.1%}, {expected[1]:.1%}] for {successes}/{n}: not centred on "
                       f"{successes / n:.1%}, and never past 100%")
    p, z = successes / n, 1.959963984540054
    half = z * math.sqrt(p * (1 - p) / n)
    if abs(low - (p - half)) < 1e-3 and abs(high - (p + half)) < 1e-3:
        return not_yet(f"that is the normal approximation p +- 1.96 sqrt(p(1-p)/n); it reaches {p + half:.1%}, "
                       "past 100%: use the Wilson formula from the statement")
    return not_yet("centre (p + z²/2n) / (1 + z²/n), half-width z / (1 + z²/n) * sqrt(p(1-p)/n + z²/4n²), z = 1.96")


@check("answer_2")
def completion_new_tokens(answer, vocab: Vocabulary, keep_rows: int = 5) -> Verdict:
    """Exercise 2: how many tokens generate() writes when the top `keep_rows` rows of codes are kept."""
    mine = as_number(answer, "answer_2")
    expected = vocab.n_image_tokens - keep_rows * vocab.grid_size + 1
    if mine == expected:
        return correct(f"{expected} new tokens: {expected - 1} image tokens and <END_GENERATION>")
    if mine == expected - 1:
        return not_yet("the sequence does not end with the last image token")
    return not_yet(f"the grid has {vocab.grid_size} rows of {vocab.grid_size} codes; the kept rows are part of the prompt")


@check("answer_3")
def top_k_scores(answer, guided: torch.Tensor, k: int = 10) -> Verdict:
    """Exercise 3: guided scores (1, V) filtered to the k highest, the rest -inf, as transformers' TopKLogitsWarper
    does (on the grammar-masked scores)."""
    mine = torch.as_tensor(answer)
    if mine.shape != guided.shape:
        raise TypeError(f"answer_3 should have the shape of the guided scores, {tuple(guided.shape)}; got "
                        f"{tuple(mine.shape)}")
    expected = TopKLogitsWarper(top_k=k)(None, guided.clone())
    kept = torch.isfinite(mine)
    if torch.equal(kept, torch.isfinite(expected)) and torch.allclose(mine[kept], expected[kept]):
        return correct(f"{k} codes keep their scores, every other token is -inf: exactly transformers' "
                       "TopKLogitsWarper")
    if int(kept.sum()) != k:
        return not_yet(f"{int(kept.sum())} tokens keep a finite score; exactly {k} should (the rest -inf)")
    return not_yet("keep the k highest scores unchanged (torch.topk) and set every other one to -inf")
