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

Encoding all of CelebA (202,599 faces) takes a while, so it is resumable. Each split is encoded in chunks of
`CHUNK_SIZE` faces; every finished chunk is written at once (atomically) into a partial folder next to the final one,

    artifacts/<profile>/tokens.partial/    progress.json          the fingerprints the chunks belong to, and the
                                                                  chunk size, counts and seconds spent so far
                                           train-0000000-0016384.npy   the codes of faces [0, 16384) of train, ...

and a rerun (after a kill, a crash, a closed Colab tab) skips the chunks already there when the VQ-VAE, the data and
the chunking are the same (else it says why and starts over). When every chunk exists, the DatasetDict above is
assembled from them, swapped in atomically, and the partial folder is removed. Memory stays flat as the dataset grows:
only the codes (512 bytes per face at 16x16) are ever held for a whole split.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from facegen.checkpoint import atomic_file, atomic_folder, atomic_write_json
from facegen.config import Profile, get_profile
from facegen.data.celeba import ATTR_FILE, IMAGE_DIR, PARTITION_FILE
from facegen.data.dataset import FaceDataset, open_dataset, uses_hub
from facegen.data.streaming import FaceImages
from facegen.data.transforms import from_uint8
from facegen.notes import note
from facegen.vqvae import VQVAE

FORMAT_VERSION = 1  # bump when the columns change: older token folders are then rebuilt
TOKENS_DIR = "tokens"
FINGERPRINT_FILE = "fingerprint.json"
SPLITS = ("train", "valid", "test")
CHUNK_SIZE = 16_384  # faces per resumable chunk: 13 chunks for CelebA, ~8 MB of codes each; a kill loses < 1 chunk
PARTIAL_SUFFIX = ".partial"
PROGRESS_FILE = "progress.json"


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
    return profile.tokenizer_artifacts(TOKENS_DIR)


def partial_folder(out_dir: Path) -> Path:
    """Where the finished chunks of an unfinished encoding into `out_dir` wait: `tokens` -> `tokens.partial`."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + PARTIAL_SUFFIX)


# --------------------------------------------------------------------------------------------------- encoding


def _codes_dtype(vqvae: VQVAE) -> torch.dtype:
    return torch.int16 if vqvae.codebook_size <= torch.iinfo(torch.int16).max + 1 else torch.int32


@contextlib.contextmanager
def _encoding(vqvae: VQVAE):
    """Yield `encode(uint8 batch) -> codes (B, h, w)` on the CPU: the batch is copied to the VQ-VAE's device (from
    pinned memory, without waiting, on CUDA) and scaled there, a quarter of the bytes of float images. The model is in
    eval mode meanwhile and goes back to its mode afterwards."""
    device = next(vqvae.parameters()).device
    cuda, dtype = device.type == "cuda", _codes_dtype(vqvae)
    was_training = vqvae.training
    vqvae.eval()
    try:
        yield lambda batch: vqvae.encode_indices(from_uint8(batch.to(device, non_blocking=cuda))).to("cpu", dtype)
    finally:
        vqvae.train(was_training)


def tokenize_split(vqvae: VQVAE, images, batch_size: int = 256, progress: bool = True, num_workers: int = 0,
                   desc: str = "tokenizing") -> torch.Tensor:
    """Codebook indices (N, 16, 16) of every image, int16 (int32 for codebooks over 32,768 codes).

    `images` is a uint8 tensor (N, 3, S, S) (e.g. from `load_images`), or a `FaceDataset`, whose JPEGs are then
    decoded batch by batch through a DataLoader instead of being held in memory.

    Encoding runs on the VQ-VAE's device: uint8 batches are copied there and scaled there; only the codes come back.
    (`tokenize_dataset` encodes whole datasets resumably, chunk by chunk, with the same steps.)"""
    cuda = next(vqvae.parameters()).device.type == "cuda"
    if isinstance(images, FaceDataset):  # JPEGs: decoded batch by batch as uint8 crops, like a streamed split
        images = FaceImages(images)
    if isinstance(images, FaceImages):
        total = len(images)
        batches = DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                             pin_memory=cuda)
    elif isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.ndim == 4 and images.shape[1] == 3:
        total = len(images)
        batches = (images[start:start + batch_size] for start in range(0, total, batch_size))
    else:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"tokenize_split: images must be a uint8 tensor (N, 3, S, S), a FaceDataset or FaceImages; "
                         f"got {got}")
    codes = []
    with _encoding(vqvae) as encode, tqdm(total=total, desc=desc, unit="img", disable=not progress) as bar:
        for batch in batches:
            codes.append(encode(batch))
            bar.update(len(batch))
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
    - for a Hugging Face dataset (a saved copy, or the hub's, see `uses_hub`): each split's `_fingerprint` (datasets'
      own hash of its content and history)."""
    source, root = profile.data.source, Path(profile.data_dir)
    hub = uses_hub(profile)  # also the gpu profile's fallback when data/celeba is missing
    digest = hashlib.sha256(f"source={source}{' (hub)' if hub and source != 'hf' else ''} "
                            f"image_size={profile.data.image_size}\n".encode())
    if source == "hf" or hub:
        for split, fingerprint in _hf_fingerprints(root, hub, missing=root if source == "celeba" else None).items():
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


