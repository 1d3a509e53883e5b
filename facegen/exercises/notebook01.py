"""Checks for the exercises of notebook 01 (VQ-VAE theory).

1. `quantize_by_hand`: the token and the commitment loss of one vector, against the real `VectorQuantizer`.
2. `perplexity_function`: a learner's perplexity function, against `facegen.quantize.perplexity` on several histograms.
3. `token_grid_bits`: the bits in a grid of tokens and in the raw pixels, and their ratio.
4. `codes_placed_on_the_data` (changes code): a re-run of the collapsed toy of section 5 with starting codes the
   learner chose, which must end with (nearly) every code in use.
5. is an open question, without a check.
"""

from __future__ import annotations

import math

import torch

from facegen.exercises import Verdict, as_number, check, close, correct, first_mismatch, not_yet, unpack
from facegen.quantize import VectorQuantizer, perplexity
from facegen.toy import ToyRun
from facegen.vqvae import DOWNSAMPLING

# Exercise 1, as stated in the notebook.
CODEBOOK_1 = ((0.0, 0.0), (1.0, 3.0), (3.0, 1.0))
Z_1 = (1.0, 2.0)
BETA_1 = 0.25

# Exercise 2: the histograms a perplexity function is tried on (empty bins, one bin, uniform, skewed).
PERPLEXITY_CASES = ([8, 8, 0, 0], [4, 2, 1, 1], [5], [1] * 512, [100, 1, 1, 1], [0, 3, 0, 1])

# Exercise 4: the baseline of section 5 (K = 16 codes in 2-D, 300 steps) and the usage it must reach.
TOY_CODES, TOY_STEPS, TOY_MIN_USED, TOY_LR, TOY_BETA = 16, 300, 14, 0.05, 0.25


@check("answer_1")
def quantize_by_hand(answer) -> Verdict:
    """answer: (token, commitment loss) of z = Z_1 with the codebook CODEBOOK_1 and beta = BETA_1."""
    token, commitment = unpack(answer, 2, "answer_1")
    quantizer = VectorQuantizer(len(CODEBOOK_1), len(Z_1), beta=BETA_1, kmeans_init=False).eval()
    with torch.no_grad():
        quantizer.codebook.copy_(torch.tensor(CODEBOOK_1))
        out = quantizer(torch.tensor([Z_1]))
    expected_token, expected_commitment = int(out.indices.item()), float(out.commitment_loss)
    if isinstance(token, bool) or not isinstance(token, int) and not hasattr(token, "__index__"):
        return not_yet(f"the token is an integer index into the codebook (0, 1 or 2), got {token!r}")
    if int(token) != expected_token:
        if int(token) == expected_token + 1:
            return not_yet("tokens count from 0: e_0 is token 0")
        return not_yet("compute the squared distance ||z - e_j||^2 to each of the three codes; the token is the "
                       "index of the smallest")
    commitment = as_number(commitment, "the commitment loss")
    squared = float(((torch.tensor(Z_1) - torch.tensor(CODEBOOK_1[expected_token])) ** 2).sum())
    if close(commitment, squared * BETA_1):
        return not_yet("right token; for the loss take the mean over the D = 2 coordinates, not the sum")
    if close(commitment, squared / len(Z_1)):
        return not_yet("right token; the commitment loss is weighted by beta")
    if not close(commitment, expected_commitment, rel=1e-6):
        return not_yet("right token; the commitment loss is beta times the mean over the 2 coordinates of "
                       "(z - e_k)^2, with e_k the code of that token")
    return correct(f"token {expected_token}, commitment loss {expected_commitment:g}, as VectorQuantizer computes them")


@check("answer_2")
def perplexity_function(answer) -> Verdict:
    """answer: a function of a list of counts returning exp(entropy in nats) of their normalised histogram."""
    if not callable(answer):
        return not_yet("`answer_2` should be your function itself (`answer_2 = my_perplexity`), not its result")
    reference = lambda counts: float(perplexity(torch.tensor(counts)))  # noqa: E731
    mismatch = first_mismatch(answer, reference, PERPLEXITY_CASES, rel=1e-4, abs_tol=1e-9)
    if mismatch is None:
        return correct(f"your function agrees with facegen.quantize.perplexity on {len(PERPLEXITY_CASES)} "
                       "histograms, empty bins included")
    counts, mine, theirs = mismatch
    p = torch.tensor(counts, dtype=torch.float64)
    p = p[p > 0] / p.sum()
    if math.isnan(mine):
        return not_yet(f"on {counts} your function returns nan: an empty bin gives 0 * log 0; leave empty bins "
                       "out of the sum (their limit is 0)")
    if close(mine, math.log(theirs), rel=1e-4):
        return not_yet(f"on {counts} you return the entropy; the perplexity is its exponential")
    if close(mine, math.exp(float(-(p * p.log2()).sum())), rel=1e-4):
        return not_yet(f"on {counts} you mix logarithms: exp() undoes the natural log, 2 ** undoes log2")
    if close(mine, float(len(p))):
        return not_yet(f"on {counts} you return the number of non-empty bins; the perplexity weighs each bin by "
                       "its probability (it is below that number unless the used bins are equally full)")
    return not_yet(f"on {counts} your function returns {mine:.4g}: normalise the counts to probabilities p, "
                   "take H = -sum p ln p over the non-empty bins, and return exp(H)")


