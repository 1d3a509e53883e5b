"""Never lose a user's data or model (issue 17): guarded datasets and artifacts, early argument checks, one clear
error for corrupt files and full disks, atomic saves that leave nothing behind, a lock per artifacts folder."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from facegen.checkpoint import (ArtifactBusyError, NoSpaceError, artifact_lock, atomic_folder, atomic_write_bytes,
                                atomic_write_json, save_checkpoint)
from facegen.cli import main

REPO = Path(__file__).resolve().parents[1]


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in Path(folder).iterdir())


# ------------------------------------------------------------------------------------------------ saves and disks


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs (we run as root in CI); skipped where it cannot be mounted."""
    folder = tmp_path / "disk"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or done.returncode})")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)


def test_a_full_disk_says_so_names_the_file_and_keeps_the_previous_version(tiny_disk):
    atomic_write_bytes(tiny_disk / "model.bin", b"good")
    save_checkpoint(tiny_disk / "checkpoint.pt", step=1)
    with atomic_folder(tiny_disk / "model") as tmp:
        (tmp / "a.txt").write_text("good")
    before = names(tiny_disk)

    big = b"x" * 2_000_000
    with pytest.raises(NoSpaceError, match=r"no space left on device while writing .*model\.bin; nothing was replaced"):
        atomic_write_bytes(tiny_disk / "model.bin", big)
    with pytest.raises(NoSpaceError, match=r"while writing .*checkpoint\.pt; nothing was replaced"):
        save_checkpoint(tiny_disk / "checkpoint.pt", weights=torch.zeros(500_000))
    with pytest.raises(NoSpaceError, match=r"while writing .*model; nothing was replaced"):
        with atomic_folder(tiny_disk / "model") as tmp:
            (tmp / "a.txt").write_bytes(big)

    assert names(tiny_disk) == before  # no temporary file left to keep the disk full
    assert (tiny_disk / "model.bin").read_bytes() == b"good"
    assert (tiny_disk / "model" / "a.txt").read_text() == "good"
    assert torch.load(tiny_disk / "checkpoint.pt", weights_only=False)["step"] == 1


def test_a_full_disk_while_saving_token_shards_keeps_the_previous_ones(tiny_disk):
    import datasets
    import numpy as np

    from facegen.tokenize_dataset import TokenInfo, _save_atomic, read_token_info, split_table

    def splits(n):
        codes = torch.from_numpy(np.random.default_rng(0).integers(0, 512, (n, 16, 16)).astype(np.int16))
        return datasets.DatasetDict({"train": split_table(codes, np.ones((n, 40), np.int8))})

    info = TokenInfo(vqvae="v", data="d", codebook_size=512, grid_size=16)
    _save_atomic(splits(4), info, tiny_disk / "tokens")
    before = snapshot(tiny_disk)
    with pytest.raises(NoSpaceError, match=r"while writing .*tokens; nothing was replaced"):
        _save_atomic(splits(4000), info, tiny_disk / "tokens")
    assert snapshot(tiny_disk) == before and read_token_info(tiny_disk / "tokens") == info


def test_enospc_from_any_write_is_one_clear_error_and_leaves_nothing(tmp_path, monkeypatch):
    import io

    import facegen.checkpoint as checkpoint

    atomic_write_json(tmp_path / "a.json", {"good": 1})

    class FullDisk(io.RawIOBase):
        def writable(self):
            return True

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    real_fdopen = os.fdopen
    monkeypatch.setattr(checkpoint.os, "fdopen", lambda fd, mode="r": (real_fdopen(fd, mode).close(), FullDisk())[1])
    with pytest.raises(NoSpaceError, match=r"while writing .*a\.json; nothing was replaced"):
        atomic_write_json(tmp_path / "a.json", {"bad": 2})
    with pytest.raises(NoSpaceError, match=r"while writing .*c\.pt; nothing was replaced"):
        save_checkpoint(tmp_path / "c.pt", step=2)
    monkeypatch.undo()
    assert names(tmp_path) == ["a.json"] and json.loads((tmp_path / "a.json").read_text()) == {"good": 1}