def _hf_fingerprints(root: Path, hub: bool, missing: Path | None = None) -> dict[str, str]:
    from facegen.data.hf import load_hub_splits

    if hub:
        loaded = load_hub_splits(missing_folder=missing)  # not quiet: a first download shows its progress
    else:
        with _quiet_datasets():
            loaded = datasets.load_from_disk(str(root))
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
                     progress: bool = True, batch_size: int = 256,
                     chunk_size: int = CHUNK_SIZE) -> datasets.DatasetDict:
    """The profile's train / valid / test splits as tokens (see the module docstring for the columns), read from
    `out_dir` (default artifacts/<profile>/tokens) when they were made with the same VQ-VAE weights and data, else
    encoded now with `vqvae` (default: the profile's trained VQ-VAE), on its device, and saved there. When it encodes,
    it prints one line saying why; the speed is kept in fingerprint.json (`read_token_info`).

    Encoding is resumable: finished chunks of `chunk_size` faces wait in `partial_folder(out_dir)`, and a rerun after
    an interruption encodes only the chunks that are missing (see the module docstring)."""
    profile = profile or get_profile()
    out_dir = Path(out_dir or tokens_folder(profile))
    if vqvae is None:
        from facegen.vqvae_training import load_vqvae, vqvae_folder

        vqvae = load_vqvae(vqvae_folder(profile))
    fingerprints = {"vqvae": vqvae_fingerprint(vqvae), "data": data_fingerprint(profile)}
    reason = _stale_reason(read_token_info(out_dir), **fingerprints)
    if reason is not None:
        note(f"tokenizing the {profile.name!r} dataset with the VQ-VAE into {out_dir} ({reason})")
        splits, info = _encode_splits(profile, vqvae, fingerprints, progress, batch_size, out_dir, chunk_size)
        _save_atomic(splits, info, out_dir)
        del splits
        shutil.rmtree(partial_folder(out_dir), ignore_errors=True)  # its chunks are in the final folder now
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


# --------------------------------------------------------------------------------------------- resumable encoding


