"""FaceDataset, the preloaded TensorFaces, the seeded loader and open_dataset's choice of source."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from facegen.config import get_profile
from facegen.data.celeba import load_image, read_celeba
from facegen.data.dataset import FaceDataset, TensorFaces, make_loader, open_dataset, preload
from facegen.data.transforms import face_transform, to_uint8


def test_items_are_the_transformed_image_and_its_attributes(celeba):
    dataset = FaceDataset(read_celeba(celeba.root), "valid", image_size=32)
    assert len(dataset) == 2
    image, attributes = dataset[1]  # the 8th image of the folder: valid holds 000007 and 000008
    expected = face_transform(32)(load_image(celeba.root / "img_align_celeba" / "000008.jpg"))
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
    assert torch.equal(image, expected)
    assert attributes.dtype == torch.int8
    np.testing.assert_array_equal(attributes.numpy(), celeba.attributes[7])


def test_split_sizes(celeba):
    index = read_celeba(celeba.root)
    sizes = {split: len(FaceDataset(index, split, image_size=16)) for split in ("train", "valid", "test", "all")}
    assert sizes == {"train": 6, "valid": 2, "test": 2, "all": 10}


def test_empty_split_is_an_error(make_celeba):
    data = make_celeba(splits=(0, 0, 1))
    with pytest.raises(ValueError, match=r"split 'test' of .* has no images"):
        FaceDataset(read_celeba(data.root), "test")


def test_preload_gives_the_same_items_as_decoding_each_time(celeba):
    dataset = FaceDataset(read_celeba(celeba.root), "all", image_size=24)
    images, attributes = preload(dataset, progress=False, batch_size=4)  # 4 does not divide 10: a ragged last batch
    assert images.dtype == torch.uint8 and images.shape == (10, 3, 24, 24)
    assert attributes.dtype == torch.int8 and attributes.shape == (10, 40)
    cached = TensorFaces(images, attributes)
    assert len(cached) == len(dataset) and cached.image_size == 24
    for i in range(len(dataset)):
        image, attrs = dataset[i]
        cached_image, cached_attrs = cached[i]
        assert torch.equal(cached_image, image) and torch.equal(cached_attrs, attrs)
        assert torch.equal(images[i], to_uint8(image))
    np.testing.assert_array_equal(attributes.numpy(), celeba.attributes)


def test_preload_with_workers_matches_preload_without(celeba):
    dataset = FaceDataset(read_celeba(celeba.root), "train", image_size=16)
    serial = preload(dataset, progress=False)
    parallel = preload(dataset, progress=False, num_workers=2, batch_size=2)
    assert torch.equal(serial[0], parallel[0]) and torch.equal(serial[1], parallel[1])


def test_preload_of_tensor_faces_returns_its_tensors():
    images, attributes = torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.ones(2, 40, dtype=torch.int8)
    got = preload(TensorFaces(images, attributes), progress=False)
    assert got[0] is images and got[1] is attributes


def test_tensor_faces_checks_dtypes_and_shapes():
    with pytest.raises(ValueError, match=r"expected images as uint8 \(N, 3, S, S\), got torch.float32"):
        TensorFaces(torch.zeros(2, 3, 8, 8), torch.ones(2, 40, dtype=torch.int8))
    with pytest.raises(ValueError, match=r"expected attributes as int8 \(2, 40\), got torch.int8 \(3, 40\)"):
        TensorFaces(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.ones(3, 40, dtype=torch.int8))


def batches(loader) -> list[list[int]]:
    return [batch[0].tolist() for batch in loader]


def test_loader_order_is_reproducible_per_seed():
    numbers = TensorDataset(torch.arange(50))
    first = batches(make_loader(numbers, batch_size=8, shuffle=True, seed=1))
    assert first == batches(make_loader(numbers, batch_size=8, shuffle=True, seed=1))
    assert first != batches(make_loader(numbers, batch_size=8, shuffle=True, seed=2))
    assert sorted(sum(first, [])) == list(range(50))  # a permutation: every item once


def test_loader_without_shuffle_keeps_file_order_and_drop_last_drops():
    numbers = TensorDataset(torch.arange(10))
    assert batches(make_loader(numbers, batch_size=4, shuffle=False, seed=0)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    dropped = batches(make_loader(numbers, batch_size=4, shuffle=False, seed=0, drop_last=True))
    assert dropped == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_loader_over_faces_gives_stacked_batches(celeba):
    dataset = FaceDataset(read_celeba(celeba.root), "train", image_size=16)
    images, attributes = next(iter(make_loader(dataset, batch_size=4, shuffle=False, seed=0)))
    assert images.shape == (4, 3, 16, 16) and attributes.shape == (4, 40) and attributes.dtype == torch.int8
    assert torch.equal(images[3], dataset[3][0])


def test_open_dataset_reads_the_profile_folder(celeba, monkeypatch):
    monkeypatch.setenv("FACEGEN_DATA", str(celeba.root))
    for source in ("synthfaces", "celeba"):
        profile = get_profile("ci").replace(data={"source": source, "image_size": 16})
        dataset = open_dataset(profile, "test")
        assert len(dataset) == 2 and dataset.image_size == 16
        np.testing.assert_array_equal(dataset.attributes.numpy(), celeba.attributes[8:])


def test_open_dataset_says_how_to_make_missing_synthfaces(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEGEN_DATA", str(tmp_path / "absent"))
    message = r"SynthFaces .* not found in .*absent.*facegen data synth.*make course"
    with pytest.raises(FileNotFoundError, match=message):
        open_dataset(get_profile("ci"), "train")


def test_open_dataset_says_where_to_place_missing_celeba(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("FACEGEN_DATA", str(tmp_path / "empty"))
    profile = get_profile("ci").replace(data={"source": "celeba"})
    with pytest.raises(FileNotFoundError, match=r"CelebA not found in .*empty.*list_attr_celeba.txt.*data/README.md"):
        open_dataset(profile, "train")


def test_open_dataset_rejects_an_unknown_source(celeba, monkeypatch):
    monkeypatch.setenv("FACEGEN_DATA", str(celeba.root))
    profile = get_profile("ci").replace(data={"source": "imagenet"})
    with pytest.raises(ValueError, match=r"data.source 'imagenet' is unknown; expected one of synthfaces, celeba, hf"):
        open_dataset(profile, "train")
