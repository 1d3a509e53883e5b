"""facegen.train.averaging: the EMA of a model's weights, checked against the recurrence written out by hand."""

import pytest
import torch

from facegen.train.averaging import warmup_decay, weight_average
from facegen.train.engine import Engine


def weights_in_turn(n: int) -> list[torch.Tensor]:
    return [torch.randn(3, 2, generator=torch.Generator().manual_seed(k)) for k in range(n)]


def feed(averaged, model, weights):
    for w in weights:
        with torch.no_grad():
            model.weight.copy_(w)
        averaged.update_parameters(model)


def test_warmup_decay_by_hand():
    assert warmup_decay(0.99, 0) == pytest.approx(1 / 10)
    assert warmup_decay(0.99, 10) == pytest.approx(11 / 20)
    assert warmup_decay(0.99, 890) == pytest.approx(891 / 900)  # the warm-up reaches 0.99 at n = 890
    assert warmup_decay(0.99, 891) == 0.99 and warmup_decay(0.5, 9) == 0.5  # 10 / 19 > 0.5


@pytest.mark.parametrize("decay", [0.0, 0.3, 0.99])
def test_the_average_follows_the_warm_up_recurrence(decay):
    model = torch.nn.Linear(2, 3, bias=False)
    averaged = weight_average(model, decay)
    weights = weights_in_turn(6)
    feed(averaged, model, weights)
    expected = weights[0]  # the first update copies
    for n, w in enumerate(weights[1:], start=1):
        d = min(decay, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * w
    assert torch.allclose(averaged.module.weight, expected, atol=1e-6)
    if decay == 0.0:
        assert torch.equal(averaged.module.weight, weights[-1])


def test_without_warm_up_decay_is_constant_and_1_keeps_the_first_weights():
    model = torch.nn.Linear(2, 3, bias=False)
    weights = weights_in_turn(4)
    plain, frozen = weight_average(model, 0.5, warmup=False), weight_average(model, 1.0, warmup=False)
    for averaged in (plain, frozen):
        feed(averaged, model, weights)
    expected = weights[0]
    for w in weights[1:]:
        expected = 0.5 * expected + 0.5 * w
    assert torch.allclose(plain.module.weight, expected, atol=1e-6)
    assert torch.equal(frozen.module.weight, weights[0])


def test_the_average_is_frozen_so_the_engine_does_not_wrap_it(tmp_path):
    model = torch.nn.Linear(2, 3)
    averaged = weight_average(model, 0.9)
    assert not any(p.requires_grad for p in averaged.parameters()) and model.weight.requires_grad
    with Engine("avg", tmp_path, 1, settings={}, val_every=1, items_per_step=1, progress=False) as engine:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        _, _, placed = engine.prepare(model=model, optimizer=optimizer, averaged=averaged)
    assert placed is averaged  # moved to the device in place, not wrapped


def test_the_average_keeps_tied_weights_tied():
    """GPT-2 ties its output layer to its token embeddings: the average must too, or the saved model would differ
    from the one evaluated."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=20, n_positions=8, n_layer=1, n_embd=8, n_head=2))
    averaged = weight_average(model, 0.5)
    averaged.update_parameters(model)
    with torch.no_grad():
        model.transformer.wte.weight.add_(1.0)
    averaged.update_parameters(model)
    assert averaged.module.lm_head.weight is averaged.module.transformer.wte.weight


@pytest.mark.parametrize("decay", [-0.1, 1.5])
def test_a_decay_outside_0_1_is_refused(decay):
    with pytest.raises(ValueError, match=r"decay must lie in \[0, 1\]"):
        weight_average(torch.nn.Linear(1, 1), decay)
