"""Face datasets: CelebA's folder layout (real CelebA or SynthFaces), Hugging Face copies, transforms, Datasets.

`load_hf_celeba` / `HFCelebA` are imported on first use, because importing `datasets` takes seconds.
"""

from facegen.data.celeba import (
    ATTR_FILE,
    IMAGE_DIR,
    PARTITION_FILE,
    CelebAFormatError,
    CelebAIndex,
    check_images,
    load_image,
    read_celeba,
)
from facegen.data.dataset import FaceDataset, TensorFaces, make_loader, open_dataset, preload
from facegen.data.transforms import FACE_BOX, face_transform, from_uint8, to_pil, to_uint8, to_unit

_LAZY = {"load_hf_celeba": "facegen.data.hf", "HFCelebA": "facegen.data.hf"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'facegen.data' has no attribute {name!r}")


__all__ = [
    "ATTR_FILE", "IMAGE_DIR", "PARTITION_FILE", "CelebAFormatError", "CelebAIndex", "check_images", "load_image",
    "read_celeba", "FaceDataset", "TensorFaces", "make_loader", "open_dataset", "preload", "FACE_BOX",
    "face_transform", "from_uint8", "to_pil", "to_uint8", "to_unit", "load_hf_celeba", "HFCelebA",
]