def test_temporary_names_are_unique_so_two_writers_do_not_collide(tmp_path, monkeypatch):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(Path(src).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    atomic_write_bytes(tmp_path / "f.bin", b"1")
    atomic_write_bytes(tmp_path / "f.bin", b"2")
    save_checkpoint(tmp_path / "c.pt", step=1)
    save_checkpoint(tmp_path / "c.pt", step=2)
    assert len(set(seen)) == len(seen) == 4
    assert all(name.startswith(".") for name in seen)  # hidden while half-written


def test_atomic_folder_leaves_nothing_behind_on_success_failure_and_a_second_call(tmp_path):
    target = tmp_path / "model"
    for round in range(3):
        with atomic_folder(target) as tmp:
            (tmp / "w.txt").write_text(str(round))
        assert names(tmp_path) == ["model"]
    with pytest.raises(KeyError):
        with atomic_folder(target) as tmp:
            (tmp / "w.txt").write_text("half")
            raise KeyError("interrupted")
    assert names(tmp_path) == ["model"] and (target / "w.txt").read_text() == "2"


def test_leftovers_of_a_killed_save_are_removed_and_a_swapped_out_model_comes_back(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has ended
    (tmp_path / f".tokens.tmp{pid}").mkdir()  # the old fixed names, as issue 17 found them
    (tmp_path / f".tokens.tmp{pid}-abc").mkdir()
    (tmp_path / f".tokens.old{pid}").mkdir()
    (tmp_path / f".c.pt.{pid}-xyz.tmp").write_bytes(b"half")
    (tmp_path / "c.pt.tmp").write_bytes(b"half")
    alive = tmp_path / f".tokens.tmp{os.getpid()}-live"  # another writer's work in progress: not touched
    alive.mkdir()
    with atomic_folder(tmp_path / "tokens") as tmp:
        (tmp / "t").write_text("new")
    save_checkpoint(tmp_path / "c.pt", step=1)
    assert names(tmp_path) == sorted([alive.name, "c.pt", "tokens"])

    # killed between moving the old model aside and moving the new one in: the old one is put back
    model = tmp_path / "gpt"
    (tmp_path / f".gpt.old{pid}-def").mkdir()
    (tmp_path / f".gpt.old{pid}-def" / "weights").write_text("trained")
    with pytest.raises(RuntimeError):
        with atomic_folder(model) as tmp:
            raise RuntimeError("this save fails")
    assert (model / "weights").read_text() == "trained"


def test_a_kill_during_a_save_keeps_the_previous_model(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        from facegen.checkpoint import atomic_folder
        with atomic_folder(Path({str(tmp_path / 'model')!r})) as tmp:
            (tmp / "config.json").write_text("new")
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    with atomic_folder(tmp_path / "model") as tmp:
        (tmp / "config.json").write_text("old")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO)
    assert done.returncode == -9
    assert (tmp_path / "model" / "config.json").read_text() == "old"
    with atomic_folder(tmp_path / "model") as tmp:  # the next save removes the killed one's folder
        (tmp / "config.json").write_text("newer")
    assert names(tmp_path) == ["model"]


# ------------------------------------------------------------------------------------------------------ the lock

HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from facegen.checkpoint import artifact_lock
    with artifact_lock(Path(sys.argv[1]), "the VQ-VAE"):
        print("held", flush=True)
        time.sleep(60)
""")


def test_a_second_process_is_told_who_holds_the_artifacts_folder(tmp_path):
    folder = tmp_path / "vqvae"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), "train-vqvae"], cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ArtifactBusyError) as caught:
            with artifact_lock(folder, "the VQ-VAE"):
                pytest.fail("two writers at once")
        message = str(caught.value)
        assert f"the VQ-VAE in {folder} is being written by another facegen process (pid {holder.pid}:" in message
        assert "train-vqvae" in message and message.endswith("wait for it or stop it")
    finally:
        holder.kill()
        holder.wait()
    with artifact_lock(folder, "the VQ-VAE"):  # free again once the holder is gone, however it ended
        with artifact_lock(folder, "the VQ-VAE"):  # re-entrant in one process
            pass
    with artifact_lock(folder, "the VQ-VAE"):
        pass


def test_two_cli_trainers_on_one_artifacts_folder(tmp_path, monkeypatch, capsys):
    import facegen.vqvae_training as vqvae_training

    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path / "artifacts"))
    folder = tmp_path / "artifacts" / "ci" / "vqvae"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(vqvae_training, "train_vqvae", lambda *a, **k: pytest.fail("trained without the lock"))
        assert main(["train-vqvae", "--profile", "ci", "--steps", "3"]) != 0
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert err.startswith("facegen: error: ") and err.count("\n") == 1 and f"pid {holder.pid}" in err


# ------------------------------------------------------------------------------------------------ the user's data


def ci_with_data(tmp_path, monkeypatch, data: Path, n: int = 12):
    from facegen.config import get_profile

    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("FACEGEN_DATA", str(data))
    return get_profile("ci").replace(data={"n_images": n})


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_users_celeba_layout_set_of_another_size_is_used_as_it_is_never_rewritten(tmp_path, monkeypatch, capsys,
                                                                                     make_celeba):
    from facegen.data.dataset import open_dataset
    from facegen.pipeline import ensure_synthfaces, load_images

    mine = make_celeba("mine").root  # 10 images: not the profile's 12
    before = snapshot(mine)
    profile = ci_with_data(tmp_path, monkeypatch, mine)
    assert ensure_synthfaces(profile, progress=False) == mine
    assert "using the 10-image CelebA-layout dataset in" in capsys.readouterr().out
    assert len(open_dataset(profile, "train")) == 6 and len(load_images(profile, "train", progress=False)) == 6
    assert snapshot(mine) == before


def test_a_synthfaces_set_the_user_made_by_hand_is_not_regenerated_for_the_profile(tmp_path, monkeypatch, capsys):
    """issue 17: `facegen data synth --n 400 --out D --seed 7; FACEGEN_DATA=D facegen tokenize --profile ci`."""
    from facegen.pipeline import ensure_synthfaces

    data = tmp_path / "D"
    assert main(["data", "synth", "--n", "14", "--out", str(data), "--seed", "7", "--workers", "1"]) == 0
    before = snapshot(data)
    profile = ci_with_data(tmp_path, monkeypatch, data)
    capsys.readouterr()
    ensure_synthfaces(profile, progress=False)
    assert snapshot(data) == before
    assert "using the 14 SynthFaces (seed 7) in" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["empty attribute file", "wrong count", "not utf-8", "no images"])
def test_an_unreadable_foreign_dataset_is_one_error_and_is_left_alone(tmp_path, monkeypatch, make_celeba, damage):
    from facegen.errors import ArtifactError
    from facegen.pipeline import ensure_synthfaces

    mine = make_celeba("mine").root
    attr = mine / "list_attr_celeba.txt"
    if damage == "empty attribute file":
        attr.write_text("")
    elif damage == "wrong count":
        attr.write_text("400" + attr.read_text()[2:])
    elif damage == "not utf-8":
        attr.write_bytes(b"\xff\xfe" + attr.read_bytes())
    else:
        for image in (mine / "img_align_celeba").iterdir():
            image.unlink()
    before = snapshot(mine)
    profile = ci_with_data(tmp_path, monkeypatch, mine)
    with pytest.raises(ArtifactError) as caught:
        ensure_synthfaces(profile, progress=False)
    message = str(caught.value)
    assert "\n" not in message and str(mine) in message and "did not generate" in message
    assert "FACEGEN_DATA" in message and "FACEGEN_PROFILE=gpu" in message
    assert snapshot(mine) == before


def test_a_folder_of_other_files_is_never_filled_with_synthfaces(tmp_path, monkeypatch):
    from facegen.errors import ArtifactError
    from facegen.pipeline import ensure_synthfaces

    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("mine")
    profile = ci_with_data(tmp_path, monkeypatch, home)
    with pytest.raises(ArtifactError, match=r"home is not empty \(thesis.tex\).*point FACEGEN_DATA at a new or empty"):
        ensure_synthfaces(profile, progress=False)
    assert names(home) == ["thesis.tex"]
    assert main(["tokenize", "--profile", "ci"]) == 2  # the CLI: one line, no traceback
    thesis = ci_with_data(tmp_path, monkeypatch, home / "thesis.tex")
    with pytest.raises(ArtifactError, match=r"thesis.tex \(the profile's data folder; FACEGEN_DATA\) is a file"):
        ensure_synthfaces(thesis, progress=False)
    assert (home / "thesis.tex").read_text() == "mine"


def test_data_synth_refuses_a_celeba_folder_it_did_not_make(tmp_path, make_celeba, capsys):
    mine = make_celeba("mine").root
    before = snapshot(mine)
    assert main(["data", "synth", "--n", "12", "--out", str(mine), "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("facegen: error: generate: ") and "did not generate" in err and err.count("\n") == 1
    assert snapshot(mine) == before


def test_synthfaces_made_before_the_marker_keep_working_and_marked_ones_follow_the_profile(tmp_path, monkeypatch,
                                                                                           capsys):
    from facegen.data.synthfaces import MARKER_FILE, generate, read_marker
    from facegen.pipeline import ensure_synthfaces, synthfaces_complete

    data = tmp_path / "data"
    profile = ci_with_data(tmp_path, monkeypatch, data)
    ensure_synthfaces(profile, progress=False)
    assert read_marker(data) == {"generator": "facegen SynthFaces", "n": 12, "seed": 0, "profile": "ci"}
    ensure_synthfaces(profile.replace(data={"n_images": 15}), progress=False)  # made for this profile: follows it
    assert synthfaces_complete(data, 15)
    (data / MARKER_FILE).unlink()  # as a folder made before markers existed
    capsys.readouterr()
    before = snapshot(data)
    assert ensure_synthfaces(profile.replace(data={"n_images": 15}), progress=False) == data
    assert snapshot(data) == before and capsys.readouterr().out == ""
    # an interrupted generation (marker, no attribute file) is finished on the next call
    generate(tmp_path / "cut", 12, workers=1, progress=False, profile="ci")
    (tmp_path / "cut" / "list_attr_celeba.txt").unlink()
    cut = ci_with_data(tmp_path, monkeypatch, tmp_path / "cut")
    ensure_synthfaces(cut, progress=False)
    assert synthfaces_complete(tmp_path / "cut", 12) and "did not finish" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- errors that say where


def test_a_wrong_sized_image_in_training_names_its_file(tmp_path, celeba):
    from PIL import Image

    from facegen.data.celeba import read_celeba
    from facegen.data.dataset import FaceDataset

    Image.new("RGB", (100, 100)).save(celeba.root / "img_align_celeba" / "000002.jpg")
    dataset = FaceDataset(read_celeba(celeba.root), "train", image_size=16)
    with pytest.raises(ValueError, match=r"img_align_celeba/000002\.jpg: face crop: expected .* got 100x100"):
        dataset[1]


def test_the_gpu_profile_without_celeba_points_to_the_readme(tmp_path, monkeypatch, capsys):
    from facegen.config import get_profile
    from facegen.pipeline import load_images

    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("FACEGEN_DATA", str(tmp_path / "celeba"))
    profile = get_profile("gpu")
    for missing in ("no folder", "empty folder"):
        if missing == "empty folder":
            (tmp_path / "celeba").mkdir()
        with pytest.raises(FileNotFoundError, match=r"CelebA not found in .*data/README.md.*FACEGEN_PROFILE=cpu"):
            load_images(profile, "train", progress=False)


def test_a_non_utf8_attribute_file_on_the_training_path_is_one_error_naming_it(tmp_path, monkeypatch, celeba):
    from facegen.pipeline import load_images

    attr = celeba.root / "list_attr_celeba.txt"
    attr.write_bytes(attr.read_bytes().replace(b"Bald", b"B\xe4ld"))
    for source in ("synthfaces", "celeba"):  # the ci profile (was a bare codec error) and the gpu profile's reader
        profile = ci_with_data(tmp_path, monkeypatch, celeba.root).replace(data={"source": source})
        with pytest.raises(ValueError, match=r"list_attr_celeba.txt, line 2: not a text file \(invalid UTF-8\)"):
            load_images(profile, "train", progress=False)


def test_data_summary_decodes_every_image_and_reports_each_bad_one(celeba, capsys):
    from PIL import Image

    images = celeba.root / "img_align_celeba"
    (images / "000002.jpg").write_bytes(b"")
    (images / "000003.jpg").write_bytes((images / "000003.jpg").read_bytes()[:400])
    Image.new("RGB", (100, 100)).save(images / "000004.jpg")
    assert main(["data", "summary", str(celeba.root)]) == 1
    out, err = capsys.readouterr()
    bad = [line for line in out.splitlines() if line.startswith("bad image")]
    assert [line.split(":")[0] for line in bad] == [f"bad image {images / f'00000{i}.jpg'}" for i in (2, 3, 4)]
    assert "0 bytes" in bad[0] and "cannot decode" in bad[1] and "100x100 pixels; expected 178x218" in bad[2]
    assert err.split("\n")[-2].startswith("facegen: error: 3 of 10 images in")  # after the progress bar
    assert err.count("facegen: error") == 1 and "Traceback" not in err
    assert main(["data", "summary", "--no-images", str(celeba.root)]) == 0  # text files only


def test_synthfaces_images_have_celebas_size(tmp_path):
    from facegen.data.celeba import read_celeba
    from facegen.data.summary import find_bad_images
    from facegen.data.synthfaces import generate

    generate(tmp_path / "sf", 10, workers=1, progress=False)
    assert find_bad_images(read_celeba(tmp_path / "sf"), progress=False) == []


# ------------------------------------------------------------------------------------------------ corrupt models


def save_tiny_gpt(folder: Path, fingerprint: str = "v1" * 32, steps: int = 200) -> Path:
    """A saved facegen GPT (model/ with config, weights, tokenizer and facegen.json), tiny."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from facegen.gpt import METADATA_FORMAT, _vocab_dict
    from facegen.tokens import Vocabulary, build_hf_tokenizer

    vocab = Vocabulary(512)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab.size, n_positions=vocab.length, n_layer=1, n_embd=16,
                                       n_head=2))
    target = folder / "model"
    model.save_pretrained(target)
    build_hf_tokenizer(vocab).save_pretrained(target)
    metadata = {"format": METADATA_FORMAT, "profile": "ci", "vqvae": {"fingerprint": fingerprint, "folder": "x"},
                "vocabulary": _vocab_dict(vocab), "parameters": 1, "steps": steps, "seconds": 1.0, "val_loss": 5.0,
                "bits_per_image": 1800.0}
    (target / "facegen.json").write_text(json.dumps(metadata))
    return target


