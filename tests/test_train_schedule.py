import math

import pytest
import torch

from facegen.train.schedule import batch_indices, cosine_with_warmup, step_generator, warmup_steps


def test_batch_indices_are_seeded_permutations_per_epoch():
    batches = [batch_indices(step, 10, 5, seed=3) for step in range(4)]
    assert sorted(torch.cat(batches[:2]).tolist()) == list(range(10))  # epoch 0 covers every image once
    assert sorted(torch.cat(batches[2:]).tolist()) == list(range(10))
    assert not torch.equal(torch.cat(batches[:2]), torch.cat(batches[2:]))  # a new order each epoch
    assert torch.equal(batch_indices(3, 10, 5, seed=3), batches[3])  # recomputable after a restart


def test_cosine_with_warmup_by_hand():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = cosine_with_warmup(optimizer, warmup=2, total=6)
    lrs = []
    for _ in range(7):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.5) and lrs[1] == pytest.approx(1.0)
    assert lrs[4] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lrs[6] == pytest.approx(0.1)


def test_warmup_is_a_tenth_of_the_run_capped():
    assert warmup_steps(1600, 50) == 50
    assert warmup_steps(40, 50) == 5  # 40 // 10 + 1
    assert warmup_steps(1, 100) == 1  # never zero: the schedule divides by it


def test_step_generators_are_reproducible_and_distinct_per_seed_and_step():
    draw = lambda seed, step: torch.rand(4, generator=step_generator(seed, step))  # noqa: E731
    assert torch.equal(draw(0, 7), draw(0, 7))
    assert not torch.equal(draw(0, 7), draw(0, 8))
    assert not torch.equal(draw(0, 7), draw(1, 7))
    assert step_generator(0, 5).device.type == "cpu"  # the same numbers on every device


def test_batch_indices_refuse_an_empty_dataset():
    with pytest.raises(ValueError, match="n=0"):
        batch_indices(0, 0, 4, seed=0)
