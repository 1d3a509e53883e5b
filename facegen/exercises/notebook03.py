"""Checks for the exercises of notebook 03 (codebook analysis).

The notebook passes in what it computed (the code histogram, the token grids, the attributes), and each check
recomputes the expected answer from those with facegen's own functions: the answers differ between profiles.

1. `perplexity_of_counts`: the perplexity of a code histogram, from its definition.
2. `codes_for_half_the_tokens`: how many of the most used codes hold half of all tokens.
3. `strongest_smile_position`: the grid position where `Smiling` changes the tokens most.
4. `smile_code_in_mouth_band` (changes code): the code most over-represented in the mouth band of smiling faces,
   by re-running the attribute ranking of the notebook for another attribute and band.
5. is an open question, without a check.
6. `fsq_token_of_levels`: the token FSQ gives to a position whose three channels rounded to given levels.
"""

from __future__ import annotations

import math

import torch

from facegen.attributes import attribute_index
from facegen.codebook import attribute_codes, attribute_position_shift
from facegen.exercises import Verdict, as_number, check, close, correct, not_yet, unpack
from facegen.quantize import perplexity

# Exercise 4: the mouth band of a 16x16 grid (rows 10-12, columns 5-10), where Smiling changes the tokens most,
# and the eye band the notebook ranks Eyeglasses codes in (to recognise an answer copied from there).
MOUTH_BAND = (slice(10, 13), slice(5, 11))
EYE_BAND = (slice(6, 10), slice(2, 14))


@check("answer_1")
def perplexity_of_counts(answer, counts: torch.Tensor) -> Verdict:
    """answer: exp(entropy in nats) of the code histogram `counts` (K,)."""
    value = as_number(answer, "answer_1")
    expected = float(perplexity(counts))
    if close(value, expected, rel=1e-4):
        return correct(f"perplexity {expected:.1f} of K = {len(counts)}: as many equally used codes would have "
                       "the same entropy")
    p = counts.double()
    p = p[p > 0] / p.sum()
    used = int((counts > 0).sum())
    if math.isnan(value):
        return not_yet("nan: unused codes give 0 * log 0; keep only the codes with a count above 0")
    if close(value, math.log(expected), rel=1e-4):
        return not_yet("that is the entropy H; the perplexity is exp(H)")
    if close(value, math.exp(float(-(p * p.log2()).sum())), rel=1e-4):
        return not_yet("you mix logarithms: exp() undoes the natural log, 2 ** undoes log2")
    if close(value, float(used)) or close(value, float(len(counts))):
        return not_yet("that counts codes; the perplexity weighs each code by how often it is used: "
                       "exp(-sum p log p) with p = counts / counts.sum()")
    return not_yet("normalise the counts to probabilities p = counts / counts.sum(), take H = -sum p log p over the "
                   "codes with p > 0, then exp(H)")


@check("answer_2")
def codes_for_half_the_tokens(answer, counts: torch.Tensor) -> Verdict:
    """answer: the smallest n such that the n most used codes of the histogram `counts` hold at least half the
    tokens."""
    value = as_number(answer, "answer_2")
    if value != int(value):
        return not_yet("a number of codes: a whole number")
    total = int(counts.sum())

    def smallest_n(ordered: torch.Tensor) -> int:
        return int((ordered.cumsum(0) * 2 < total).sum()) + 1  # codes before the running total reaches half, + 1

    expected = smallest_n(counts.sort(descending=True).values)
    if int(value) == expected:
        return correct(f"the {expected} most used codes ({expected / len(counts):.0%} of the codebook) hold half of "
                       f"the {total:,} tokens")
    if int(value) == smallest_n(counts.sort().values):
        return not_yet("you started from the least used codes; sort from most to least used")
    if int(value) == expected - 1:
        return not_yet("almost: with that many codes the running total is still just under half; take the smallest "
                       "number whose total reaches half")
    if int(value) == expected + 1:
        return not_yet("almost: one code fewer already reaches half")
    if int(value) == len(counts) // 2:
        return not_yet("half the codebook would hold half the tokens only if every code were equally used; sort "
                       "the counts and add them up from the most used one")
    return not_yet("sort the counts from most to least used, add them up (cumsum), and find how many codes it takes "
                   "for the running total to reach half of all tokens")