class _ChunkBatches(Sampler):
    """Batches of row indices that never cross a chunk boundary, over the chunks still to encode: the batches of a
    chunk are the same whether a run starts at row 0 or resumes, so resumed codes are byte-identical."""

    def __init__(self, chunks: list[tuple[int, int]], batch_size: int):
        self.chunks, self.batch_size = chunks, batch_size

    def __iter__(self):
        for start, stop in self.chunks:
            for first in range(start, stop, self.batch_size):
                yield list(range(first, min(first + self.batch_size, stop)))

    def __len__(self) -> int:
        return sum(-(-(stop - start) // self.batch_size) for start, stop in self.chunks)


def _chunk_path(partial: Path, split: str, start: int, stop: int) -> Path:
    return partial / f"{split}-{start:07d}-{stop:07d}.npy"


def _chunk_done(path: Path, rows: int, dtype: torch.dtype) -> bool:
    """Is the chunk file there, readable, with one code grid per row in the expected dtype?"""
    try:
        codes = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return codes.ndim == 2 and len(codes) == rows and codes.dtype == np.dtype(str(dtype).removeprefix("torch."))


def _resume_state(partial: Path, plan: dict) -> tuple[float, str | None]:
    """(seconds already spent on the chunks in `partial`, a note to print) for the encoding `plan`. Chunks made for
    another plan (another VQ-VAE, other data, another chunk size) are discarded, and the note says why."""
    if not partial.is_dir():
        return 0.0, None
    chunks = sorted(partial.glob("*.npy"))
    try:
        saved = json.loads((partial / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        saved = None
    why = None
    if not isinstance(saved, dict):
        why = f"{PROGRESS_FILE} is missing or unreadable"
    else:
        for key, text in (("format", "the token format changed"), ("vqvae", "the VQ-VAE changed"),
                          ("data", "the data changed"), ("chunk_size", "the chunk size changed"),
                          ("counts", "the split sizes changed"), ("codebook_size", "the codebook size changed")):
            if saved.get(key) != plan[key]:
                why = text
                break
    if why is not None:
        shutil.rmtree(partial)
        note = (f"[facegen] starting over: the {len(chunks)} finished chunk(s) in {partial} cannot be reused ({why})"
                if chunks else None)
        return 0.0, note
    done = sum(int(path.stem.split("-")[2]) - int(path.stem.split("-")[1]) for path in chunks)
    total = sum(plan["counts"].values())
    note = f"[facegen] resuming: {done:,} of {total:,} faces are already encoded in {partial}" if done else None
    return float(saved.get("seconds", 0.0)), note


def _encode_splits(profile: Profile, vqvae: VQVAE, fingerprints: dict, progress: bool, batch_size: int,
                   out_dir: Path, chunk_size: int = CHUNK_SIZE) -> tuple[datasets.DatasetDict, TokenInfo]:
    """Encode every split chunk by chunk into `partial_folder(out_dir)`, skipping the chunks a previous run finished,
    then assemble the splits from the chunks. Returns the splits (in memory) and their `TokenInfo`."""
    if chunk_size < 1:
        raise ValueError(f"tokenize_dataset: chunk_size must be >= 1, got {chunk_size}")
    partial = partial_folder(out_dir)
    faces = {split: open_dataset(profile, split) for split in SPLITS}
    dtype = _codes_dtype(vqvae)
    plan = {"format": FORMAT_VERSION, **fingerprints, "chunk_size": chunk_size,
            "counts": {split: len(faces[split]) for split in SPLITS}, "codebook_size": vqvae.codebook_size}
    seconds, resume_note = _resume_state(partial, plan)
    if resume_note:
        print(resume_note, flush=True)
    cuda = next(vqvae.parameters()).device.type == "cuda"

    def save_chunk(path: Path, codes: torch.Tensor, spent: float) -> None:
        nonlocal seconds
        if not (partial / PROGRESS_FILE).is_file():  # the partial folder appears with its first finished chunk
            partial.mkdir(parents=True, exist_ok=True)
            atomic_write_json(partial / PROGRESS_FILE, {**plan, "seconds": seconds})
        with atomic_file(path) as f:
            np.save(f, codes.reshape(len(codes), -1).numpy())
        seconds += spent
        atomic_write_json(partial / PROGRESS_FILE, {**plan, "seconds": seconds})

    with _encoding(vqvae) as encode:
        for split in SPLITS:
            n = len(faces[split])
            chunks = [(start, min(start + chunk_size, n)) for start in range(0, n, chunk_size)]
            todo = [c for c in chunks if not _chunk_done(_chunk_path(partial, split, *c), c[1] - c[0], dtype)]
            if not todo:
                continue
            done = n - sum(stop - start for start, stop in todo)
            loader = DataLoader(FaceImages(faces[split]), batch_sampler=_ChunkBatches(list(todo), batch_size),
                                num_workers=profile.data.num_workers, pin_memory=cuda)
            pending, filled, chunk_began = [], 0, time.perf_counter()
            with tqdm(total=n, initial=done, desc=f"tokenizing {split}", unit="img", disable=not progress) as bar:
                for batch in loader:
                    pending.append(encode(batch))
                    filled += len(batch)
                    bar.update(len(batch))
                    start, stop = todo[0]
                    if filled == stop - start:  # a chunk is complete: write it before encoding the next one
                        save_chunk(_chunk_path(partial, split, start, stop), torch.cat(pending),
                                   time.perf_counter() - chunk_began)
                        todo.pop(0)
                        pending, filled, chunk_began = [], 0, time.perf_counter()

    tables, grid_size = {}, 0
    for split in SPLITS:
        n = len(faces[split])
        parts = [np.load(_chunk_path(partial, split, start, min(start + chunk_size, n)))
                 for start in range(0, n, chunk_size)]
        codes = torch.from_numpy(np.concatenate(parts))
        del parts
        grid_size = int(round(codes.shape[1] ** 0.5))
        tables[split] = split_table(codes, faces[split].attributes.numpy())
    counts = {split: len(table) for split, table in tables.items()}
    info = TokenInfo(**fingerprints, codebook_size=vqvae.codebook_size, grid_size=grid_size, counts=counts,
                     seconds=seconds, images_per_second=sum(counts.values()) / max(seconds, 1e-9))
    return datasets.DatasetDict(tables), info
