"""Checks for the exercises of notebook 02 (training the VQ-VAE)."""

from __future__ import annotations

import math

import torch

from facegen import metrics
from facegen.exercises import Verdict, as_number, check, close, correct, not_yet


@check("answer_1")
def psnr_by_hand(answer, reconstruction: torch.Tensor, original: torch.Tensor) -> Verdict:
    """Exercise 1: the PSNR (dB) of one reconstruction, images in [-1, 1]."""
    mine = as_number(answer, "answer_1")
    expected = float(metrics.psnr(reconstruction[None], original[None]))
    if close(mine, expected, abs_tol=1e-3):
        return correct(f"{expected:.2f} dB = 10 log10(range² / MSE), with range 2 for images in [-1, 1]")
    if close(mine, expected - 20 * math.log10(2), abs_tol=1e-3):
        return not_yet("the peak-to-peak range of images in [-1, 1] is 2, not 1")
    return not_yet("take the mean of the squared differences over every pixel and channel, then 10 log10(range² / MSE)")


@check("answer_2")
def bits_at_perplexity(answer, perplexity: float, n_tokens: int = 256) -> Verdict:
    """Exercise 2: bits per image of `n_tokens` tokens coded independently with the validation code frequencies,
    whose entropy is ln(perplexity) nats: n_tokens x log2(perplexity)."""
    mine = as_number(answer, "answer_2")
    expected = n_tokens * math.log2(perplexity)
    if close(mine, expected, rel=1e-4):
        return correct(f"{expected:,.0f} bits per image = {n_tokens} x log2({perplexity:.1f}): a little under the "
                       f"{n_tokens * 9:,} of 9 bits per token")
    if close(mine, n_tokens * math.log(perplexity), rel=1e-4):
        return not_yet("that is in nats; a bit is ln 2 nats")
    if close(mine, math.log2(perplexity), rel=1e-4):
        return not_yet("that is per token; a face has many tokens")
    if close(mine, n_tokens * perplexity, rel=1e-4):
        return not_yet("the perplexity is a number of codes, not bits: the entropy is the log of it")
    return not_yet("the perplexity is exp(entropy): each token costs log2(perplexity) bits on average")


@check("answer_3")
def vq_loss_with_beta(answer, model: torch.nn.Module, x: torch.Tensor, beta: float = 1.0) -> Verdict:
    """Exercise 3: the VQ loss of batch `x` with the commitment weight set to `beta`: beta x mean ||z - e||^2, plus
    the codebook loss mean ||e - z||^2 unless the codebook is updated by EMA. Computed in eval mode, so the check
    changes nothing in `model`."""
    mine = as_number(answer, "answer_3")
    if model.quantizer.beta == beta:
        return not_yet(f"`model` itself now has beta = {beta}: the rest of the notebook would use it. Set it back to "
                       "the profile's value and change beta on a copy (copy.deepcopy(model))")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            vq = model.quantizer(model.encoder(x))
            commitment = torch.mean((vq.quantized - model.encoder(x)) ** 2)
    finally:
        model.train(was_training)
    expected = (beta if model.quantizer.ema else 1 + beta) * float(commitment)
    if close(mine, expected, rel=1e-4):
        return correct(f"VQ loss {expected:.4g} with beta = {beta}: the commitment term scales with beta")
    if close(mine, float(vq.loss), rel=1e-4):
        return not_yet(f"that is the loss with the model's own beta ({model.quantizer.beta}); change beta on a copy "
                       "of the model first")
    return not_yet("set `beta` on the copy's quantizer, run the copy on x in eval mode (no EMA update) and take the "
                   "quantizer output's `.loss`")