@pytest.fixture
def ci_gpt(tmp_path, monkeypatch):
    """The ci profile with a trained GPT saved and tokens made by VQ-VAE "v1"; training anything fails the test."""
    from types import SimpleNamespace

    import facegen.gpt as gpt
    import facegen.pipeline as pipeline
    import facegen.tokenize_dataset as tokenize_dataset
    from facegen.config import get_profile

    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path / "artifacts"))
    profile = get_profile("ci")
    model = save_tiny_gpt(profile.artifacts / "gpt")
    state = SimpleNamespace(vqvae="v1" * 32, profile=profile, model=model)
    monkeypatch.setattr(pipeline, "ensure_tokens", lambda profile=None, progress=True, **kw: None)
    monkeypatch.setattr(tokenize_dataset, "read_token_info", lambda folder: SimpleNamespace(vqvae=state.vqvae))
    monkeypatch.setattr(gpt, "train_gpt", lambda *a, **k: pytest.fail("a trained GPT was replaced"))
    return state


def test_a_stale_gpt_is_an_error_naming_both_vqvaes_and_the_command_not_a_silent_retrain(ci_gpt):
    from facegen.errors import ArtifactError
    from facegen.pipeline import ensure_gpt

    assert ensure_gpt(ci_gpt.profile, progress=False).metadata["steps"] == 200
    before = snapshot(ci_gpt.model)
    ci_gpt.vqvae = "v2" * 32
    with pytest.raises(ArtifactError) as caught:
        ensure_gpt(ci_gpt.profile, progress=False)
    message = str(caught.value)
    assert "v1v1v1v1v1v1" in message and "v2v2v2v2v2v2" in message and str(ci_gpt.model) in message
    assert "`facegen train-gpt --restart --profile ci`" in message
    assert snapshot(ci_gpt.model) == before


