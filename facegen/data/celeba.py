"""Read a dataset stored in CelebA's folder layout (real CelebA or SynthFaces) and decode its images safely.

    ROOT/img_align_celeba/000001.jpg ...      178x218 aligned faces
    ROOT/list_attr_celeba.txt                 line 1: image count; line 2: the 40 attribute names;
                                              then `000001.jpg -1  1  1 -1 ...` (40 values of -1/1)
    ROOT/list_eval_partition.txt              `000001.jpg 0` with 0 train, 1 valid, 2 test

torchvision's CelebA reader MD5-checks these text files, so it reads nothing but the original download; facegen
parses the layout itself. The parser works on the raw bytes with numpy (no per-row Python), so the real 202,599-row
attribute file reads in well under two seconds, and every problem ends in one `CelebAFormatError` naming the file,
the line and what was expected.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile
from tqdm.auto import tqdm

from facegen.attributes import CELEBA_ATTRIBUTES

IMAGE_DIR = "img_align_celeba"
ATTR_FILE = "list_attr_celeba.txt"
PARTITION_FILE = "list_eval_partition.txt"
SPLITS = {"train": 0, "valid": 1, "test": 2}
SHOW = 5  # how many offending names an error message lists before "..."


class CelebAFormatError(ValueError):
    """A dataset in the CelebA layout is missing a part or does not follow the format; the message says where."""


@dataclass
class CelebAIndex:
    """The parsed text files of one dataset: row i describes the image `root/img_align_celeba/filenames[i]`."""

    root: Path
    filenames: list[str]
    attributes: np.ndarray  # int8 (N, 40) of -1/1, columns in CELEBA_ATTRIBUTES order
    splits: np.ndarray  # int8 (N,): 0 train, 1 valid, 2 test
    attribute_names: tuple[str, ...] = CELEBA_ATTRIBUTES

    def __len__(self) -> int:
        return len(self.filenames)

    @property
    def image_dir(self) -> Path:
        return self.root / IMAGE_DIR

    def path(self, i: int) -> Path:
        return self.image_dir / self.filenames[i]

    def image(self, i: int) -> Image.Image:
        """Image i decoded as RGB (a `CelebAFormatError` naming the file if it cannot be decoded)."""
        return load_image(self.path(i))

    def split(self, name: str) -> "CelebAIndex":
        """The rows of one official split: "train", "valid", "test", or "all" (everything, file order)."""
        if name == "all":
            return self
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of train, valid, test, all")
        return self.subset(np.flatnonzero(self.splits == SPLITS[name]))

    def subset(self, rows) -> "CelebAIndex":
        """The given rows (indices or a boolean mask), in that order."""
        rows = np.asarray(rows)
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(np.int64)
        return CelebAIndex(self.root, [self.filenames[i] for i in rows], self.attributes[rows], self.splits[rows],
                           self.attribute_names)

    def positive_rates(self) -> dict[str, float]:
        """Percent of images with each attribute (value 1), comparable to CELEBA_POSITIVE_PERCENT."""
        rates = 100.0 * (self.attributes == 1).mean(axis=0) if len(self) else np.zeros(len(self.attribute_names))
        return {name: float(rate) for name, rate in zip(self.attribute_names, rates)}


# --------------------------------------------------------------------------------------------------- text files


def _fail(path: Path, message: str, line: int | None = None) -> CelebAFormatError:
    where = f"{path}, line {line}" if line is not None else f"{path}"
    return CelebAFormatError(f"{where}: {message}")


def _names(names, limit: int = SHOW) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names):,} in all)" if len(names) > limit else "")


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise _fail(path, f"file not found; expected the CelebA text file {path.name} in {path.parent}")
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise _fail(path, "not a text file (invalid UTF-8); expected plain text", line) from None
    return data


@dataclass
class _Table:
    """Whitespace-separated tokens of a block of lines, as byte offsets (found with numpy, no per-row Python)."""

    data: bytes
    starts: np.ndarray  # (T,) offset of each token's first byte
    ends: np.ndarray  # (T,) offset one past each token's last byte
    counts: np.ndarray  # (L,) tokens on each line; trailing blank lines dropped

    def text(self, starts, ends) -> list[str]:
        starts, ends = np.ravel(starts), np.ravel(ends)
        width = ends - starts
        if len(width) and (width == width[0]).all() and self.data.isascii():
            # Tokens of one length, like CelebA's filenames: gather them as one (N, width) block, decode it at once.
            block = np.frombuffer(self.data, np.uint8)[starts[:, None] + np.arange(width[0])]
            return block.view(f"S{width[0]}").ravel().astype(str).tolist()
        return [self.data[s:e].decode() for s, e in zip(starts.tolist(), ends.tolist())]


def _tokenize(data: bytes) -> _Table:
    # Pad with a space on each side, so each token is exactly a space->word edge followed by a word->space edge.
    padded = np.frombuffer(b" " + data + b" ", np.uint8)
    space = padded <= 32  # space, tab, CR, LF (and other control bytes)
    word = ~space
    starts = np.flatnonzero(space[:-1] & word[1:])  # offsets in `data`, thanks to the padding
    ends = np.flatnonzero(word[:-1] & space[1:])
    newlines = np.flatnonzero(padded[1:-1] == ord("\n"))
    line_ends = np.append(newlines, len(data))  # the last line may lack its newline
    tokens_before = np.searchsorted(starts, line_ends)
    counts = np.diff(tokens_before, prepend=0)
    filled = np.flatnonzero(counts)
    counts = counts[: filled[-1] + 1] if len(filled) else counts[:0]
    return _Table(data, starts, ends, counts)


def _rows(path: Path, table: _Table, columns: int, first_line: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Token offsets shaped (rows, columns), after checking every line has exactly `columns` tokens."""
    wrong = np.flatnonzero(table.counts != columns)
    if len(wrong):
        row = int(wrong[0])
        raise _fail(path, f"expected {columns} columns ({what}), got {table.counts[row]}", first_line + row)
    return table.starts.reshape(-1, columns), table.ends.reshape(-1, columns)


