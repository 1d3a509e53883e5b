"""The Hugging Face loader, on a tiny `flwrlabs/celeba`-shaped dataset saved with `save_to_disk` (never the hub)."""

from __future__ import annotations

import os
import re

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # before `datasets` is imported: these tests never touch the hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset, DatasetDict, Features, Image, Value  # noqa: E402

from facegen.attributes import CELEBA_ATTRIBUTES  # noqa: E402
from facegen.config import get_profile  # noqa: E402
from facegen.data.celeba import CelebAFormatError, load_image, read_celeba  # noqa: E402
from facegen.data.dataset import FaceDataset, open_dataset  # noqa: E402
from facegen.data.hf import HFCelebA, load_hf_celeba  # noqa: E402

datasets.disable_progress_bars()
FEATURES = Features({"image": Image(), "celeb_id": Value("int64"), **{n: Value("bool") for n in CELEBA_ATTRIBUTES}})
SPLIT_NAMES = ("train", "valid", "test")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def celeba_shaped(root, rows, attributes, features=FEATURES, drop=()) -> Dataset:
    """A Dataset like flwrlabs/celeba from the JPEGs of a CelebA-layout folder (same bytes, so same pixels)."""
    columns = {"image": [str(root / "img_align_celeba" / f"{r + 1:06d}.jpg") for r in rows],
               "celeb_id": [100 + int(r) for r in rows],
               **{name: [bool(attributes[r, c] == 1) for r in rows] for c, name in enumerate(CELEBA_ATTRIBUTES)}}
    for name in drop:
        del columns[name]
    return Dataset.from_dict(columns, features=Features({k: v for k, v in features.items() if k not in drop}))


def save_splits(celeba, path, names=SPLIT_NAMES, drop=()):
    splits = {name: celeba_shaped(celeba.root, np.flatnonzero(celeba.splits == code), celeba.attributes, drop=drop)
              for code, name in enumerate(names)}
    DatasetDict(splits).save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def celeba(celeba_shared):
    return celeba_shared  # these tests only read the folder: write it once


@pytest.fixture(scope="module")
def saved(celeba, tmp_path_factory):
    return save_splits(celeba, tmp_path_factory.mktemp("hf") / "hf")


def test_each_split_has_the_right_rows_images_and_attributes(celeba, saved):
    for code, split in enumerate(SPLIT_NAMES):
        data = load_hf_celeba(saved, split)
        rows = np.flatnonzero(celeba.splits == code)
        assert len(data) == len(rows)
        assert data.attributes.dtype == np.int8
        np.testing.assert_array_equal(data.attributes, celeba.attributes[rows])
        image = data.image(len(rows) - 1)
        assert image.mode == "RGB" and image.size == (178, 218)
        expected = load_image(celeba.root / "img_align_celeba" / celeba.filenames[rows[-1]])
        np.testing.assert_array_equal(np.asarray(image), np.asarray(expected))


def test_validation_is_accepted_for_valid_both_ways(celeba, saved, tmp_path):
    assert len(load_hf_celeba(saved, "validation")) == 2
    renamed = save_splits(celeba, tmp_path / "renamed", names=("train", "validation", "test"))
    valid = load_hf_celeba(renamed, "valid")
    assert valid.split_name == "valid" and len(valid) == 2
    np.testing.assert_array_equal(valid.attributes, celeba.attributes[6:8])


def test_all_is_every_split_in_official_order(celeba, saved):
    everything = load_hf_celeba(saved, "all")
    np.testing.assert_array_equal(everything.attributes, celeba.attributes)


def test_face_dataset_gives_the_same_items_from_hf_and_from_the_folder(celeba, saved):
    from_folder = FaceDataset(read_celeba(celeba.root), "test", image_size=32)
    from_hub_copy = FaceDataset(load_hf_celeba(saved, "test"), "test", image_size=32)
    for i in range(2):
        assert torch.equal(from_folder[i][0], from_hub_copy[i][0])
        assert torch.equal(from_folder[i][1], from_hub_copy[i][1])


def test_positive_rates_match_the_folder_reader(celeba, saved):
    assert load_hf_celeba(saved, "all").positive_rates() == read_celeba(celeba.root).positive_rates()


def test_missing_attribute_columns_are_named(celeba, tmp_path):
    path = save_splits(celeba, tmp_path / "partial", drop=("Male", "Young"))
    with pytest.raises(CelebAFormatError, match=rf"{tmp_path / 'partial'}.*expected .* the 40 CelebA attribute "
                                                r"columns; missing 2: Male, Young"):
        load_hf_celeba(path, "train")


def test_missing_image_column_is_named(celeba, tmp_path):
    path = save_splits(celeba, tmp_path / "no_images", drop=("image",))
    with pytest.raises(CelebAFormatError, match=r"expected an 'image' column.*missing 1: image"):
        load_hf_celeba(path, "train")