def test_a_gpt_trained_with_settings_the_profile_no_longer_has_is_an_error_naming_each_change(ci_gpt):
    from facegen.config import training_recipe
    from facegen.errors import ArtifactError
    from facegen.pipeline import ensure_gpt

    profile = ci_gpt.profile
    assert "recipe" not in ensure_gpt(profile, progress=False).metadata  # saved before recipes: loaded unchecked
    record = ci_gpt.model / "facegen.json"
    metadata = json.loads(record.read_text())
    old = training_recipe(profile.replace(gpt={"n_embd": 192, "lr": 0.003}).gpt)  # e.g. a course update since
    record.write_text(json.dumps(metadata | {"recipe": old}))
    before = snapshot(ci_gpt.model)
    with pytest.raises(ArtifactError) as caught:
        ensure_gpt(profile, progress=False)
    message = str(caught.value)
    assert (f"the GPT in {ci_gpt.model} was trained with settings the 'ci' profile no longer has (trained -> now: "
            f"lr 0.003 -> {profile.gpt.lr!r}, n_embd 192 -> {profile.gpt.n_embd!r})") in message
    assert "`facegen train-gpt --restart --profile ci`" in message and "\n" not in message
    assert snapshot(ci_gpt.model) == before
    record.write_text(json.dumps(metadata | {"recipe": training_recipe(profile.gpt)}))
    assert ensure_gpt(profile, progress=False).metadata["recipe"] == training_recipe(profile.gpt)
    # how often a run validates or whether it compiles does not change what it learned
    assert ensure_gpt(profile.replace(gpt={"val_every": 1, "compile": "inductor"}), progress=False)


