"""CelebA from the Hugging Face hub (`flwrlabs/celeba`) or from a local copy saved with `save_to_disk`.

That dataset has an `image` column (PIL images, 178x218), `celeb_id`, the 40 attributes as bool columns named as in
CELEBA_ATTRIBUTES, and the official splits `train` / `valid` / `test`. `HFCelebA` gives it the interface of
`CelebAIndex` that `FaceDataset` uses: `len()`, `image(i)`, `attributes` (N, 40) int8 of -1/1, `split(name)`.

From the hub (`load_hub_splits`): the `gpu` profile falls back to it when it finds no CelebA folder (Colab's one "Run
all"; see `facegen.data.dataset.uses_hub`). The dataset is loaded once per process with `datasets.load_dataset`
(config `img_align+identity+attr`), which downloads it once (about 12 GB of parquet files: 19 + 3 + 3 files of
0.4-0.5 GB on the hub's file listing; CelebA's own JPEGs are 1.4 GB), shows its own progress bars, converts it to
Arrow files in the `datasets` cache and afterwards reads it from there, memory-mapped.
One line says what is loaded and how big before it starts; without a connection (and no cached copy) one line says
what to do instead (`HubUnavailableError`). `_download_from_hub` is the only function that calls the hub.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from facegen.attributes import CELEBA_ATTRIBUTES
from facegen.data.celeba import CelebAFormatError, strict_decoding
from facegen.errors import FacegenError

HUB_NAME = "flwrlabs/celeba"
HUB_CONFIG = "img_align+identity+attr"  # flwrlabs/celeba's one config: aligned images, identity, 40 attributes
HUB_SIZE = "202,599 faces, about 12 GB to download once"
SPLIT_ALIASES = {"validation": "valid", "val": "valid"}  # names other copies use for CelebA's "valid"
SPLIT_ORDER = ("train", "valid", "test")


def canonical_split(name: str) -> str:
    """"validation" / "val" -> "valid"; other names unchanged."""
    name = name.strip().lower()
    return SPLIT_ALIASES.get(name, name)


def is_saved_dataset(path: str | os.PathLike) -> bool:
    """True for a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    path = Path(path)
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


class HFCelebA:
    """One split of a CelebA-shaped `datasets.Dataset`, seen through the interface of `CelebAIndex`."""

    def __init__(self, dataset: datasets.Dataset, source: str, split_name: str):
        missing = [c for c in ("image", *CELEBA_ATTRIBUTES) if c not in dataset.column_names]
        if missing:
            raise CelebAFormatError(
                f"{source} (split {split_name!r}): expected an 'image' column and the 40 CelebA attribute columns; "
                f"missing {len(missing)}: {', '.join(missing)}")
        self.source, self.split_name = source, split_name
        self.attribute_names = CELEBA_ATTRIBUTES
        self.attributes = _attribute_matrix(dataset)
        self._images = dataset.select_columns(["image"])  # indexing it decodes only the image, not 41 other fields

    def __len__(self) -> int:
        return len(self._images)

    def image(self, i: int) -> Image.Image:
        """Image i as RGB; a `CelebAFormatError` naming the dataset and row if it cannot be decoded."""
        try:
            with strict_decoding():
                image = self._images[int(i)]["image"]
                image.load()
        except (OSError, SyntaxError, ValueError) as error:
            raise CelebAFormatError(f"{self.source} (split {self.split_name!r}), row {i}: cannot decode image "
                                    f"({error})") from None
        return image.convert("RGB")

    def split(self, name: str) -> "HFCelebA":
        """This object when `name` is its split; the hub and saved copies hold one split per object."""
        if canonical_split(name) != self.split_name:
            raise ValueError(f"{self.source}: this object holds split {self.split_name!r}; load split {name!r} with "
                             f"load_hf_celeba(..., split={canonical_split(name)!r})")
        return self

    def positive_rates(self) -> dict[str, float]:
        """Percent of images with each attribute, comparable to CELEBA_POSITIVE_PERCENT."""
        rates = 100.0 * (self.attributes == 1).mean(axis=0) if len(self) else np.zeros(len(CELEBA_ATTRIBUTES))
        return {name: float(rate) for name, rate in zip(CELEBA_ATTRIBUTES, rates)}

    def __repr__(self) -> str:
        return f"HFCelebA({self.source!r}, split={self.split_name!r}, {len(self):,} images)"


def _attribute_matrix(dataset: datasets.Dataset) -> np.ndarray:
    """(N, 40) int8 of -1/1 in CelebA order; bool columns (and 0/1 or -1/1 integers) count as positive when > 0."""
    columns = dataset.select_columns(list(CELEBA_ATTRIBUTES)).with_format("numpy")[:]
    if len(dataset) == 0:
        return np.zeros((0, len(CELEBA_ATTRIBUTES)), dtype=np.int8)
    positive = np.stack([np.asarray(columns[name]) > 0 for name in CELEBA_ATTRIBUTES], axis=1)
    return np.where(positive, 1, -1).astype(np.int8)


def _pick_split(splits: dict[str, datasets.Dataset], requested: str, source: str) -> datasets.Dataset:
    """The requested split of a DatasetDict ("all" = every split, train/valid/test first), accepting aliases."""
    by_name = {canonical_split(name): name for name in splits}
    if requested == "all":
        order = sorted(by_name, key=lambda n: SPLIT_ORDER.index(n) if n in SPLIT_ORDER else len(SPLIT_ORDER))
        return datasets.concatenate_datasets([splits[by_name[n]] for n in order])
    if requested not in by_name:
        raise ValueError(f"{source}: split {requested!r} does not exist; available splits: "
                         f"{', '.join(splits) or 'none'} (or 'all')")
    return splits[by_name[requested]]