@check("answer_3")
def token_grid_bits(answer, codebook_size: int = 512, image_size: int = 128) -> Verdict:
    """answer: (bits in a grid of tokens, bits in the raw RGB image at 8 bits per channel, pixels / tokens)."""
    token_bits, pixel_bits, ratio = (as_number(v, what) for v, what in zip(
        unpack(answer, 3, "answer_3"), ("the token bits", "the pixel bits", "the ratio")))
    side = image_size // DOWNSAMPLING
    expected_tokens = side * side * math.log2(codebook_size)
    expected_pixels = image_size * image_size * 3 * 8
    if not close(token_bits, expected_tokens):
        if close(token_bits, side * side * codebook_size):
            return not_yet("a token is one of K values: it carries log2 K bits, not K")
        if close(token_bits, side * side * math.log(codebook_size)):
            return not_yet("bits are base-2: use log2 K (math.log is the natural log)")
        return not_yet(f"the grid has {side} x {side} tokens, each one of K = {codebook_size} values")
    if not close(pixel_bits, expected_pixels):
        if close(pixel_bits, expected_pixels / 8):
            return not_yet("right token bits; each of the three channel values of a pixel has 8 bits")
        return not_yet("right token bits; count the pixel bits as height x width x channels x bits per channel")
    if close(ratio, expected_tokens / expected_pixels):
        return not_yet("right bits; the ratio the other way round: pixel bits / token bits")
    if not close(ratio, expected_pixels / expected_tokens):
        return not_yet("right bits; the ratio is pixel bits divided by token bits")
    return correct(f"{expected_tokens:.0f} bits of tokens against {expected_pixels} bits of pixels: "
                   f"{expected_pixels / expected_tokens:.1f} times fewer")


@check("answer_4")
def codes_placed_on_the_data(answer, data: torch.Tensor) -> Verdict:
    """answer: the ToyRun of the section-5 baseline (codebook loss, no k-means, no restarts) trained on `data` with
    starting codes the learner chose; at least TOY_MIN_USED of its TOY_CODES codes must be in use at the end."""
    if not isinstance(answer, ToyRun):
        return not_yet(f"`answer_4` should be what train_toy_vqvae returns (a ToyRun), got {type(answer).__name__}")
    quantizer = answer.model.quantizer
    if quantizer.codebook_size != TOY_CODES or quantizer.dim != data.shape[1]:
        return not_yet(f"keep the baseline's quantizer size: VectorQuantizer({TOY_CODES}, {data.shape[1]}, ...)")
    if quantizer.kmeans_init or quantizer.restart_after is not None or quantizer.ema:
        return not_yet("no remedy this time: kmeans_init=False, no restart_after, no EMA; change only where the "
                       "codes start")
    if answer.lr != TOY_LR or quantizer.beta != TOY_BETA:
        return not_yet(f"keep the baseline's training settings (lr={TOY_LR}, beta={TOY_BETA}): other settings can change "
                       "which codes survive, and the exercise is about where the codes start")
    if len(answer.codes_used) < TOY_STEPS:
        return not_yet(f"train as long as the baseline did: steps={TOY_STEPS} (your run has "
                       f"{len(answer.codes_used)})")
    with torch.no_grad():  # usage measured here, on all of `data`, rather than read from the run's own record
        used = int(torch.unique(quantizer.encode(answer.model.encoder(data))).numel())
    if used < TOY_MIN_USED:
        return not_yet(f"{used} of {TOY_CODES} codes in use after training: a code that starts where no data point "
                       "is nearest is never picked, so it never moves. The encoder starts as the identity, so at "
                       "step 0 the encoder outputs ARE the data points: start every code where some of them are")
    return correct(f"{used} of {TOY_CODES} codes in use without any remedy: a code that starts on the data is picked "
                   "from step 1 and follows its points")