def test_unknown_split_lists_the_available_ones(celeba, tmp_path):
    path = save_splits(celeba, tmp_path / "two", names=("train", "valid"))
    with pytest.raises(ValueError, match=rf"{tmp_path / 'two'}: split 'test' does not exist; available splits: "
                                         r"train, valid"):
        load_hf_celeba(path, "test")


def test_a_single_saved_dataset_is_used_whole(celeba, tmp_path):
    celeba_shaped(celeba.root, range(10), celeba.attributes).save_to_disk(str(tmp_path / "one"))
    data = load_hf_celeba(tmp_path / "one", "train")
    np.testing.assert_array_equal(data.attributes, celeba.attributes)


def test_a_folder_that_is_not_a_saved_dataset(celeba):
    with pytest.raises(CelebAFormatError, match=rf"{celeba.root}: expected a dataset saved with .*save_to_disk.*"
                                                r"use data source 'celeba'"):
        load_hf_celeba(celeba.root, "train")


def test_asking_an_hf_split_for_another_split(saved):
    with pytest.raises(ValueError, match=r"holds split 'train'; load split 'test' with load_hf_celeba"):
        FaceDataset(load_hf_celeba(saved, "train"), "test")


def test_integer_attribute_columns_count_positive_above_zero(celeba):
    features = Features({**FEATURES, **{n: Value("int8") for n in CELEBA_ATTRIBUTES}})
    as_int = celeba_shaped(celeba.root, range(3), celeba.attributes, features=features)  # bools stored as 0/1
    np.testing.assert_array_equal(HFCelebA(as_int, "memory", "train").attributes, celeba.attributes[:3])


def test_an_undecodable_image_names_the_row(celeba):
    good = (celeba.root / "img_align_celeba" / "000001.jpg").read_bytes()
    columns = {"image": [{"bytes": good, "path": None}, {"bytes": good[:500], "path": None}],  # row 1 is truncated
               "celeb_id": [1, 2], **{name: [True, False] for name in CELEBA_ATTRIBUTES}}
    source = HFCelebA(Dataset.from_dict(columns, features=FEATURES), "memory", "train")
    assert source.image(0).size == (178, 218)
    with pytest.raises(CelebAFormatError, match=r"memory \(split 'train'\), row 1: cannot decode image"):
        source.image(1)


def test_open_dataset_with_the_hf_source_reads_a_saved_copy(celeba, saved, monkeypatch):
    monkeypatch.setenv("FACEGEN_DATA", str(saved))
    profile = get_profile("ci").replace(data={"source": "hf", "image_size": 16})
    dataset = open_dataset(profile, "valid")
    assert len(dataset) == 2 and dataset[0][0].shape == (3, 16, 16)
    np.testing.assert_array_equal(dataset.attributes.numpy(), celeba.attributes[6:8])


# ------------------------------------------------------------------------------- the gpu profile's hub fallback


