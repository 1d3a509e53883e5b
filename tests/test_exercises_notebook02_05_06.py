"""The exercise checks of notebooks 02, 05 and 06 accept the right answer and reject typical wrong ones."""

import copy
import math

import pytest
import torch

from facegen.config import get_profile
from facegen.exercises import NOT_ATTEMPTED, NOT_YET, notebook02, notebook05, notebook06
from facegen.gpt import bits_per_image, build_gpt, gpt_loss
from facegen.tokens import Vocabulary
from facegen.vqvae import VQVAE

VOCAB = Vocabulary(512)


def assert_not_yet(verdict, hint):
    assert verdict.status == NOT_YET and hint in verdict.message, verdict


@pytest.mark.parametrize("check", [notebook02.psnr_by_hand, notebook02.bits_at_perplexity,
                                   notebook02.vq_loss_with_beta, notebook05.effective_batch, notebook05.bits_for_loss,
                                   notebook05.accumulated_gradients, notebook05.uniform_perplexity,
                                   notebook06.wilson_by_hand, notebook06.completion_new_tokens,
                                   notebook06.top_k_scores])
def test_an_empty_answer_is_not_attempted(check):
    assert check(None, None).status == NOT_ATTEMPTED


def test_psnr_by_hand():
    original = torch.zeros(3, 4, 4)
    reconstruction = torch.full((3, 4, 4), 0.2)  # MSE 0.04 -> 10 log10(4 / 0.04) = 20 dB
    assert notebook02.psnr_by_hand(20.0, reconstruction, original)
    assert_not_yet(notebook02.psnr_by_hand(10 * math.log10(1 / 0.04), reconstruction, original), "range")
    assert_not_yet(notebook02.psnr_by_hand(13.0, reconstruction, original), "10 log10")


def test_bits_at_perplexity():
    assert notebook02.bits_at_perplexity(256 * math.log2(461.6), 461.6)
    assert notebook02.bits_at_perplexity(256 * 8, 256.0)  # 256 equally used codes: 8 bits per token
    assert_not_yet(notebook02.bits_at_perplexity(256 * math.log(461.6), 461.6), "nats")
    assert_not_yet(notebook02.bits_at_perplexity(math.log2(461.6), 461.6), "per token")
    assert_not_yet(notebook02.bits_at_perplexity(256 * 461.6, 461.6), "number of codes")
    assert_not_yet(notebook02.bits_at_perplexity(2304, 461.6), "exp(entropy)")


@pytest.mark.parametrize("ema", [True, False])
def test_vq_loss_with_beta(ema):
    torch.manual_seed(0)
    model = VQVAE(codebook_size=8, embed_dim=4, hidden=8, n_res_blocks=1, ema=ema).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z = model.encoder(x)
        mse = torch.mean((model.quantizer(z).quantized - z) ** 2)
        own = float(model.quantizer(z).loss)
    copied = copy.deepcopy(model)
    copied.quantizer.beta = 1.0
    with torch.no_grad():
        answer = copied(x)[1].loss
    assert math.isclose(float(answer), (1.0 if ema else 2.0) * float(mse), rel_tol=1e-5)
    assert notebook02.vq_loss_with_beta(answer, model, x)
    assert_not_yet(notebook02.vq_loss_with_beta(own, model, x), "model's own beta")
    assert_not_yet(notebook02.vq_loss_with_beta(own * 7, model, x), "eval mode")
    assert model.quantizer.beta == 0.25 and not model.training
    model.quantizer.beta = 1.0  # changed on the original instead of a copy
    assert_not_yet(notebook02.vq_loss_with_beta(answer, model, x), "on a copy")


def test_effective_batch():
    cfg = get_profile("gpu").gpt
    n = cfg.batch_size * cfg.grad_accum
    assert notebook05.effective_batch((n, n * VOCAB.length), cfg, VOCAB)
    assert_not_yet(notebook05.effective_batch((cfg.batch_size, cfg.batch_size * 277), cfg, VOCAB), "every micro")
    assert_not_yet(notebook05.effective_batch((n, n * 256), cfg, VOCAB), "same length")


