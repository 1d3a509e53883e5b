"""The checks of notebook 04's exercises, on small hand-made vocabularies and token grids: the right answer is
correct, typical wrong ones are "not yet" with a hint that names the mistake, and an empty answer is "not
attempted"."""

import math

import torch

from facegen import exercises
from facegen.exercises import notebook04
from facegen.tokens import Vocabulary

VOCAB = Vocabulary(512)  # 18 conditioning attributes, a 16x16 grid: 277 tokens, 570 ids
# four faces of four tokens: position entropies 0, ln 4, 0, ln 2 nats, so 3 bits per "image"
CODES = torch.tensor([[0, 0, 1, 2], [0, 1, 1, 3], [0, 2, 1, 2], [0, 3, 1, 3]])


def assert_not_yet(verdict, *words):
    assert verdict.status == exercises.NOT_YET, verdict
    for word in words:
        assert word in verdict.message, (word, verdict.message)


def face(vocab):
    grid = torch.randint(vocab.codebook_size, (16, 16), generator=torch.Generator().manual_seed(0))
    return vocab.encode_sequence({"Smiling": 1, "Eyeglasses": 0}, grid), grid


def test_empty_answers_are_not_attempted():
    sequence, _ = face(VOCAB)
    for verdict, name in ((notebook04.sequence_layout((None, None), VOCAB), "answer_1"),
                          (notebook04.attribute_token_id(None, VOCAB), "answer_2"),
                          (notebook04.position_baseline_bits(None, CODES), "answer_3"),
                          (notebook04.mirrored_sequence(None, sequence, VOCAB), "answer_4")):
        assert verdict.status == exercises.NOT_ATTEMPTED and f"`{name}`" in str(verdict)


def test_sequence_layout():
    # an 8x8 grid and all 40 CelebA attributes: 1 + 40 + 1 + 64 + 1 tokens; 512 codes + 4 specials + 3 x 40 ids
    assert notebook04.sequence_layout((107, 636), VOCAB)
    assert notebook04.sequence_layout((107, 16 + 4 + 120), Vocabulary(16))  # computed from the codebook size
    assert_not_yet(notebook04.sequence_layout((277, 636), VOCAB), "today's layout")
    assert_not_yet(notebook04.sequence_layout((106, 636), VOCAB), "markers")
    assert_not_yet(notebook04.sequence_layout((100, 636), VOCAB), "one token per grid cell")
    assert_not_yet(notebook04.sequence_layout((107, 107), VOCAB), "distinct token ids")
    assert_not_yet(notebook04.sequence_layout((107, 596), VOCAB), "three tokens")
    assert_not_yet(notebook04.sequence_layout((107, 570), VOCAB), "today's vocabulary")
    assert_not_yet(notebook04.sequence_layout((107, 600), VOCAB), "four specials")
    assert_not_yet(notebook04.sequence_layout((107.5, 636), VOCAB), "whole number")


def test_attribute_token_id():
    assert notebook04.attribute_token_id(556, VOCAB)  # 516 + 3 x 13 + 1
    assert notebook04.attribute_token_id(16 + 4 + 3 * 13 + 1, Vocabulary(16))
    assert_not_yet(notebook04.attribute_token_id(555, VOCAB), "<Smiling=0>", "=0, =1, =?")
    assert_not_yet(notebook04.attribute_token_id(557, VOCAB), "<Smiling=?>")
    assert_not_yet(notebook04.attribute_token_id(516 + 13 + 1, VOCAB), "three ids")
    assert_not_yet(notebook04.attribute_token_id(516 + 3 * 31 + 1, VOCAB), "CelebA's 40")
    assert_not_yet(notebook04.attribute_token_id(520, VOCAB), "<Bangs=1>")
    assert_not_yet(notebook04.attribute_token_id(10_000, VOCAB), "ids run from 0 to 569")


def test_position_baseline_bits():
    assert notebook04.position_baseline_bits(3.0, CODES)
    assert notebook04.position_baseline_bits(torch.tensor(3.0), CODES.reshape(4, 2, 2))
    p = torch.tensor([5, 5, 3, 3], dtype=torch.float64) / 16
    unigram_bits = 4 * float(-(p * p.log2()).sum())
    assert_not_yet(notebook04.position_baseline_bits(unigram_bits, CODES), "unigram")
    assert_not_yet(notebook04.position_baseline_bits(3 * math.log(2), CODES), "nats")
    assert_not_yet(notebook04.position_baseline_bits(0.75, CODES), "per token")
    assert_not_yet(notebook04.position_baseline_bits(3 * math.log(2) / 4, CODES), "nats per token")
    assert_not_yet(notebook04.position_baseline_bits(10.0, CODES), "add up the entropies")


def test_mirrored_sequence():
    vocab = Vocabulary(8)
    sequence, grid = face(vocab)
    attributes = {"Smiling": 1, "Eyeglasses": 0}
    right = vocab.encode_sequence(attributes, grid.flip(-1))
    assert notebook04.mirrored_sequence(right, sequence, vocab)
    assert notebook04.mirrored_sequence(right.tolist(), sequence, vocab)
    assert_not_yet(notebook04.mirrored_sequence(sequence, sequence, vocab), "unchanged")
    assert_not_yet(notebook04.mirrored_sequence(vocab.encode_sequence(attributes, grid.flip(0)), sequence, vocab),
                   "upside down")
    assert_not_yet(notebook04.mirrored_sequence(vocab.encode_sequence(attributes, grid.flip(0, 1)), sequence, vocab),
                   "180 degrees")
    assert_not_yet(notebook04.mirrored_sequence(vocab.encode_sequence(attributes, grid.T), sequence, vocab),
                   "transposed")
    assert_not_yet(notebook04.mirrored_sequence(vocab.encode_sequence(None, grid.flip(-1)), sequence, vocab),
                   "attributes changed", "Smiling")
    broken = right.clone()
    broken[-1] = vocab.pad_id
    assert_not_yet(notebook04.mirrored_sequence(broken, sequence, vocab), "rejects", "<END_GENERATION>")
    assert_not_yet(notebook04.mirrored_sequence(right[:-1], sequence, vocab), "rejects", "277")
    half = grid.flip(-1).clone()
    half[3, 5] = (half[3, 5] + 1) % 8
    assert_not_yet(notebook04.mirrored_sequence(vocab.encode_sequence(attributes, half), sequence, vocab),
                   "differ from the mirrored grid: 1", "row 3, column 5")