@pytest.fixture
def no_local_celeba(tmp_path, monkeypatch):
    """A checkout (REPO_ROOT) without data/celeba and without FACEGEN_DATA, as on Colab: the gpu profile falls back
    to the hub. Nothing is loaded from an earlier test (the per-process hub cache is emptied)."""
    import facegen.config
    import facegen.data.hf as hf

    monkeypatch.setattr(facegen.config, "REPO_ROOT", tmp_path / "checkout")
    monkeypatch.delenv("FACEGEN_DATA", raising=False)
    monkeypatch.setenv("FACEGEN_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setattr(hf, "_hub_loaded", {})
    return get_profile("gpu").replace(data={"image_size": 32, "num_workers": 0})


@pytest.fixture
def hub(celeba, tmp_path, monkeypatch):
    """The hub, replaced at its one boundary (`_download_from_hub`) by a copy shaped exactly like flwrlabs/celeba
    (config img_align+identity+attr: `image`, `celeb_id`, the 40 attributes as bools; train/valid/test) read back
    from `save_to_disk`; `.calls` lists the (name, config, cache_dir) it was asked for."""
    import types

    import facegen.data.hf as hf

    saved = save_splits(celeba, tmp_path / "flwrlabs-celeba")
    state = types.SimpleNamespace(calls=[])

    def download(name, config, cache_dir):
        state.calls.append((name, config, cache_dir))
        return datasets.load_from_disk(str(saved))

    monkeypatch.setattr(hf, "_download_from_hub", download)
    return state


def test_the_gpu_profile_without_celeba_loads_flwrlabs_celeba_from_the_hub(celeba, hub, no_local_celeba, capsys):
    from facegen.data.dataset import uses_hub
    from facegen.data.streaming import FaceImages
    from facegen.pipeline import load_images

    profile = no_local_celeba
    assert uses_hub(profile)
    sizes = {split: len(open_dataset(profile, split)) for split in SPLIT_NAMES}
    assert sizes == {"train": 6, "valid": 2, "test": 2}  # the official splits, as the hub copy has them
    assert hub.calls == [("flwrlabs/celeba", "img_align+identity+attr", None)]  # loaded once for every split
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines  # one line: what, how big, where it is cached
    assert re.fullmatch(r"\[facegen\] CelebA not found in data/celeba: loading flwrlabs/celeba \(202,599 faces, "
                        r"about 12 GB to download once\) from the Hugging Face hub into the cache .+ \(first time "
                        r"only\)", lines[0]), lines[0]

    valid = open_dataset(profile, "valid")
    from_folder = FaceDataset(read_celeba(celeba.root), "valid", image_size=32)
    np.testing.assert_array_equal(valid.attributes.numpy(), celeba.attributes[6:8])
    for i in range(2):
        assert torch.equal(valid[i][0], from_folder[i][0])
    images = load_images(profile, "train", progress=False)  # the gpu profile streams: nothing decoded up front
    assert isinstance(images, FaceImages) and images.shape == (6, 3, 32, 32)


def test_the_whole_hub_path_tokenizes_like_the_folder(celeba, hub, no_local_celeba, tmp_path, monkeypatch, capsys):
    from facegen.tokenize_dataset import data_fingerprint, read_token_info, tokenize_dataset
    from facegen.vqvae import VQVAE

    torch.manual_seed(0)
    model = VQVAE(codebook_size=16, embed_dim=8, hidden=16, n_res_blocks=1).eval()
    tokens = tokenize_dataset(no_local_celeba, vqvae=model, out_dir=tmp_path / "hub-tokens", progress=False)
    assert {split: len(tokens[split]) for split in tokens} == {"train": 6, "valid": 2, "test": 2}
    assert hub.calls == [("flwrlabs/celeba", "img_align+identity+attr", None)]
    hub_fingerprint = data_fingerprint(no_local_celeba)
    assert read_token_info(tmp_path / "hub-tokens").data == hub_fingerprint

    monkeypatch.setenv("FACEGEN_DATA", str(celeba.root))  # the same faces in the folder layout
    folder = tokenize_dataset(no_local_celeba, vqvae=model, out_dir=tmp_path / "folder-tokens", progress=False)
    assert data_fingerprint(no_local_celeba) != hub_fingerprint  # another source: tokens are not mixed up
    for split in SPLIT_NAMES:
        np.testing.assert_array_equal(tokens[split]["codes"], folder[split]["codes"])
        np.testing.assert_array_equal(tokens[split]["attributes"], folder[split]["attributes"])
    assert len(hub.calls) == 1


def test_offline_without_celeba_says_what_to_do_in_one_line(no_local_celeba, tmp_path, monkeypatch):
    from facegen.data.hf import HubUnavailableError
    from facegen.errors import FacegenError
    from facegen.tokenize_dataset import data_fingerprint

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets at import
    with pytest.raises(HubUnavailableError) as caught:  # the real `datasets.load_dataset`, offline, nothing cached
        open_dataset(no_local_celeba, "train")
    message = str(caught.value)
    assert "\n" not in message and isinstance(caught.value, (FacegenError, FileNotFoundError))
    assert re.fullmatch(r"CelebA not found in data/celeba, and flwrlabs/celeba cannot be loaded from the Hugging Face "
                        r"hub \(.*\): bring CelebA into data/celeba \(data/README.md\) or run the course on SynthFaces "
                        r"with FACEGEN_PROFILE=cpu", message.replace(str(tmp_path / "checkout") + "/", "")), message
    with pytest.raises(HubUnavailableError, match=r"CelebA not found in .*FACEGEN_PROFILE=cpu"):
        data_fingerprint(no_local_celeba)  # tokenizing asks first: the same line


def test_without_any_network_the_hub_is_not_even_tried(no_local_celeba, monkeypatch, capsys):
    import socket

    from facegen.data.hf import HubUnavailableError

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)

    def unreachable(address, timeout=None, *args, **kwargs):
        assert address == ("huggingface.co", 443) and timeout <= 5
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("load_dataset retries for ~25 s"))
    with pytest.raises(HubUnavailableError, match=r"cannot be loaded from the Hugging Face hub \(no connection to "
                                                  r"huggingface.co\): bring CelebA into .*FACEGEN_PROFILE=cpu"):
        open_dataset(no_local_celeba, "valid")
    assert capsys.readouterr().out == ""  # the error is the only line: no "loading ..." note before it


def test_a_local_celeba_or_a_folder_named_by_facegen_data_is_never_replaced_by_the_hub(celeba, hub, no_local_celeba,
                                                                                      tmp_path, monkeypatch):
    import shutil

    from facegen.data.dataset import uses_hub

    shutil.copytree(celeba.root, tmp_path / "checkout" / "data" / "celeba")  # CelebA brought into data/celeba
    assert not uses_hub(no_local_celeba) and len(open_dataset(no_local_celeba, "train")) == 6
    monkeypatch.setenv("FACEGEN_DATA", str(tmp_path / "typo"))  # a deliberate pointer that is wrong: an error to fix
    assert not uses_hub(no_local_celeba)
    with pytest.raises(FileNotFoundError, match=r"CelebA not found in .*typo.*data/README.md"):
        open_dataset(no_local_celeba, "train")
    assert hub.calls == []
