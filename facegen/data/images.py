"""The profile's images on disk and in memory: SynthFaces generated where the profile expects them, and each split
decoded once into a uint8 tensor cache, so trainers read tensors rather than JPEGs."""

from __future__ import annotations

from pathlib import Path

from facegen.config import Profile, get_profile
from facegen.notes import note


def synthfaces_complete(folder: Path, n_images: int) -> bool:
    """True when `folder` holds a finished SynthFaces set of `n_images` (the attr file is written last)."""
    attr_file = folder / "list_attr_celeba.txt"
    if not attr_file.is_file() or not (folder / "list_eval_partition.txt").is_file():
        return False
    with attr_file.open() as f:
        first = f.readline().strip()
    return first.isdigit() and int(first) == n_images


def ensure_synthfaces(profile: Profile | None = None, progress: bool = True) -> Path:
    """The profile's dataset folder; generates SynthFaces there if the profile uses them and they are missing."""
    profile = profile or get_profile()
    folder = profile.data_dir
    if profile.data.source != "synthfaces" or synthfaces_complete(folder, profile.data.n_images):
        return folder
    from facegen.data import synthfaces

    note(f"generating {profile.data.n_images:,} SynthFaces for profile {profile.name!r} in {folder} "
          "(the course's stand-in for CelebA; done once)")
    synthfaces.generate(folder, profile.data.n_images, seed=profile.data.seed, progress=progress)
    return folder


def load_images(profile: Profile | None = None, split: str = "train", attributes: bool = False, progress: bool = True):
    """All images of a split as a uint8 tensor (N, 3, S, S) (and the int8 attributes (N, 40) with `attributes=True`).

    Decoding JPEGs is the slow part of CPU training, so the tensors are cached in the profile's artifacts, keyed by
    the size and modification time of the dataset's attribute file."""
    import torch

    from facegen.data.dataset import open_dataset, preload

    profile = profile or get_profile()
    folder = ensure_synthfaces(profile, progress=progress)
    key = _data_key(profile, folder)
    cache = profile.artifacts / "cache" / f"{split}-{profile.data.image_size}-{key}.pt"
    if cache.is_file():
        images, attrs = torch.load(cache, weights_only=True)
    else:
        note(f"decoding the {split} split once into {cache.parent} (faster training afterwards)")
        images, attrs = preload(open_dataset(profile, split), progress=progress)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp")
        torch.save((images, attrs), tmp)
        tmp.replace(cache)
    return (images, attrs) if attributes else images


def _data_key(profile: Profile, folder: Path) -> str:
    if profile.data.source == "hf":
        return "hf"
    import hashlib

    stat = (folder / "list_attr_celeba.txt").stat()
    where = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:8]
    return f"{where}-{stat.st_size}-{stat.st_mtime_ns}"