def test_bits_for_loss():
    assert notebook05.bits_for_loss(256 * 2.0 / math.log(2), VOCAB)
    assert_not_yet(notebook05.bits_for_loss(512.0, VOCAB), "nats")
    assert_not_yet(notebook05.bits_for_loss(2.0 / math.log(2), VOCAB), "per token")
    assert_not_yet(notebook05.bits_for_loss(bits_per_image(2.0, VOCAB) + 5, VOCAB), "nats per token")


def test_accumulated_gradients_needs_one_pass_per_micro_batch_weighted_by_its_size():
    vocab = Vocabulary(16, ("Eyeglasses", "Smiling"), grid_size=4)
    torch.manual_seed(0)
    model = build_gpt(get_profile("ci"), vocab)
    batch = torch.randint(0, 16, (8, vocab.length))
    micro = [batch[:6], batch[6:]]

    def weighted(weight):
        def my_gradients(micro_batches):
            model.zero_grad(set_to_none=True)
            for m in micro_batches:
                (gpt_loss(model, m, vocab) * weight(m, micro_batches)).backward()
            return {name: p.grad.clone() for name, p in model.named_parameters()}
        return my_gradients

    def full_batch(micro_batches):  # the right gradient, but no accumulation
        model.zero_grad(set_to_none=True)
        gpt_loss(model, torch.cat(micro_batches), vocab).backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    assert notebook05.accumulated_gradients(weighted(lambda m, ms: len(m) / sum(map(len, ms))), model, micro, vocab)
    assert_not_yet(notebook05.accumulated_gradients(weighted(lambda m, ms: 1 / len(ms)), model, micro, vocab), "share")
    assert_not_yet(notebook05.accumulated_gradients(full_batch, model, micro, vocab), "one forward and backward")
    assert_not_yet(notebook05.accumulated_gradients(lambda ms: {"x": torch.zeros(1)}, model, micro, vocab),
                   "one forward")
    wrong_type = notebook05.accumulated_gradients(full_batch(micro), model, micro, vocab)  # the result, not the function
    assert wrong_type.status == NOT_YET and "itself" in wrong_type.message


def test_uniform_perplexity():
    assert notebook05.uniform_perplexity(512, VOCAB)
    assert_not_yet(notebook05.uniform_perplexity(math.log(512), VOCAB), "exp(loss)")
    assert_not_yet(notebook05.uniform_perplexity(VOCAB.size, VOCAB), "only image codes")


def test_wilson_by_hand():
    z = 1.959963984540054
    p, n = 16 / 17, 17
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert notebook06.wilson_by_hand((centre - half, centre + half))
    normal = z * math.sqrt(p * (1 - p) / n)
    assert_not_yet(notebook06.wilson_by_hand((p - normal, p + normal)), "normal approximation")
    assert_not_yet(notebook06.wilson_by_hand((0.7, 0.99)), "centre")
    assert notebook06.wilson_by_hand((3 / 10 - 0.2, 3 / 10 + 0.2), successes=3, n=10).status == NOT_YET


def test_completion_new_tokens():
    assert notebook06.completion_new_tokens(16 * 16 - 5 * 16 + 1, VOCAB)
    assert_not_yet(notebook06.completion_new_tokens(16 * 16 - 5 * 16, VOCAB), "does not end")
    assert_not_yet(notebook06.completion_new_tokens(16 * 16, VOCAB), "rows")


def test_top_k_scores_against_transformers():
    guided = torch.randn(1, 40, generator=torch.Generator().manual_seed(0))
    guided[0, 30:] = -math.inf  # what the grammar masked
    values, indices = guided.topk(10)
    right = torch.full_like(guided, -math.inf).scatter(1, indices, values)
    assert notebook06.top_k_scores(right, guided)
    assert_not_yet(notebook06.top_k_scores(guided, guided), "exactly 10")
    wrong = torch.full_like(guided, -math.inf)
    wrong[0, :10] = guided[0, :10]  # ten tokens, but the first ten rather than the highest
    assert_not_yet(notebook06.top_k_scores(wrong, guided), "torch.topk")
    assert notebook06.top_k_scores(torch.zeros(3), guided).status == NOT_YET
