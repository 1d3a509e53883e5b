"""Turn the profile's dataset into VQ-VAE tokens once, so GPT training reads 256 small integers per face, not JPEGs.

    artifacts/<profile>/tokens/            a Hugging Face DatasetDict (save_to_disk), splits train / valid / test
        dataset_dict.json, train/, ...     columns: codes      256 int16: the 16x16 code grid, row by row
                                                    attributes 40 int8 of -1/1, CelebA order (all 40, not only the
                                                               conditioning ones: the source's labels, untouched)
                                                    index      int64: the row of this face in its split of the
                                                               source, i.e. `open_dataset(profile, split)[index]`
        fingerprint.json                   what the tokens were made from, and how fast (see `TokenInfo`)

The codes are flat so that `dataset.with_format("torch")[i:j]["codes"]` is directly a (B, 256) batch;
`codes.reshape(-1, 16, 16)` gives the grids back. Sequences for the GPT are built from these columns by
`Vocabulary.encode_batch` (facegen/tokens.py) at training time, so changing the sequence format never means
re-encoding images.

`tokenize_dataset` is a no-op when fingerprint.json says the tokens come from the same VQ-VAE weights and the same
data; otherwise it re-encodes everything, streaming the images through a DataLoader (real CelebA does not fit in
memory as tensors), and replaces the folder atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from facegen.checkpoint import atomic_folder, atomic_write_json
from facegen.config import Profile, get_profile
from facegen.data.celeba import ATTR_FILE, IMAGE_DIR, PARTITION_FILE
from facegen.data.dataset import FaceDataset, open_dataset
from facegen.data.transforms import from_uint8
from facegen.notes import note
from facegen.vqvae import VQVAE

FORMAT_VERSION = 1  # bump when the columns change: older token folders are then rebuilt
TOKENS_DIR = "tokens"
FINGERPRINT_FILE = "fingerprint.json"
SPLITS = ("train", "valid", "test")


@dataclass
class TokenInfo:
    """Contents of fingerprint.json: what the tokens were made from, and the measured encoding speed."""

    vqvae: str  # `vqvae_fingerprint` of the model that encoded the images
    data: str  # `data_fingerprint` of the dataset
    codebook_size: int
    grid_size: int
    counts: dict = field(default_factory=dict)  # images per split
    seconds: float = 0.0  # wall time of the encoding, JPEG decoding included
    images_per_second: float = 0.0
    format: int = FORMAT_VERSION


def tokens_folder(profile: Profile) -> Path:
    return profile.artifacts / TOKENS_DIR


# --------------------------------------------------------------------------------------------------- encoding


class _Uint8Images(Dataset):
    """The uint8 face crops of a FaceDataset, so DataLoader workers send compact batches."""

    def __init__(self, faces: FaceDataset):
        self.faces = faces

    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.faces.uint8_item(i)[0]


def tokenize_split(vqvae: VQVAE, images, batch_size: int = 256, progress: bool = True, num_workers: int = 0,
                   desc: str = "tokenizing") -> torch.Tensor:
    """Codebook indices (N, 16, 16) of every image, int16 (int32 for codebooks over 32,768 codes).

    `images` is a uint8 tensor (N, 3, S, S) (e.g. from `load_images`), or a `FaceDataset`, whose JPEGs are then
    decoded batch by batch through a DataLoader instead of being held in memory.

    Encoding runs on the VQ-VAE's device: uint8 batches are copied there (from pinned memory, without waiting, on
    CUDA) and scaled there, a quarter of the bytes of float images; only the codes come back."""
    device = next(vqvae.parameters()).device
    cuda = device.type == "cuda"
    if isinstance(images, FaceDataset):
        total = len(images)
        batches = DataLoader(_Uint8Images(images), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                             pin_memory=cuda)
    elif isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.ndim == 4 and images.shape[1] == 3:
        total = len(images)
        batches = (images[start:start + batch_size] for start in range(0, total, batch_size))
    else:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"tokenize_split: images must be a uint8 tensor (N, 3, S, S) or a FaceDataset; got {got}")
    dtype = torch.int16 if vqvae.codebook_size <= torch.iinfo(torch.int16).max + 1 else torch.int32
    was_training = vqvae.training
    vqvae.eval()
    codes = []
    try:
        with tqdm(total=total, desc=desc, unit="img", disable=not progress) as bar:
            for batch in batches:
                codes.append(vqvae.encode_indices(from_uint8(batch.to(device, non_blocking=cuda))).to("cpu", dtype))
                bar.update(len(batch))
    finally:
        vqvae.train(was_training)
    return torch.cat(codes)


# ------------------------------------------------------------------------------------------------ fingerprints


def vqvae_fingerprint(vqvae: VQVAE) -> str:
    """SHA-256 of every weight and buffer (name, dtype, shape, bytes): exactly what `model.safetensors` holds, so
    a model loaded from its folder and the same model in memory agree. The architecture is in the names and shapes."""
    digest = hashlib.sha256(f"codebook_size={vqvae.codebook_size}\n".encode())
    for name, tensor in sorted(vqvae.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}\n".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def data_fingerprint(profile: Profile) -> str:
    """SHA-256 of what the tokens depend on in the data: the source, the image size, and
    - for the CelebA folder layout (CelebA, SynthFaces): the bytes of the attribute and partition files and the
      number of images in img_align_celeba/ (decoding every JPEG to hash it would cost as much as tokenizing);
    - for a Hugging Face dataset: each split's `_fingerprint` (datasets' own hash of its content and history)."""
    source, root = profile.data.source, Path(profile.data_dir)
    digest = hashlib.sha256(f"source={source} image_size={profile.data.image_size}\n".encode())
    if source == "hf":
        for split, fingerprint in _hf_fingerprints(root).items():
            digest.update(f"{split}={fingerprint}\n".encode())
        return digest.hexdigest()
    missing = [name for name in (ATTR_FILE, PARTITION_FILE, IMAGE_DIR) if not (root / name).exists()]
    if missing:
        raise FileNotFoundError(f"{root}: no dataset in the CelebA layout (missing {', '.join(missing)}); "
                                "`ensure_tokens` generates SynthFaces there, real CelebA is placed there by hand "
                                "(data/README.md), or set FACEGEN_DATA")
    for name in (ATTR_FILE, PARTITION_FILE):
        digest.update((root / name).read_bytes())
    digest.update(f"images={len(os.listdir(root / IMAGE_DIR))}\n".encode())
    return digest.hexdigest()


def _hf_fingerprints(root: Path) -> dict[str, str]:
    from facegen.data.hf import HUB_NAME, is_saved_dataset

    with _quiet_datasets():
        loaded = datasets.load_from_disk(str(root)) if is_saved_dataset(root) else datasets.load_dataset(HUB_NAME)
    if isinstance(loaded, datasets.Dataset):
        return {"all": loaded._fingerprint}
    return {name: split._fingerprint for name, split in sorted(loaded.items())}


def read_token_info(folder: Path) -> TokenInfo | None:
    """The `TokenInfo` of a finished token folder; None when there is none (or it is unreadable)."""
    folder = Path(folder)
    try:
        saved = json.loads((folder / FINGERPRINT_FILE).read_text())
        if not (folder / "dataset_dict.json").is_file():
            return None
        return TokenInfo(**saved)
    except (OSError, ValueError, TypeError):
        return None


def _stale_reason(info: TokenInfo | None, vqvae: str, data: str) -> str | None:
    """Why the saved tokens cannot be used, or None when they can."""
    if info is None:
        return "no tokens yet"
    if info.format != FORMAT_VERSION:
        return f"token format {info.format} is outdated (now {FORMAT_VERSION})"
    if info.vqvae != vqvae:
        return "the VQ-VAE changed"
    if info.data != data:
        return "the data changed"
    return None


# ----------------------------------------------------------------------------------------------------- datasets


@contextlib.contextmanager
def _quiet_datasets():
    """Hide datasets' own progress bars (saving, loading): ours already show the work, and in notebooks they are
    stderr noise."""
    was_enabled = datasets.utils.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def split_table(codes: torch.Tensor, attributes) -> datasets.Dataset:
    """One split as a `datasets.Dataset` with the columns `codes` (flat), `attributes`, `index`. Built from Arrow
    arrays directly: going through Python lists would take ~1 s per 10,000 faces."""
    codes = codes.reshape(len(codes), -1).numpy()
    attributes = np.asarray(attributes, dtype=np.int8)
    if len(attributes) != len(codes):
        raise ValueError(f"split_table: {len(attributes)} attribute rows for {len(codes)} code grids")
    features = datasets.Features({
        "codes": datasets.Sequence(datasets.Value(str(codes.dtype)), length=codes.shape[1]),
        "attributes": datasets.Sequence(datasets.Value("int8"), length=attributes.shape[1]),
        "index": datasets.Value("int64"),
    })
    return datasets.Dataset.from_dict({
        "codes": pa.FixedSizeListArray.from_arrays(pa.array(codes.ravel()), codes.shape[1]),
        "attributes": pa.FixedSizeListArray.from_arrays(pa.array(attributes.ravel()), attributes.shape[1]),
        "index": pa.array(np.arange(len(codes), dtype=np.int64)),
    }, features=features)


def _save_atomic(splits: datasets.DatasetDict, info: TokenInfo, out_dir: Path) -> None:
    """Write everything into a temporary sibling folder, then swap it in: a reader never sees half a token set, and
    fingerprint.json exists only in finished folders."""
    with atomic_folder(out_dir) as tmp:
        with _quiet_datasets():
            splits.save_to_disk(str(tmp))
        atomic_write_json(tmp / FINGERPRINT_FILE, asdict(info))


def tokenize_dataset(profile: Profile | None = None, vqvae: VQVAE | None = None, out_dir: Path | None = None,
                     progress: bool = True, batch_size: int = 256) -> datasets.DatasetDict:
    """The profile's train / valid / test splits as tokens (see the module docstring for the columns), read from
    `out_dir` (default artifacts/<profile>/tokens) when they were made with the same VQ-VAE weights and data, else
    encoded now with `vqvae` (default: the profile's trained VQ-VAE) and saved there. When it encodes, it prints one
    line saying why; the speed is kept in fingerprint.json (`read_token_info`)."""
    profile = profile or get_profile()
    out_dir = Path(out_dir or tokens_folder(profile))
    if vqvae is None:
        from facegen.vqvae_training import load_vqvae, vqvae_folder

        vqvae = load_vqvae(vqvae_folder(profile))
    fingerprints = {"vqvae": vqvae_fingerprint(vqvae), "data": data_fingerprint(profile)}
    reason = _stale_reason(read_token_info(out_dir), **fingerprints)
    if reason is not None:
        note(f"tokenizing the {profile.name!r} dataset with the VQ-VAE into {out_dir} ({reason})")
        splits, info = _encode_splits(profile, vqvae, fingerprints, progress, batch_size)
        _save_atomic(splits, info, out_dir)
    with _quiet_datasets():
        return datasets.load_from_disk(str(out_dir))  # memory-mapped from the final folder, not the temporary one


def load_token_splits(profile: Profile | None = None, folder: Path | None = None) -> datasets.DatasetDict:
    """The token shards saved by `tokenize_dataset` (default: the profile's), without encoding anything: a missing
    folder is one clear error saying how to make it."""
    profile = profile or get_profile()
    folder = Path(folder or tokens_folder(profile))
    if read_token_info(folder) is None:
        raise FileNotFoundError(f"no token shards in {folder}: make them with `facegen tokenize --profile "
                                f"{profile.name}` (or facegen.pipeline.ensure_tokens)")
    with _quiet_datasets():
        return datasets.load_from_disk(str(folder))


def _encode_splits(profile: Profile, vqvae: VQVAE, fingerprints: dict, progress: bool,
                   batch_size: int) -> tuple[datasets.DatasetDict, TokenInfo]:
    began = time.perf_counter()
    tables, grid_size = {}, 0
    for split in SPLITS:
        faces = open_dataset(profile, split)
        codes = tokenize_split(vqvae, faces, batch_size=batch_size, progress=progress,
                               num_workers=profile.data.num_workers, desc=f"tokenizing {split}")
        tables[split], grid_size = split_table(codes, faces.attributes.numpy()), codes.shape[-1]
    seconds = time.perf_counter() - began
    counts = {split: len(table) for split, table in tables.items()}
    info = TokenInfo(**fingerprints, codebook_size=vqvae.codebook_size, grid_size=grid_size, counts=counts,
                     seconds=seconds, images_per_second=sum(counts.values()) / seconds)
    return datasets.DatasetDict(tables), info
