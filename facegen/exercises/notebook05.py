"""Checks for the exercises of notebook 05 (training GPT-2 on faces)."""

from __future__ import annotations

import math

import torch

from facegen.exercises import Verdict, as_number, check, close, correct, not_yet, unpack
from facegen.gpt import bits_per_image, gpt_loss
from facegen.tokens import Vocabulary


@check("answer_1")
def effective_batch(answer, gpt_config, vocab: Vocabulary) -> Verdict:
    """Exercise 1: (sequences, tokens) one optimizer step of a profile's GPT sees on one GPU."""
    sequences, tokens = (as_number(a, "each value of answer_1") for a in unpack(answer, 2, "answer_1"))
    expected = gpt_config.batch_size * gpt_config.grad_accum
    if sequences == gpt_config.batch_size:
        return not_yet("one optimizer step sees every micro-batch it accumulated, not just one")
    if sequences != expected:
        return not_yet("read batch_size and grad_accum in the profile's GPT settings")
    if tokens != expected * vocab.length:
        return not_yet(f"every sequence has the same length: count its tokens (start, attributes, image start, "
                       f"image tokens, end)")
    return correct(f"{expected} sequences = {expected * vocab.length:,} tokens per optimizer step")


@check("answer_2")
def bits_for_loss(answer, vocab: Vocabulary, loss: float = 2.0) -> Verdict:
    """Exercise 2: bits per image for a loss of `loss` nats per token."""
    mine = as_number(answer, "answer_2")
    expected = bits_per_image(loss, vocab)
    if close(mine, expected, rel=1e-6):
        return correct(f"{expected:,.0f} bits per image: {vocab.n_image_tokens} tokens x {loss} nats / ln 2")
    if close(mine, vocab.n_image_tokens * loss, rel=1e-6):
        return not_yet("those are nats; one bit is ln 2 nats")
    if close(mine, loss / math.log(2), rel=1e-6):
        return not_yet("that is per token; an image has many image tokens")
    return not_yet("nats per token x image tokens per face, converted from nats to bits")


@check("answer_3")
def accumulated_gradients(answer, model: torch.nn.Module, micro_batches: list[torch.Tensor],
                          vocab: Vocabulary) -> Verdict:
    """Exercise 3: `answer` is the learner's function micro_batches -> {parameter name: gradient}. Called here on
    unequal micro-batches, it must run one forward pass per micro-batch (accumulating, not concatenating) and return
    the gradient of the mean loss over all their sequences together."""
    if not callable(answer):
        raise TypeError("answer_3 should be your function `my_gradients` itself (no brackets), not its result")
    seen = []
    hook = model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(len(kwargs.get(
        "input_ids", args[0] if args else []))), with_kwargs=True)
    try:
        mine = answer(micro_batches)
    finally:
        hook.remove()
    model.zero_grad(set_to_none=True)
    gpt_loss(model, torch.cat(micro_batches), vocab).backward()
    full = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    sizes = [len(m) for m in micro_batches]
    if seen != sizes:
        return not_yet(f"run one forward and backward pass per micro-batch ({' + '.join(map(str, sizes))} "
                       f"sequences); your function ran the model on batches of {seen or 'nothing'}")
    if not isinstance(mine, dict) or set(mine) != set(full):
        return not_yet("return the gradient of every parameter, as `gradients` does")
    if all(torch.allclose(mine[n], full[n], atol=1e-6, rtol=1e-4) for n in full):
        return correct(f"micro-batches of {' + '.join(map(str, sizes))} sequences, each loss weighted by its share of "
                       "the sequences, give the full-batch gradient")
    return not_yet("a micro-batch's loss is a mean over its own sequences: weight it by its share of all the "
                   "sequences (its size / the total), not by 1 / the number of micro-batches")


@check("answer_4")
def uniform_perplexity(answer, vocab: Vocabulary) -> Verdict:
    """Exercise 4: the perplexity of the uniform baseline over the image codes."""
    mine = as_number(answer, "answer_4")
    if close(mine, vocab.codebook_size, rel=1e-6):
        return correct(f"exp(ln K) = K = {vocab.codebook_size}: a model that knows nothing chooses among all codes; "
                       "one that beats it lies between 1 and K")
    if close(mine, math.log(vocab.codebook_size), rel=1e-6):
        return not_yet("that is the loss ln K; the perplexity is exp(loss)")
    if close(mine, vocab.size, rel=1e-6):
        return not_yet("the grammar allows only image codes at an image position, not the whole vocabulary")
    return not_yet("the uniform baseline's loss is ln K; what is exp of it?")