def test_a_vqvae_trained_with_settings_the_profile_no_longer_has_is_an_error_naming_each_change(tmp_path,
                                                                                                monkeypatch):
    import facegen.vqvae_training as vqvae_training
    from facegen.errors import ArtifactError
    from facegen.pipeline import ensure_vqvae
    from helpers import square_images
    from test_vqvae_training import TINY

    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path / "artifacts"))
    fsq = TINY.replace(vqvae={"quantizer": "fsq", "fsq_levels": (4, 4), "codebook_size": 16})
    for profile in (TINY, fsq):
        vqvae_training.train_vqvae(profile, square_images(8), square_images(2), progress=False)
    monkeypatch.setattr(vqvae_training, "train_vqvae", lambda *a, **k: pytest.fail("a trained VQ-VAE was replaced"))
    assert ensure_vqvae(TINY, progress=False).codebook_size == 16
    assert ensure_vqvae(TINY.replace(vqvae={"val_every": 1}), progress=False)  # how often it validated: the same
    model = vqvae_training.vqvae_folder(TINY) / "model"
    before = snapshot(model)
    with pytest.raises(ArtifactError) as caught:
        ensure_vqvae(TINY.replace(vqvae={"steps": 4320, "lr": 1e-3}), progress=False)
    assert str(caught.value).startswith(f"the VQ-VAE in {model} was trained with settings the 'ci' profile no longer "
                                        "has (trained -> now: lr 0.002 -> 0.001, steps 6 -> 4320); facegen does not "
                                        "replace a trained model by itself: retrain it with `facegen train-vqvae "
                                        "--restart --profile ci`")
    assert snapshot(model) == before
    with pytest.raises(ArtifactError, match=r"fsq_levels \[4, 4\] -> \[2, 8\].*train_vqvae\(profile, resume=False\)"):
        ensure_vqvae(fsq.replace(vqvae={"fsq_levels": (2, 8)}), progress=False)  # the CLI trains no FSQ
    (model / "facegen.json").write_text("{torn")
    with pytest.raises(ArtifactError, match=f"{model / 'facegen.json'} is unreadable.*--restart --profile ci"):
        ensure_vqvae(TINY, progress=False)


