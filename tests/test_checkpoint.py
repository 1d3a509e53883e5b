import random

import numpy as np
import pytest
import torch

from facegen.checkpoint import atomic_write_json, load_checkpoint, save_checkpoint


def test_checkpoint_restores_modules_and_every_rng(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    save_checkpoint(tmp_path / "c.pt", model=model, optimizer=optimizer, step=7)
    expected = (torch.rand(3), np.random.rand(), random.random())

    other = torch.nn.Linear(3, 2)
    other_opt = torch.optim.Adam(other.parameters(), lr=0.1)
    rest = load_checkpoint(tmp_path / "c.pt", model=other, optimizer=other_opt)
    assert rest == {"step": 7}
    assert torch.equal(other.weight, model.weight)
    assert other_opt.state_dict()["state"][0]["step"] == optimizer.state_dict()["state"][0]["step"]
    got = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt is not a readable facegen checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")
    save_checkpoint(tmp_path / "c.pt", step=1)
    with pytest.raises(ValueError, match="lacks optimizer"):
        load_checkpoint(tmp_path / "c.pt", optimizer=torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1))


def test_atomic_write_json_replaces_whole_file(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"b": 2})
    assert path.read_text() == '{\n  "b": 2\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_folder_swaps_in_whole_and_keeps_the_old_one_on_failure(tmp_path):
    from facegen.checkpoint import atomic_folder

    target = tmp_path / "out"
    with atomic_folder(target) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_folder(target) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert (target / "a.txt").read_text() == "first"
    with atomic_folder(target) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary or old folders left


def test_a_recipe_round_trips_and_an_unreadable_record_names_its_file(tmp_path):
    from facegen.checkpoint import RECIPE_FILE, saved_recipe, write_recipe

    assert saved_recipe(tmp_path) is None  # nothing recorded
    write_recipe(tmp_path, {"lr": 0.002, "levels": [8, 8]})
    assert saved_recipe(tmp_path) == {"lr": 0.002, "levels": [8, 8]}
    record = tmp_path / RECIPE_FILE
    record.write_text('{"format": 1, "profile": "cpu"}')  # a GPT's metadata from before recipes: nothing to check
    assert saved_recipe(tmp_path) is None
    for damage in ("{not json", '["a list"]', '{"recipe": 5}'):
        record.write_text(damage)
        with pytest.raises(ValueError, match=str(record)):
            saved_recipe(tmp_path)
