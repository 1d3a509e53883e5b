"""The Hugging Face loader, on a tiny `flwrlabs/celeba`-shaped dataset saved with `save_to_disk` (never the hub)."""

from __future__ import annotations

import os

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