def _split_header(path: Path, data: bytes, n_lines: int) -> tuple[list[bytes], bytes]:
    parts = data.split(b"\n", n_lines)
    if len(parts) <= n_lines:
        raise _fail(path, f"expected at least {n_lines + 1} lines (a count, the 40 attribute names, then rows), "
                          f"got {len(parts)}")
    return parts[:n_lines], parts[n_lines]


def _check_header(path: Path, names: list[str]) -> None:
    if names == list(CELEBA_ATTRIBUTES):
        return
    expected = list(CELEBA_ATTRIBUTES)
    missing = [n for n in expected if n not in names]
    unexpected = [n for n in names if n not in expected]
    if missing or unexpected:
        detail = f"missing {_names(missing, 40) or 'none'}; unexpected {_names(unexpected, 40) or 'none'}"
    elif len(names) != len(expected):
        detail = f"got {len(names)} names, some repeated"
    else:
        i = next(i for i, (a, b) in enumerate(zip(names, expected)) if a != b)
        detail = f"same names in another order: position {i + 1} is {names[i]!r}, expected {expected[i]!r}"
    raise _fail(path, f"expected the 40 CelebA attribute names in CelebA order; {detail}", 2)


def _check_unique(path: Path, filenames: list[str], first_line: int) -> None:
    if len(set(filenames)) == len(filenames):
        return
    seen: set[str] = set()
    for row, name in enumerate(filenames):
        if name in seen:
            raise _fail(path, f"{name} is listed twice; expected each image once", first_line + row)
        seen.add(name)


def read_attributes(path: Path) -> tuple[list[str], np.ndarray]:
    """Filenames and the (N, 40) int8 matrix of -1/1 from a `list_attr_celeba.txt`."""
    data = _read_bytes(path)
    (count_line, header_line), body = _split_header(path, data, 2)
    try:
        count = int(count_line.decode().strip())
    except ValueError:
        raise _fail(path, f"expected the number of images as an integer, got {count_line.decode().strip()!r}",
                    1) from None
    _check_header(path, header_line.decode().split())

    table = _tokenize(body)
    columns = 1 + len(CELEBA_ATTRIBUTES)
    starts, ends = _rows(path, table, columns, first_line=3, what="a filename and 40 values")
    if len(starts) != count:
        raise _fail(path, f"line 1 says {count:,} images but the file has {len(starts):,} rows", 1)

    # A value is the byte string b"1" or b"-1": look at its length and first two bytes, all rows at once.
    raw = np.frombuffer(body + b"  ", np.uint8)  # padding so raw[start + 1] exists for the last value
    value_starts, length = starts[:, 1:], ends[:, 1:] - starts[:, 1:]
    first, second = raw[value_starts], raw[value_starts + 1]
    positive = (length == 1) & (first == ord("1"))
    negative = (length == 2) & (first == ord("-")) & (second == ord("1"))
    bad = np.argwhere(~(positive | negative))
    if len(bad):
        row, col = (int(x) for x in bad[0])
        value = table.text(starts[row, col + 1], ends[row, col + 1])[0]
        raise _fail(path, f"expected -1 or 1 for {CELEBA_ATTRIBUTES[col]} (column {col + 2}), got {value!r}",
                    3 + row)
    attributes = np.where(positive, 1, -1).astype(np.int8)
    filenames = table.text(starts[:, 0], ends[:, 0])
    _check_unique(path, filenames, first_line=3)
    return filenames, attributes


