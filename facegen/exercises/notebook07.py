"""Checks for the exercises of notebook 07 (VQGAN comparison): bits per image of a tokenizer design, a deeper
PatchGAN's logits and receptive field, taming's adaptive GAN weight, and when the discriminator comes on.

Each check computes the expected answer from `facegen.vqgan_losses` or from what the notebook passes in, never from
a stored number."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from facegen.exercises import as_number, check, close, correct, not_yet, unpack
from facegen.vqgan_losses import adaptive_weight, receptive_field


@check("answer_1")
def bits_per_image(answer, side: int, f: int, K: int):
    """answer: (tokens, bits) for one `side` px image through a tokenizer with downsampling `f` and `K` codes."""
    tokens, bits = unpack(answer, 2, "answer_1")
    tokens, bits = as_number(tokens, "the number of tokens"), as_number(bits, "the number of bits")
    grid = side // f
    expected_tokens, bits_per_token = grid * grid, math.log2(K)
    if not close(tokens, expected_tokens):
        if close(tokens, grid):
            return not_yet("that is the number of tokens along one side; the token grid is square")
        return not_yet("the encoder divides each side of the image by f: the token grid is (side / f) x (side / f)")
    if close(bits, expected_tokens * K):
        return not_yet("a token is one choice among K codes: writing it down takes log2 K bits, not K")
    if close(bits, expected_tokens * math.log(K)):
        return not_yet("that is in nats (natural log); bits use log base 2 (math.log2)")
    if not close(bits, expected_tokens * bits_per_token):
        return not_yet("bits per image = tokens x bits per token, and one token among K codes carries log2 K bits")
    return correct(f"a {grid}x{grid} grid: {expected_tokens:,} tokens x {bits_per_token:g} bits = "
                   f"{expected_tokens * bits_per_token:,.0f} bits, and a GPT sequence {expected_tokens:,} tokens long")


def _stride2_convs(discriminator: nn.Module) -> int:
    return sum(1 for m in discriminator.modules() if isinstance(m, nn.Conv2d) and tuple(m.stride) == (2, 2))


def _output_side(discriminator: nn.Module, side: int) -> int:
    """The side of the logit map for a `side` px input, from the discriminator's convolutions (nothing is run)."""
    for m in discriminator.modules():
        if isinstance(m, nn.Conv2d):
            side = (side + 2 * m.padding[0] - m.dilation[0] * (m.kernel_size[0] - 1) - 1) // m.stride[0] + 1
    return side


