"""The profile's images on disk and in memory: SynthFaces generated where the profile expects them, and each split
decoded once into a uint8 tensor cache, so trainers read tensors rather than JPEGs."""

from __future__ import annotations

from pathlib import Path

from facegen.config import Profile, get_profile
from facegen.notes import note


_noted: set[str] = set()


def _note_once(text: str) -> None:
    """A note about the data that every later call (each split, each stage) would repeat: said once per process."""
    if text not in _noted:
        _noted.add(text)
        note(text)


def synthfaces_complete(folder: Path, n_images: int) -> bool:
    """True when `folder` holds a finished SynthFaces set of `n_images` (the attr file is written last)."""
    attr_file = folder / "list_attr_celeba.txt"
    if not attr_file.is_file() or not (folder / "list_eval_partition.txt").is_file():
        return False
    with attr_file.open("rb") as f:  # bytes: a file that is not text is simply not a finished SynthFaces set
        first = f.readline().strip()
    return first.isdigit() and int(first) == n_images


def ensure_synthfaces(profile: Profile | None = None, progress: bool = True) -> Path:
    """The profile's dataset folder; generates SynthFaces there if the profile uses them and they are missing.

    facegen only writes into a folder that is missing, empty, or marked as its own SynthFaces (the marker file
    `.facegen-synthfaces.json` that `synthfaces.generate` writes first). It regenerates a marked folder when it was
    made for this profile with other settings (or was interrupted). Anything else is the user's and is never
    rewritten: a readable CelebA-layout dataset there (FACEGEN_DATA) is used as it is, with a note; a folder that is
    neither raises an `ArtifactError` saying what was found and what to do."""
    profile = profile or get_profile()
    folder = Path(profile.data_dir)
    if profile.data.source != "synthfaces":
        return folder
    from facegen.data import synthfaces

    n, seed = profile.data.n_images, profile.data.seed
    if folder.exists() and not folder.is_dir():
        from facegen.errors import ArtifactError

        raise ArtifactError(f"{folder} (the profile's data folder; FACEGEN_DATA) is a file; expected a folder: a new "
                            "or empty one (SynthFaces are generated there) or one holding a dataset in the CelebA layout")
    marker = synthfaces.read_marker(folder)
    if marker is not None:
        done = synthfaces_complete(folder, marker.get("n"))
        if done and marker.get("profile") != profile.name:  # made by hand or for another profile: the user's choice
            if marker.get("n") != n or marker.get("seed") != seed:
                _note_once(f"using the {marker.get('n'):,} SynthFaces (seed {marker.get('seed')}) in {folder} as "
                           f"they are (profile {profile.name!r} would generate {n:,} with seed {seed})")
            return folder
        if done and marker.get("n") == n and marker.get("seed") == seed:
            return folder
        why = "the profile's settings changed" if done else "an earlier run did not finish"
    elif not folder.exists() or not any(folder.iterdir()):
        why = "done once"
    elif synthfaces_complete(folder, n):  # made before folders were marked (or a set of exactly this size)
        return folder
    else:
        _refuse_or_adopt(folder, profile)
        return folder
    note(f"generating {n:,} SynthFaces for profile {profile.name!r} in {folder} (the course's stand-in for CelebA; "
         f"{why})")
    synthfaces.generate(folder, n, seed=seed, progress=progress, profile=profile.name)
    return folder


def _refuse_or_adopt(folder: Path, profile: Profile) -> None:
    """`folder` is not empty and not facegen's: use a readable CelebA-layout dataset as it is, else say what to do."""
    from facegen.data.celeba import ATTR_FILE, IMAGE_DIR, CelebAFormatError, read_celeba
    from facegen.data.synthfaces import MARKER_FILE
    from facegen.errors import ArtifactError

    todo = (f"facegen never writes into a folder it did not make: point FACEGEN_DATA at a new or empty folder (it "
            f"generates SynthFaces there), use this one as CelebA with FACEGEN_PROFILE=gpu, or delete it to have "
            f"SynthFaces generated there")
    if (folder / ATTR_FILE).exists() or (folder / IMAGE_DIR).exists():
        try:
            index = read_celeba(folder)
        except CelebAFormatError as error:
            raise ArtifactError(f"{folder} holds a CelebA-layout dataset that facegen did not generate (no "
                                f"{MARKER_FILE}) and cannot read ({error}); {todo}") from None
        _note_once(f"using the {len(index):,}-image CelebA-layout dataset in {folder} as it is (not SynthFaces that "
                   f"facegen generated: profile {profile.name!r} would make {profile.data.n_images:,}; facegen never "
                   "rewrites it)")
        return
    found = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(found[:5]) + (f", ... ({len(found)} entries)" if len(found) > 5 else "")
    raise ArtifactError(f"{folder} is not empty ({shown}) and holds no dataset in the CelebA layout and no SynthFaces "
                        f"marker ({MARKER_FILE}); {todo}")


def load_images(profile: Profile | None = None, split: str = "train", attributes: bool = False, progress: bool = True):
    """All images of a split as a uint8 tensor (N, 3, S, S) (and the int8 attributes (N, 40) with `attributes=True`).

    Decoding JPEGs is the slow part of CPU training, so the tensors are cached in the profile's artifacts, keyed by
    the size and modification time of the dataset's attribute file. With `profile.data.stream` (real CelebA) the
    training split is a `FaceImages` instead, indexed like the tensor but decoded per batch (as a tensor, CelebA's
    162,770 training faces would take ~8 GB); the validation and test splits (~1 GB each) stay tensors."""
    import torch

    from facegen.data.dataset import open_dataset, preload

    profile = profile or get_profile()
    folder = ensure_synthfaces(profile, progress=progress)
    if profile.data.stream and split == "train":  # valid and test (~1 GB each for CelebA) stay tensors
        from facegen.data.streaming import FaceImages

        images = FaceImages(open_dataset(profile, split))
        return (images, images.attributes) if attributes else images
    key = _data_key(profile, folder)
    cache = profile.artifacts / "cache" / f"{split}-{profile.data.image_size}-{key}.pt"
    cached = None
    if cache.is_file():
        try:
            cached = torch.load(cache, weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged cache is only derived data: decode again
            note(f"{cache} is unreadable; decoding the {split} split again")
    if cached is not None:
        images, attrs = cached
    else:
        from facegen.checkpoint import atomic_file

        note(f"decoding the {split} split once into {cache.parent} (faster training afterwards)")
        images, attrs = preload(open_dataset(profile, split), progress=progress)
        with atomic_file(cache) as f:
            torch.save((images, attrs), f)
    return (images, attrs) if attributes else images


def _data_key(profile: Profile, folder: Path) -> str:
    if profile.data.source == "hf":
        return "hf"
    import hashlib

    from facegen.data.dataset import _missing_data_message

    attr_file = folder / "list_attr_celeba.txt"
    if not attr_file.is_file():
        raise FileNotFoundError(_missing_data_message(profile, folder))
    stat = attr_file.stat()
    where = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:8]
    return f"{where}-{stat.st_size}-{stat.st_mtime_ns}"