def _load_local(path: Path, split: str) -> datasets.Dataset:
    if not is_saved_dataset(path):
        raise CelebAFormatError(f"{path}: expected a dataset saved with Dataset.save_to_disk or "
                                f"DatasetDict.save_to_disk (dataset_dict.json or state.json); for CelebA's folder "
                                f"layout (img_align_celeba/, list_attr_celeba.txt) use data source 'celeba'")
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        return _pick_split(dict(loaded), split, str(path))
    # A single saved Dataset holds one split; refuse to pass it off as another one it says it is not.
    own = canonical_split(str(loaded.split)) if loaded.split is not None else None
    if own is not None and split != "all" and own != split:
        raise ValueError(f"{path}: split {split!r} does not exist; available splits: {own}")
    return loaded


class HubUnavailableError(FacegenError, FileNotFoundError):
    """CelebA cannot be loaded from the Hugging Face hub (offline, or the hub refused); the message says what to do."""


_OFFLINE_VALUES = {"1", "ON", "YES", "TRUE"}
_hub_loaded: dict[tuple[str, str], datasets.DatasetDict] = {}  # one load per process: every split and stage shares it


def _offline_env() -> bool:
    return any(os.environ.get(name, "").upper() in _OFFLINE_VALUES
               for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Can a TCP connection to the hub be opened within `timeout` seconds? Asked before `load_dataset`, which
    without a network retries for ~25 s and prints every retry."""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _no_connection() -> bool:
    """True when the hub cannot be reached and `datasets` was not told to work offline (HF_HUB_OFFLINE=1: then it
    reads its cache without asking the network). Behind a proxy a direct connection says nothing: not asked."""
    behind_proxy = any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))
    return not _offline_env() and not behind_proxy and not _hub_reachable()


def _download_from_hub(name: str, config: str | None, cache_dir: str | None) -> datasets.DatasetDict:
    """Every split of the hub dataset `name` (downloaded once, then from the `datasets` cache): the one call to the
    hub, with `datasets`' own progress bars."""
    return datasets.load_dataset(name, config, cache_dir=cache_dir)


def _cache_folder(name: str, cache_dir: str | None) -> Path:
    return Path(cache_dir or datasets.config.HF_DATASETS_CACHE) / name.replace("/", "___")


def load_hub_splits(name: str = HUB_NAME, cache_dir: str | os.PathLike | None = None,
                    missing_folder: str | os.PathLike | None = None) -> datasets.DatasetDict:
    """Every split of a CelebA-shaped hub dataset (flwrlabs/celeba: train / valid / test), loaded once per process.

    Before loading it prints one line saying what and how big (`missing_folder`: the CelebA folder that was not
    found, named in that line); `datasets` shows the download's progress. A failure to reach the hub (offline, no
    cached copy) is a `HubUnavailableError` in one line that says what to do instead."""
    from facegen.checkpoint import _disk_full
    from facegen.notes import note

    cache = None if cache_dir is None else str(cache_dir)
    key = (str(name), str(cache))
    if key not in _hub_loaded:
        where = _cache_folder(str(name), cache)
        what = f"{name} ({HUB_SIZE})" if str(name) == HUB_NAME else str(name)
        how = (f"from the cache in {where}" if where.is_dir() else
               f"from the Hugging Face hub into the cache {where.parent} (first time only)")
        try:
            if _no_connection():  # say so at once: `load_dataset` would retry for ~25 s, printing every retry
                raise ConnectionError("no connection to huggingface.co")
            note((f"CelebA not found in {missing_folder}: " if missing_folder else "") + f"loading {what} {how}")
            loaded = _download_from_hub(str(name), HUB_CONFIG if str(name) == HUB_NAME else None, cache)
        except OSError as error:  # ConnectionError, OfflineModeIsEnabled, HfHubHTTPError, DatasetNotFoundError, ...
            if _disk_full(error):
                raise
            cause = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
            if missing_folder:
                raise HubUnavailableError(
                    f"CelebA not found in {missing_folder}, and {name} cannot be loaded from the Hugging Face hub "
                    f"({cause}): bring CelebA into {missing_folder} (data/README.md) or run the course on "
                    "SynthFaces with FACEGEN_PROFILE=cpu") from None
            raise HubUnavailableError(
                f"{name} cannot be loaded from the Hugging Face hub ({cause}): connect to the internet, or point "
                "FACEGEN_DATA at a copy saved with save_to_disk (data/README.md), or run the course on SynthFaces "
                "with FACEGEN_PROFILE=cpu") from None
        if isinstance(loaded, datasets.Dataset):
            loaded = datasets.DatasetDict({"train": loaded})
        _hub_loaded[key] = loaded
    return _hub_loaded[key]


def load_hf_celeba(name_or_path: str | os.PathLike = HUB_NAME, split: str = "train",
                   cache_dir: str | os.PathLike | None = None,
                   missing_folder: str | os.PathLike | None = None) -> HFCelebA:
    """One split ("train", "valid" (or "validation"), "test", "all") of a CelebA-shaped Hugging Face dataset:
    a local folder written by `save_to_disk`, else a hub name such as "flwrlabs/celeba" (see `load_hub_splits`)."""
    split = canonical_split(split)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return HFCelebA(_load_local(path, split), str(path), split)
    splits = load_hub_splits(str(name_or_path), cache_dir=cache_dir, missing_folder=missing_folder)
    return HFCelebA(_pick_split(dict(splits), split, str(name_or_path)), str(name_or_path), split)