@check("answer_2")
def deeper_patchgan(answer, discriminator: nn.Module, image_side: int, n_layers: int = 4):
    """answer: (logits per side, receptive field in px) of `discriminator`, a PatchGAN the learner built with
    `n_layers` stride-2 layers, on `image_side` px images."""
    logits, size = unpack(answer, 2, "answer_2")
    logits, size = as_number(logits, "the logits per side"), as_number(size, "the receptive field")
    built = _stride2_convs(discriminator)
    if built != n_layers:
        return not_yet(f"your `discriminator_4` has {built} stride-2 layers: build it with n_layers={n_layers} in the "
                       f"cell above, run that cell, then read the answer off the new `logits_4`")
    expected_logits, expected_size = _output_side(discriminator, image_side), receptive_field(n_layers)
    if not close(logits, expected_logits):
        if close(logits, image_side // 2 ** n_layers):
            return not_yet("that is the side after the stride-2 layers; the last two 4x4 convs have stride 1 and "
                           "padding 1, and each takes one more pixel off (or read it off `logits_4.shape`)")
        return not_yet("read the logits per side off `logits_4.shape` (its last two numbers)")
    if close(size, receptive_field(n_layers - 1)):
        return not_yet(f"that is the receptive field of {n_layers - 1} stride-2 layers; walk back through one more")
    if close(size, 2 * receptive_field(n_layers - 1)):
        return not_yet("a stride-2 4x4 conv maps a receptive field r to 2r + 2, not 2r: the kernel reaches "
                       "beyond the stride")
    if not close(size, expected_size):
        return not_yet("walk back from one logit: start at r = 1; the two stride-1 4x4 convs at the end add 3 each, "
                       "then every stride-2 4x4 conv maps r to 2r + 2")
    what = (f"more than the whole {image_side} px face: a logit no longer judges a patch but the face"
            if expected_size >= image_side else f"a patch of the {image_side} px face")
    return correct(f"{expected_logits}x{expected_logits} logits, each seeing {expected_size}x{expected_size} px, "
                   f"{what}")


@check("answer_3")
def adaptive_gan_weight(answer, nll_grad_norm: float, g_grad_norm: float, disc_weight: float):
    """answer: taming's GAN weight when the reconstruction and GAN gradients at the last layer have these norms."""
    weight = as_number(answer, "answer_3")
    layer = torch.zeros(2, requires_grad=True)  # a toy last layer whose two gradients have exactly these norms
    nll = (layer * torch.tensor([nll_grad_norm, 0.0])).sum()
    g_loss = (layer * torch.tensor([0.0, g_grad_norm])).sum()
    expected = float(adaptive_weight(nll, g_loss, layer, disc_weight=disc_weight))
    if close(weight, expected, rel=1e-4):
        return correct(f"lambda = {expected:.3f}: a GAN gradient {nll_grad_norm / g_grad_norm:g}x weaker than the "
                       f"reconstruction's is weighted up until both push the last layer equally hard")
    if close(weight, g_grad_norm / nll_grad_norm * disc_weight, rel=1e-3):
        return not_yet("upside down: the weight is the reconstruction gradient's norm over the GAN gradient's, so "
                       "a weak GAN gradient gets a large weight")
    if close(weight, nll_grad_norm / (g_grad_norm + 1e-4), rel=1e-3) or close(weight, nll_grad_norm / g_grad_norm,
                                                                             rel=1e-3):
        return not_yet("the ratio is right; what multiplies it at the end?")
    if close(weight, nll_grad_norm / g_grad_norm * disc_weight, rel=1e-3):
        return not_yet("close: read the denominator in `adaptive_weight`'s source above once more")
    return not_yet("taming's weight is ||grad of the reconstruction loss|| / (||grad of the GAN loss|| + a small "
                   "constant), times disc_weight: see `adaptive_weight`'s source above")


@check("answer_4")
def last_quarter_disc_start(answer, profile):
    """answer: a copy of `profile` whose small VQGAN trains with the GAN term for the last quarter of its steps."""
    if not hasattr(answer, "vqgan") or not hasattr(answer.vqgan, "disc_start"):
        raise TypeError(f"answer_4 should be a profile, e.g. profile.replace(vqgan={{...}}); got "
                        f"{type(answer).__name__}")
    mine, theirs = answer.vqgan, profile.vqgan
    steps, disc_start = theirs.steps, as_number(mine.disc_start, "disc_start")
    if mine.steps != steps:
        return not_yet("keep the run's length (`vqgan.steps`); change only when the discriminator comes on")
    if disc_start == theirs.disc_start:
        if answer.gan_decoder != profile.gan_decoder:
            return not_yet("that changed the GAN-tuned decoder's settings (`gan_decoder`); the from-scratch VQGAN's "
                           "are under `vqgan`")
        return not_yet("that is the profile's default, which switches the GAN term on halfway through the run")
    if dataclasses.replace(mine, disc_start=theirs.disc_start) != theirs or any(
            getattr(answer, f.name) != getattr(profile, f.name) for f in dataclasses.fields(profile)
            if f.name != "vqgan"):
        return not_yet("change only `vqgan.disc_start`: profile.replace(vqgan={'disc_start': ...})")
    gan_steps = steps - disc_start
    if abs(gan_steps - steps / 4) < 1:
        return correct("the discriminator comes on for the last quarter of the run")
    if abs(disc_start - steps / 4) < 1:
        return not_yet("disc_start is the step at which the GAN term comes ON: yours leaves it on for three quarters "
                       "of the run")
    return not_yet(f"with disc_start = {disc_start:g} the GAN term trains for {gan_steps:g} of the {steps} steps; "
                   f"it should train for a quarter of them")