@check("answer_3")
def strongest_smile_position(answer, tokens: torch.Tensor, attributes: torch.Tensor, codebook_size: int) -> Verdict:
    """answer: (row, column) of the largest value of `attribute_position_shift` for Smiling (ties all count)."""
    row, col = (int(as_number(v, what)) for v, what in zip(unpack(answer, 2, "answer_3"), ("the row", "the column")))
    has_smile = attributes[:, attribute_index("Smiling")] == 1
    shift = attribute_position_shift(tokens, has_smile, codebook_size)
    height, width = shift.shape
    if not (0 <= row < height and 0 <= col < width):
        return not_yet(f"rows and columns of the grid run from 0 to {height - 1}")
    if shift[row, col] == shift.max():
        return correct(f"row {row}, column {col}: total variation distance {float(shift.max()):.2f}, the largest "
                       "on the grid")
    if col < height and row < width and shift[col, row] == shift.max():
        return not_yet("row and column swapped: the row comes first (top to bottom), then the column")
    if shift[row, col] == shift.min():
        return not_yet("that is where Smiling changes the tokens least; look for the largest distance")
    return not_yet(f"the distance at ({row}, {col}) is {float(shift[row, col]):.2f}; a larger one exists. Take the "
                   "argmax of the whole 16x16 map (a flat index i is row i // 16, column i % 16)")


@check("answer_4")
def smile_code_in_mouth_band(answer, tokens: torch.Tensor, attributes: torch.Tensor, codebook_size: int) -> Verdict:
    """answer: the code `attribute_codes` ranks first for Smiling inside MOUTH_BAND."""
    if isinstance(answer, (tuple, list)):
        return not_yet("one code id (an int): the first entry of the first tuple that attribute_codes returns")
    code = int(as_number(answer, "answer_4"))

    def top(name: str, region, flip: bool = False, n: int = 1) -> list[int]:
        has = attributes[:, attribute_index(name)] == 1
        return [c for c, *_ in attribute_codes(tokens, ~has if flip else has, codebook_size, region=region, top=n)]

    ranked = attribute_codes(tokens, attributes[:, attribute_index("Smiling")] == 1, codebook_size,
                             region=MOUTH_BAND, top=5)
    if code == ranked[0][0]:
        _, with_smile, without, log_ratio = ranked[0]
        return correct(f"code {code}: {with_smile} times in the mouth band of smiling faces, {without} times without "
                       f"a smile (x{math.exp(log_ratio):.1f} once the counts are smoothed and normalised)")
    if code in top("Smiling", None):
        return not_yet("you ranked the codes of the whole grid; pass region=notebook03.MOUTH_BAND")
    if code in top("Smiling", MOUTH_BAND, flip=True):
        return not_yet("that code is over-represented in faces WITHOUT a smile: check the mask")
    if code in top("Eyeglasses", EYE_BAND):
        return not_yet("that is the Eyeglasses ranking of the cell above; change the attribute and the band")
    if code in top("Smiling", EYE_BAND):
        return not_yet("right attribute, but the eye band; use the mouth band")
    if code in [c for c, *_ in ranked]:
        return not_yet("that code is in the top five of the mouth band, but not first")
    return not_yet("rank the codes with attribute_codes as in the eye-band cell, with the Smiling mask and "
                   "region=notebook03.MOUTH_BAND, and take the first")


@check("answer_6")
def fsq_token_of_levels(answer, levels: tuple[int, ...], q: tuple[int, ...]) -> Verdict:
    """answer: the FSQ token of the integer levels `q` (one per channel, -L//2 .. L - 1 - L//2) on the grid `levels`:
    digits k_i = q_i + L_i // 2 read as one mixed-radix number, the first channel the least significant."""
    from facegen.fsq import FSQ

    if isinstance(answer, (tuple, list)):
        return not_yet("one token id (an int), not the digits: combine them into one number")
    value = int(as_number(answer, "answer_6"))
    fsq = FSQ(levels)
    half = [n // 2 for n in levels]
    expected = int(fsq.codes_to_indices(torch.tensor([[qi / h for qi, h in zip(q, half)]])))
    digits = [qi + h for qi, h in zip(q, half)]
    if value == expected:
        terms = " + ".join(f"{d} x {b}" for d, b in zip(digits, fsq.basis.tolist()))
        return correct(f"token {expected}: digits {tuple(digits)}, {terms}; FSQ's lookup gives the levels back from "
                       "it, so the grid needs no stored codebook")
    most_significant_first = 0
    for d, n in zip(digits, levels):
        most_significant_first = most_significant_first * n + d
    if value == most_significant_first:
        return not_yet("you read the first channel as the most significant digit; in FSQ it is the least "
                       "significant: k_1 + L_1 k_2 + L_1 L_2 k_3")
    unshifted, base = 0, 1
    for qi, n in zip(q, levels):
        unshifted, base = unshifted + qi * base, base * n
    if value == unshifted:
        return not_yet("the levels run from -L/2 upwards; shift each by L // 2 first, so that the digits are 0..L-1")
    if not 0 <= value < math.prod(levels):
        return not_yet(f"a token lies in 0..{math.prod(levels) - 1}; shift each level by L // 2 to get digits "
                       "0..L-1, then k_1 + L_1 k_2 + L_1 L_2 k_3")
    return not_yet("shift each level by L // 2 (digits 0..L-1), then combine k_1 + L_1 k_2 + L_1 L_2 k_3")
