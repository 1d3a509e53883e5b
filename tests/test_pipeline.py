import torch

from facegen.config import get_profile
from facegen.data.dataset import open_dataset, preload
from facegen.pipeline import ensure_synthfaces, load_images, synthfaces_complete


def tiny_profile(tmp_path, monkeypatch, n=12):
    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("FACEGEN_DATA", str(tmp_path / "data"))
    return get_profile("ci").replace(data={"n_images": n})


def test_ensure_synthfaces_generates_once_and_regenerates_a_different_count(tmp_path, monkeypatch, capsys):
    profile = tiny_profile(tmp_path, monkeypatch)
    folder = ensure_synthfaces(profile, progress=False)
    assert synthfaces_complete(folder, 12) and "generating 12 SynthFaces" in capsys.readouterr().out
    stamp = (folder / "list_attr_celeba.txt").stat().st_mtime_ns
    assert ensure_synthfaces(profile, progress=False) == folder
    assert (folder / "list_attr_celeba.txt").stat().st_mtime_ns == stamp and capsys.readouterr().out == ""
    bigger = profile.replace(data={"n_images": 15})
    ensure_synthfaces(bigger, progress=False)
    assert synthfaces_complete(folder, 15) and not synthfaces_complete(folder, 12)


def test_load_images_equals_decoding_the_split_and_is_cached(tmp_path, monkeypatch, capsys):
    profile = tiny_profile(tmp_path, monkeypatch)
    images, attributes = load_images(profile, "train", attributes=True, progress=False)
    expected_images, expected_attributes = preload(open_dataset(profile, "train"), progress=False)
    assert torch.equal(images, expected_images) and torch.equal(attributes, expected_attributes)
    assert "decoding the train split once" in capsys.readouterr().out
    cached = load_images(profile, "train", progress=False)
    assert torch.equal(cached, images) and capsys.readouterr().out == ""
    assert len(list((tmp_path / "artifacts" / "ci" / "cache").glob("train-128-*.pt"))) == 1
