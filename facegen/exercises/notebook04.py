"""Checks for the exercises of notebook 04 (tokenizing CelebA).

1. `sequence_layout`: the length and the vocabulary size of another layout (an 8x8 grid, all 40 CelebA attributes).
2. `attribute_token_id`: the id of `<Smiling=1>`, from the layout rather than from `attribute_id`.
3. `position_baseline_bits`: bits per image of a model that knows each position's code distribution, no context.
4. `mirrored_sequence` (changes code): a face's sequence with its token grid mirrored left-right, well-formed.
5. is an open question, without a check.
"""

from __future__ import annotations

import math

import torch

from facegen.attributes import CELEBA_ATTRIBUTES
from facegen.exercises import Verdict, as_number, check, close, correct, not_yet, unpack
from facegen.metrics import unigram_entropy
from facegen.tokens import SPECIALS, Vocabulary

# Exercise 1: the other layout, as stated in the notebook.
GRID_1 = 8
ATTRIBUTES_1 = CELEBA_ATTRIBUTES


def _whole(value, what: str) -> int:
    number = as_number(value, what)
    if number != int(number):
        raise TypeError(f"{what} should be a whole number, got {number}")
    return int(number)


@check("answer_1")
def sequence_layout(answer, vocab: Vocabulary) -> Verdict:
    """answer: (sequence length, vocabulary size) for a codebook of vocab.codebook_size codes, a GRID_1 x GRID_1
    grid and every CelebA attribute."""
    length, size = (_whole(v, what) for v, what in zip(unpack(answer, 2, "answer_1"),
                                                        ("the length", "the vocabulary size")))
    other = Vocabulary(vocab.codebook_size, attributes=ATTRIBUTES_1, grid_size=GRID_1)
    if length == vocab.length:
        return not_yet(f"{vocab.length} is the length of today's layout; redo the count with the new grid and "
                       "attributes")
    if length in (other.length - 1, other.length - 2):
        return not_yet("count the markers: <START_FACE>, <START_GENERATION> and <END_GENERATION> are one token each")
    if length != other.length:
        return not_yet("a sequence is: a start token, one token per attribute, a start-of-image token, one token "
                       "per grid cell, an end token")
    if size == other.length:
        return not_yet("right length; the vocabulary counts distinct token ids, not positions in a sequence")
    if size == vocab.codebook_size + len(SPECIALS) + 2 * other.n_attributes:
        return not_yet("right length; each attribute has three tokens: =0, =1 and =? (unspecified)")
    if size == vocab.size:
        return not_yet(f"right length; {vocab.size} is today's vocabulary, with {vocab.n_attributes} attributes")
    if size != other.size:
        return not_yet("right length; the vocabulary is: the codes, the four specials, three tokens per attribute")
    return correct(f"{other.length} tokens per face ({vocab.length} today), a vocabulary of {other.size} "
                   f"({vocab.size} today)")


@check("answer_2")
def attribute_token_id(answer, vocab: Vocabulary) -> Verdict:
    """answer: the id of <Smiling=1>."""
    token_id = _whole(answer, "answer_2")
    expected = vocab.attribute_id("Smiling", 1)
    if token_id == expected:
        return correct(f"{vocab.token(token_id)} has id {token_id}")
    column = vocab.attribute_column("Smiling")
    if token_id in (vocab.attribute_id("Smiling", 0), vocab.attribute_id("Smiling", None)):
        return not_yet(f"that is {vocab.token(token_id)}: within an attribute the order is =0, =1, =?")
    if token_id == vocab.first_attribute_id + column + 1:
        return not_yet("every attribute before Smiling takes three ids, not one")
    celeba_column = CELEBA_ATTRIBUTES.index("Smiling")
    if token_id in (vocab.first_attribute_id + 3 * celeba_column + 1, vocab.first_attribute_id + 3 * celeba_column):
        return not_yet(f"that counts Smiling's place among CelebA's 40 attributes; the vocabulary holds only the "
                       f"{vocab.n_attributes} in vocab.attributes")
    if 0 <= token_id < vocab.size:
        return not_yet(f"that is the id of {vocab.token(token_id)}; start from vocab.first_attribute_id")
    return not_yet(f"ids run from 0 to {vocab.size - 1}; start from vocab.first_attribute_id")


@check("answer_3")
def position_baseline_bits(answer, codes: torch.Tensor) -> Verdict:
    """answer: bits per image of a model that gives each position the code frequencies seen at that position in
    `codes` (N, positions): the sum over positions of their entropies, in bits."""
    value = as_number(answer, "answer_3")
    codes = codes.reshape(len(codes), -1).long()
    size = int(codes.max()) + 1  # any size above the largest code gives the same entropies
    positions = codes.shape[1]
    expected = sum(unigram_entropy(column, size) for column in codes.T) / math.log(2)  # each position's own entropy
    unigram = positions * unigram_entropy(codes, size) / math.log(2)
    if close(value, expected, rel=1e-4):
        return correct(f"{expected:,.0f} bits per image, {unigram - expected:,.0f} fewer than the unigram baseline "
                       f"({unigram:,.0f}): knowing the position alone already helps")
    if close(value, unigram, rel=1e-4):
        return not_yet("that is the unigram baseline (one distribution for every position); use each position's "
                       "own entropy, as in the map above")
    if close(value, expected * math.log(2), rel=1e-4):
        return not_yet("right sum, but in nats; divide by ln 2 for bits")
    if close(value, expected / positions, rel=1e-4):
        return not_yet("that is per token; a face has one token at each of the grid's positions")
    if close(value, expected * math.log(2) / positions, rel=1e-4):
        return not_yet("that is nats per token; convert to bits (divide by ln 2) and add up over the positions")
    return not_yet("add up the entropies of the map above over all positions (or 256 x their mean) and convert "
                   "nats to bits")


@check("answer_4")
def mirrored_sequence(answer, sequence: torch.Tensor, vocab: Vocabulary) -> Verdict:
    """answer: `sequence` with its token grid mirrored left-right, everything else unchanged."""
    attributes, grid = vocab.decode_sequence(sequence)
    try:
        answer_attributes, answer_grid = vocab.decode_sequence(torch.as_tensor(answer))
    except ValueError as error:
        return not_yet(f"vocab.decode_sequence rejects it: {error}")
    if answer_attributes != attributes:
        changed = [name for name in attributes if answer_attributes[name] != attributes[name]]
        return not_yet(f"the attributes changed ({', '.join(changed)}); keep the face's own, only the image "
                       "tokens move")
    if torch.equal(answer_grid, grid.flip(-1)):
        return correct("a well-formed sequence: the same attributes, the 16x16 grid of codes mirrored left-right")
    if torch.equal(answer_grid, grid):
        return not_yet("the image tokens are unchanged; mirror the 16x16 grid before building the sequence")
    if torch.equal(answer_grid, grid.flip(0)):
        return not_yet("that is upside down (rows flipped); a mirror flips the columns, the last dimension")
    if torch.equal(answer_grid, grid.flip(0, 1)):
        return not_yet("that is rotated by 180 degrees (a reversed sequence of 256 tokens); flip only the columns")
    if torch.equal(answer_grid, grid.T):
        return not_yet("that is transposed; a mirror keeps every token in its row")
    wrong = (answer_grid != grid.flip(-1)).nonzero()
    row, col = wrong[0].tolist()
    return not_yet(f"image tokens that differ from the mirrored grid: {len(wrong)}, the first at row {row}, column "
                   f"{col}")
