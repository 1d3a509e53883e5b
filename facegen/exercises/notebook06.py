"""Checks for the exercises of notebook 06 (sampling)."""

from __future__ import annotations

import torch
from transformers import TopKLogitsWarper

from facegen.exercises import Verdict, as_number, check, correct, not_yet
from facegen.sampling import ImageGrammar
from facegen.tokens import Vocabulary


@check("answer_1")
def allowed_after_image(answer, vocab: Vocabulary) -> Verdict:
    """Exercise 1: the token ids the grammar allows right after the last image token."""
    mine = sorted(int(i) for i in answer)
    expected = ImageGrammar(vocab).allowed(vocab.end_position, vocab.size).nonzero().flatten().tolist()
    if mine == expected:
        return correct(f"only {', '.join(vocab.token(i) for i in expected)} (id {', '.join(map(str, expected))})")
    if len(mine) == vocab.codebook_size:
        return not_yet("that is what the grammar allows at an image position; this is the position after the last")
    return not_yet("after 256 image tokens the sequence format allows one thing only: look at the sequence format")


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
