"""torch Datasets of faces: `(image float32 (3, S, S) in [-1, 1], attributes int8 (40,) of -1/1)`.

- `FaceDataset` decodes a JPEG per item, from a `CelebAIndex` (folder layout) or an `HFCelebA` (Hugging Face).
- `preload` decodes a whole split once into uint8 tensors, and `TensorFaces` serves the same items from them: on a
  CPU, decoding and resizing JPEGs every epoch would cost more than a small model's training step.
- `make_loader` is a DataLoader whose shuffling is driven by its own seeded generator, so the batch order is the same
  on every run with the same seed.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from facegen.data.celeba import CelebAIndex, read_celeba
from facegen.data.transforms import face_transform, from_uint8

DATA_SOURCES = ("synthfaces", "celeba", "hf")


class FaceDataset(Dataset):
    """One split of `source` (a `CelebAIndex` or an `HFCelebA`; `split=None` takes the source as it is)."""

    def __init__(self, source, split: str | None = "train", image_size: int = 128):
        self.source = source if split is None else source.split(split)
        if len(self.source) == 0:
            raise ValueError(f"split {split!r} of {getattr(source, 'root', source)} has no images")
        self.image_size = image_size
        self.attributes = torch.from_numpy(self.source.attributes)  # int8 (N, 40)
        self._to_uint8 = face_transform(image_size, scale=False)

    def __len__(self) -> int:
        return len(self.source)

    def uint8_item(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Item i before scaling: uint8 (3, S, S) face crop and int8 (40,) attributes. A problem with the image (not
        decodable, not 178x218) is a ValueError naming its file."""
        image = self.source.image(i)  # a CelebAFormatError naming the file if it cannot be decoded
        try:
            return self._to_uint8(image), self.attributes[i]
        except ValueError as error:
            where = self.source.path(i) if hasattr(self.source, "path") else f"item {i} of {self.source}"
            raise ValueError(f"{where}: {error}") from None

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, attributes = self.uint8_item(i)
        return from_uint8(image), attributes


class TensorFaces(Dataset):
    """Faces already decoded by `preload`: uint8 images (N, 3, S, S) and int8 attributes (N, 40)."""

    def __init__(self, images: torch.Tensor, attributes: torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"TensorFaces: expected images as uint8 (N, 3, S, S), got {images.dtype} "
                             f"{tuple(images.shape)}")
        if attributes.dtype != torch.int8 or attributes.shape != (len(images), 40):
            raise ValueError(f"TensorFaces: expected attributes as int8 ({len(images)}, 40), got "
                             f"{attributes.dtype} {tuple(attributes.shape)}")
        self.images, self.attributes = images, attributes
        self.image_size = images.shape[-1]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return from_uint8(self.images[i]), self.attributes[i]


class _Uint8Items(Dataset):
    """`FaceDataset` items before scaling, so DataLoader workers hand back compact uint8 batches."""

    def __init__(self, dataset: FaceDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return self.dataset.uint8_item(i)


def preload(dataset: FaceDataset | TensorFaces, progress: bool = True, num_workers: int = 0,
            batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every item once: uint8 images (N, 3, S, S) and int8 attributes (N, 40), for `TensorFaces`.
    Memory: 3 x S x S bytes per face, i.e. 48 KiB at 128 px (~295 MB for 6,000 faces)."""
    if isinstance(dataset, TensorFaces):
        return dataset.images, dataset.attributes
    n, size = len(dataset), dataset.image_size
    images = torch.empty((n, 3, size, size), dtype=torch.uint8)
    attributes = torch.empty((n, 40), dtype=torch.int8)
    loader = DataLoader(_Uint8Items(dataset), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    done = 0
    with tqdm(total=n, desc="decoding images", unit="img", disable=not progress) as bar:
        for batch_images, batch_attributes in loader:
            images[done:done + len(batch_images)] = batch_images
            attributes[done:done + len(batch_images)] = batch_attributes
            done += len(batch_images)
            bar.update(len(batch_images))
    return images, attributes


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0,
                drop_last: bool = False) -> DataLoader:
    """A DataLoader with its own generator seeded by `seed`: the same seed gives the same batches, run after run
    (each pass over the loader draws the next permutation from that generator)."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=num_workers,
                      drop_last=drop_last, persistent_workers=num_workers > 0)


def _missing_data_message(profile, root) -> str:
    if profile.data.source == "synthfaces":
        return (f"SynthFaces for profile {profile.name!r} not found in {root}. Create it with `facegen data synth` "
                f"(or `make course`), or set FACEGEN_DATA to a folder that already holds it.")
    return (f"CelebA not found in {root}. Place img_align_celeba/ (the 202,599 aligned JPEGs), list_attr_celeba.txt "
            f"and list_eval_partition.txt there (how to get them: data/README.md), or set FACEGEN_DATA to the folder "
            f"that holds them (or FACEGEN_PROFILE=cpu to use the generated SynthFaces instead).")


def uses_hub(profile) -> bool:
    """Does the profile read CelebA from the Hugging Face hub (flwrlabs/celeba)? Source "hf" without a `save_to_disk`
    copy at `profile.data_dir`; and source "celeba" (the gpu profile) when its default folder data/celeba is missing
    or empty, so a Colab "Run all" works without bringing CelebA. A folder named by FACEGEN_DATA is never replaced
    by a download: when it is missing, that is the error to fix."""
    root = Path(profile.data_dir)
    if profile.data.source == "hf":
        from facegen.data.hf import is_saved_dataset

        return not is_saved_dataset(root)
    return (profile.data.source == "celeba" and "FACEGEN_DATA" not in os.environ
            and (not root.is_dir() or not any(root.iterdir())))


def open_dataset(profile, split: str = "train") -> FaceDataset:
    """The `split` of the profile's dataset: SynthFaces or CelebA from `profile.data_dir` (CelebA folder layout), or
    a Hugging Face copy ("hf": a `save_to_disk` folder at `profile.data_dir`, else the hub's flwrlabs/celeba; the
    gpu profile's "celeba" also falls back to the hub when data/celeba is missing, see `uses_hub`)."""
    source, root, size = profile.data.source, profile.data_dir, profile.data.image_size
    if source not in DATA_SOURCES:
        raise ValueError(f"profile {profile.name!r}: data.source {source!r} is unknown; expected one of "
                         f"{', '.join(DATA_SOURCES)}")
    if source == "hf" or uses_hub(profile):
        from facegen.data.hf import HUB_NAME, load_hf_celeba  # `datasets` is slow to import

        hub = uses_hub(profile)
        missing = root if source == "celeba" else None  # named in the hub's note and in its offline message
        return FaceDataset(load_hf_celeba(HUB_NAME if hub else root, split, missing_folder=missing), split, size)
    if not root.is_dir() or not any(root.iterdir()):
        raise FileNotFoundError(_missing_data_message(profile, root))
    index: CelebAIndex = read_celeba(root)
    return FaceDataset(index, split, size)