@pytest.mark.parametrize("damage", ["facegen.json", "config.json", "truncated weights", "random weights",
                                    "tokenizer.json"])
def test_a_damaged_gpt_is_one_error_naming_the_file_and_is_not_replaced(ci_gpt, damage, capsys):
    from facegen.pipeline import ensure_gpt

    files = {"facegen.json": "facegen.json", "config.json": "config.json", "truncated weights": "model.safetensors",
             "random weights": "model.safetensors", "tokenizer.json": "tokenizer.json"}
    path = ci_gpt.model / files[damage]
    if damage == "truncated weights":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "random weights":
        path.write_bytes(os.urandom(4096))
    else:
        path.write_bytes(b"\x00garbage{")
    before = snapshot(ci_gpt.model)
    with pytest.raises(ValueError) as caught:
        ensure_gpt(ci_gpt.profile, progress=False)
    message = str(caught.value)
    assert str(path) in message and "\n" not in message and "facegen train-gpt --restart" in message
    assert snapshot(ci_gpt.model) == before


@pytest.mark.parametrize("damage", ["truncated", "random", "config"])
def test_a_damaged_vqvae_is_one_error_naming_the_file(tmp_path, damage):
    from facegen.vqvae import VQVAE
    from facegen.vqvae_training import load_vqvae

    folder = tmp_path / "vqvae" / "model"
    VQVAE(codebook_size=16, embed_dim=4, hidden=8, n_res_blocks=1).save_pretrained(folder)
    path = folder / ("config.json" if damage == "config" else "model.safetensors")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "random":
        path.write_bytes(os.urandom(2000))
    else:
        path.write_bytes(b"\xff{not json")
    with pytest.raises(ValueError) as caught:
        load_vqvae(tmp_path / "vqvae")
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_stale_gan_decoder_is_an_error_not_a_silent_refit(tmp_path, monkeypatch):
    import facegen.gan_decoder as gan_decoder
    import facegen.pipeline as pipeline
    from facegen.config import get_profile
    from facegen.errors import ArtifactError
    from facegen.tokenize_dataset import vqvae_fingerprint
    from facegen.vqvae import VQVAE

    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path / "artifacts"))
    profile = get_profile("ci")
    current = VQVAE(codebook_size=16, embed_dim=4, hidden=8, n_res_blocks=1).eval()
    model_dir = gan_decoder.gan_decoder_folder(profile) / gan_decoder.MODEL_DIR
    current.save_pretrained(model_dir)
    (model_dir / gan_decoder.BASE_FILE).write_text(json.dumps({"vqvae_fingerprint": "f" * 64}))
    monkeypatch.setattr(pipeline, "ensure_vqvae", lambda profile=None, progress=True, **kw: current)
    monkeypatch.setattr(gan_decoder, "train_gan_decoder", lambda *a, **k: pytest.fail("a trained decoder was replaced"))
    with pytest.raises(ArtifactError) as caught:
        pipeline.ensure_gan_decoder(profile, progress=False)
    message = str(caught.value)
    assert "ffffffffffff" in message and vqvae_fingerprint(current)[:12] in message
    assert "`facegen train-gan-decoder --restart --profile ci`" in message