def read_partition(path: Path) -> tuple[list[str], np.ndarray]:
    """Filenames and their int8 split codes (0 train, 1 valid, 2 test) from a `list_eval_partition.txt`."""
    table = _tokenize(_read_bytes(path))
    starts, ends = _rows(path, table, 2, first_line=1, what="a filename and a split")
    raw = np.frombuffer(table.data + b" ", np.uint8)
    code = raw[starts[:, 1]].astype(np.int16) - ord("0")
    bad = np.flatnonzero((ends[:, 1] - starts[:, 1] != 1) | (code < 0) | (code > 2))
    if len(bad):
        row = int(bad[0])
        value = table.text(starts[row, 1], ends[row, 1])[0]
        raise _fail(path, f"expected split 0 (train), 1 (valid) or 2 (test), got {value!r}", 1 + row)
    filenames = table.text(starts[:, 0], ends[:, 0])
    _check_unique(path, filenames, first_line=1)
    return filenames, code.astype(np.int8)


def _align(attr_path: Path, attr_names: list[str], part_path: Path, part_names: list[str],
           codes: np.ndarray) -> np.ndarray:
    """Split codes in the attribute file's row order (the real files agree line by line; this also takes any order)."""
    if attr_names == part_names:
        return codes
    only_attr = sorted(set(attr_names) - set(part_names))
    only_part = sorted(set(part_names) - set(attr_names))
    if only_attr:
        raise _fail(part_path, f"expected every image of {attr_path.name} to have a split; "
                               f"{len(only_attr):,} missing: {_names(only_attr)}")
    if only_part:
        raise _fail(attr_path, f"expected every image of {part_path.name} to have attributes; "
                               f"{len(only_part):,} missing: {_names(only_part)}")
    code_of = dict(zip(part_names, codes.tolist()))
    return np.array([code_of[name] for name in attr_names], dtype=np.int8)


def read_celeba(root: str | os.PathLike) -> CelebAIndex:
    """Parse and check a dataset in the CelebA folder layout (text files + image listing; images are not decoded:
    `check_images` does that)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise _fail(root, f"folder not found; expected a dataset in the CelebA layout ({IMAGE_DIR}/, {ATTR_FILE}, "
                          f"{PARTITION_FILE})")
    image_dir = root / IMAGE_DIR
    if not image_dir.is_dir():
        raise _fail(image_dir, "folder not found; expected the CelebA images (000001.jpg, ...) in it")
    attr_path, part_path = root / ATTR_FILE, root / PARTITION_FILE
    filenames, attributes = read_attributes(attr_path)
    part_names, codes = read_partition(part_path)
    splits = _align(attr_path, filenames, part_path, part_names, codes)

    present = set(os.listdir(image_dir))
    if not present.issuperset(filenames):
        absent = [name for name in filenames if name not in present]
        raise _fail(image_dir, f"expected every image listed in {ATTR_FILE}; {len(absent):,} of {len(filenames):,} "
                               f"are absent: {_names(absent)}")
    return CelebAIndex(root, filenames, attributes, splits)


# ------------------------------------------------------------------------------------------------------ images


@contextlib.contextmanager
def strict_decoding():
    """PIL can be told (globally, by any library) to pad truncated files with grey; a training set must not be."""
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def load_image(path: str | os.PathLike) -> Image.Image:
    """The image at `path`, fully decoded, as RGB; a `CelebAFormatError` naming the file when it is missing,
    truncated or not an image."""
    path = Path(path)
    try:
        with strict_decoding(), Image.open(path) as image:
            image.load()  # decode every byte now: Image.open only reads the header, so truncation would hide
            return image.convert("RGB")
    except FileNotFoundError:
        raise _fail(path, "image file not found") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise _fail(path, f"cannot decode image ({error}); expected a complete JPEG or PNG file") from None


def check_images(index: CelebAIndex, skip_bad: bool = False, progress: bool = True) -> tuple[CelebAIndex, list[str]]:
    """Decode every image once. By default the first bad one raises; with `skip_bad=True` bad images are dropped,
    reported in one line, and the filtered index is returned with the names that were skipped."""
    skipped: list[str] = []
    keep = np.ones(len(index), dtype=bool)
    for i in tqdm(range(len(index)), desc="checking images", unit="img", disable=not progress):
        try:
            load_image(index.path(i))
        except CelebAFormatError:
            if not skip_bad:
                raise
            skipped.append(index.filenames[i])
            keep[i] = False
    if not skipped:
        return index, []
    print(f"skipped {len(skipped):,} unreadable images of {len(index):,} in {index.image_dir}: "
          f"{_names(skipped, 10)}")
    return index.subset(keep), skipped
