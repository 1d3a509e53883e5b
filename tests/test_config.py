import dataclasses
import json

import pytest

from facegen import config
from facegen.config import PROFILES, describe, get_profile


def test_profile_chosen_by_environment(monkeypatch):
    monkeypatch.setenv("FACEGEN_PROFILE", "ci")
    assert get_profile().name == "ci"
    monkeypatch.setenv("FACEGEN_PROFILE", " GPU ")
    assert get_profile().name == "gpu"


@pytest.mark.parametrize("cuda, expected", [(True, "gpu"), (False, "cpu")])
def test_default_profile_follows_the_device(monkeypatch, cuda, expected):
    monkeypatch.delenv("FACEGEN_PROFILE", raising=False)
    monkeypatch.setattr(config, "cuda_available", lambda: cuda)
    assert get_profile().name == expected


def test_unknown_profile_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("FACEGEN_PROFILE", "laptop")
    with pytest.raises(ValueError, match="FACEGEN_PROFILE='laptop' is not a profile; expected one of ci, cpu, gpu"):
        get_profile()
    with pytest.raises(ValueError, match="unknown profile 'big'"):
        get_profile("big")


def test_ci_and_cpu_share_every_format():
    ci, cpu = PROFILES["ci"], PROFILES["cpu"]
    assert ci.vqvae.codebook_size == cpu.vqvae.codebook_size == 512
    assert ci.data.image_size == cpu.data.image_size == 128  # 16x16 tokens in both
    assert ci.data.source == cpu.data.source == "synthfaces"
    assert ci.data.n_images < cpu.data.n_images and ci.vqvae.steps < cpu.vqvae.steps


def test_gpu_profile_uses_the_seed_hyperparameters():
    gpt = PROFILES["gpu"].gpt
    assert (gpt.n_layer, gpt.n_embd, gpt.n_head) == (12, 768, 12)
    assert (gpt.lr, gpt.batch_size, gpt.grad_accum, gpt.epochs, gpt.steps) == (2e-4, 40, 2, 5, None)
    assert PROFILES["gpu"].data.source == "celeba"


def test_replace_changes_only_the_named_fields():
    changed = PROFILES["ci"].replace(vqvae={"steps": 3})
    assert changed.vqvae.steps == 3 and changed.vqvae.hidden == PROFILES["ci"].vqvae.hidden
    assert PROFILES["ci"].vqvae.steps == 60  # the original is untouched (frozen dataclasses)


def test_paths_are_per_profile(monkeypatch, tmp_path):
    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path))
    assert PROFILES["cpu"].artifacts == tmp_path / "cpu"
    assert PROFILES["ci"].data_dir.name == "synthfaces-ci"
    monkeypatch.setenv("FACEGEN_DATA", str(tmp_path / "celeba"))
    assert PROFILES["gpu"].data_dir == tmp_path / "celeba"


def test_describe_names_profile_and_device():
    line = describe(PROFILES["ci"])
    assert line.startswith("profile 'ci': tiny models") and "device: cpu (" in line and "\n" not in line


def test_tokenizer_stages_get_the_quantizer_in_their_folder_and_the_rest_is_shared(monkeypatch, tmp_path):
    from facegen.classifier import classifier_folder
    from facegen.gpt import gpt_folder
    from facegen.tokenize_dataset import tokens_folder
    from facegen.vqvae_training import vqvae_folder

    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path))
    vq = PROFILES["cpu"]
    fsq = vq.replace(vqvae={"quantizer": "fsq"})
    assert (vqvae_folder(vq), tokens_folder(vq), gpt_folder(vq)) == (tmp_path / "cpu/vqvae", tmp_path / "cpu/tokens",
                                                                      tmp_path / "cpu/gpt")
    assert (vqvae_folder(fsq), tokens_folder(fsq), gpt_folder(fsq)) == (
        tmp_path / "cpu/vqvae-fsq", tmp_path / "cpu/tokens-fsq", tmp_path / "cpu/gpt-fsq")
    assert vqvae_folder(vq.replace(vqvae={"quantizer": "l2"})) == tmp_path / "cpu/vqvae-l2"
    assert classifier_folder(fsq) == classifier_folder(vq) and fsq.data_dir == vq.data_dir
    assert vqvae_folder(fsq.replace(vqvae={"quantizer": "vq"})) == vqvae_folder(vq)  # switching back finds the VQ


def test_training_recipe_is_what_decides_the_weights_as_json_reads_it_back():
    gpt = config.training_recipe(config.GPTConfig(lr=1e-3, val_every=7, compile="inductor"))
    assert gpt["lr"] == 1e-3 and gpt["n_embd"] == 128 and gpt["steps"] == 3200
    assert "val_every" not in gpt and "compile" not in gpt  # how a run goes, not what it learns
    assert set(gpt) == {f.name for f in dataclasses.fields(config.GPTConfig)} - {"val_every", "compile"}
    vq = config.training_recipe(config.VQVAEConfig())
    fsq = config.training_recipe(config.FSQVAEConfig(fsq_levels=(8, 5, 5), codebook_size=200))
    assert vq["quantizer"] == "vq" and fsq["quantizer"] == "fsq"  # a class attribute, still part of the recipe
    assert fsq["fsq_levels"] == [8, 5, 5] == json.loads(json.dumps(fsq))["fsq_levels"]  # a tuple reads back a list


def test_changed_settings_names_each_difference_by_its_dotted_key():
    saved = {"steps": 1600, "gpt": {"lr": 0.002, "n_embd": 192}, "seed": 0, "old": True}
    now = {"steps": 3200, "gpt": {"lr": 0.002, "n_embd": 128}, "seed": 0, "new": "x"}
    assert config.changed_settings(saved, now) == ("gpt.n_embd 192 -> 128, new (unset) -> 'x', old True -> (unset), "
                                                   "steps 1600 -> 3200")
    assert config.changed_settings(saved, saved) == ""
    assert config.changed_settings({"levels": [8, 8]}, {"levels": [8, 5]}) == "levels [8, 8] -> [8, 5]"