# ---------------------------------------------------------------------------------------------- argument checks


@pytest.mark.parametrize("argv", [
    ["train-vqvae", "--steps", "-5"], ["train-vqvae", "--steps", "0"], ["train-gpt", "--steps", "-3"],
    ["train-gan-decoder", "--steps", "0"], ["train-vqgan", "--steps", "x"], ["data", "synth", "--n", "0", "--out", "o"],
    ["data", "synth", "--n", "20", "--out", "o", "--workers", "0"], ["sample", "--n", "0", "--out", "g.png"],
    ["sample", "--n", "100000", "--out", "g.png"], ["sample", "--seed", "-1", "--out", "g.png"],
])
def test_counts_are_checked_by_the_parser_before_any_work(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("FACEGEN_DATA", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    for module, name in [("facegen.pipeline", "ensure_gpt"), ("facegen.pipeline", "ensure_vqvae"),
                         ("facegen.vqvae_training", "train_vqvae"), ("facegen.gpt", "train_gpt"),
                         ("facegen.gan_decoder", "train_gan_decoder"), ("facegen.vqgan_training", "train_vqgan"),
                         ("facegen.data.synthfaces", "generate")]:
        monkeypatch.setattr(f"{module}.{name}", lambda *a, **k: pytest.fail("worked before checking the arguments"))
    with pytest.raises(SystemExit) as caught:
        main([*argv, "--profile", "ci"] if argv[0] != "data" else argv)
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument" in err and "expected" in err


@pytest.mark.parametrize("args, option", [
    (["--top-p", "1.5"], "--top-p"), (["--top-p", "0"], "--top-p"), (["--guidance", "-1"], "--guidance"),
    (["--guidance", "nan"], "--guidance"), (["--temperature", "-0.5"], "--temperature"),
    (["--temperature", "inf"], "--temperature"), (["--top-k", "0"], "--top-k"),
])
def test_sample_checks_its_settings_before_loading_or_training_anything(tmp_path, monkeypatch, capsys, args, option):
    import facegen.pipeline as pipeline

    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setattr(pipeline, "ensure_gpt", lambda *a, **k: pytest.fail("must not load or train the GPT"))
    monkeypatch.setattr(pipeline, "ensure_vqvae", lambda *a, **k: pytest.fail("must not load or train the VQ-VAE"))
    assert main(["sample", "--profile", "ci", *args, "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"facegen: error: {option}: ") and err.count("\n") == 1
    assert not (tmp_path / "artifacts").exists()


def test_sample_checks_that_out_is_writable_first(tmp_path, monkeypatch, capsys):
    import facegen.pipeline as pipeline

    monkeypatch.setattr(pipeline, "ensure_gpt", lambda *a, **k: pytest.fail("must not load or train the GPT"))
    (tmp_path / "file").write_text("x")
    for out, words in [(tmp_path / "file" / "g.png", "cannot write in"), (tmp_path, "is a folder"),
                       (tmp_path / "g.jpg", "expected a .png")]:
        assert main(["sample", "--profile", "ci", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"facegen: error: --out {out}") and words in err and err.count("\n") == 1


def test_a_bad_sample_argument_fails_in_seconds_on_empty_artifacts(tmp_path):
    env = {**os.environ, "FACEGEN_ARTIFACTS": str(tmp_path / "artifacts"), "FACEGEN_DATA": str(tmp_path / "data")}
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "facegen.cli", "sample", "--profile", "ci", "--top-p", "1.5",
                           "--out", str(tmp_path / "g.png")], cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    assert done.returncode == 2 and done.stderr.startswith("facegen: error: --top-p: ")
    # ~2.7 s measured (the import of torch and transformers); the bound leaves room for a busy 2-core machine, and is
    # far below what training first would take (53 s on ci)
    assert "Traceback" not in done.stderr and seconds < 15, seconds
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "data").exists()


def test_cli_turns_a_corrupt_model_into_one_line(ci_gpt, capsys):
    (ci_gpt.model / "model.safetensors").write_bytes(b"junk")
    assert main(["sample", "--profile", "ci", "--out", str(ci_gpt.model.parent / "g.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("facegen: error: ") and err.count("\n") == 1 and "model.safetensors" in err
