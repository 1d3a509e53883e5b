"""A readable summary of a CelebA-layout dataset: split sizes and attribute rates next to real CelebA's."""

from __future__ import annotations

from facegen.attributes import CELEBA_POSITIVE_PERCENT, CONDITIONING_ATTRIBUTES


def rate_table(rates: dict[str, float], names=CONDITIONING_ATTRIBUTES, label: str = "this set") -> str:
    """Markdown table: attribute | rate here (%) | CelebA (%)."""
    lines = [f"| attribute | {label} % | CelebA % |", "|---|---:|---:|"]
    lines += [f"| {name} | {rates[name]:.1f} | {CELEBA_POSITIVE_PERCENT[name]:.1f} |" for name in names]
    return "\n".join(lines)


def format_rates(index) -> str:
    """Split sizes and the conditioning attributes' positive rates of a `CelebAIndex`."""
    sizes = ", ".join(f"{name} {len(index.split(name)):,}" for name in ("train", "valid", "test"))
    return f"{len(index):,} images in {index.root} ({sizes})\n" + rate_table(index.positive_rates())


def find_bad_images(index, progress: bool = True, workers: int | None = None) -> list[tuple[str, str]]:
    """Decode every image of a `CelebAIndex` fully and check its size (178x218, CelebA's aligned crop, which
    SynthFaces writes too): `(filename, problem)` for each bad one (missing, zero bytes, truncated, not an image,
    wrong size), in file order. Decoding runs in threads (PIL releases the GIL while it decodes)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    from facegen.data.celeba import CelebAFormatError, load_image
    from facegen.data.transforms import CELEBA_SIZE

    def problem(i: int) -> str | None:
        path = index.path(i)
        try:
            if path.stat().st_size == 0:
                return "empty file (0 bytes)"
            size = load_image(path).size
        except (CelebAFormatError, OSError) as error:
            return str(error).removeprefix(f"{path}: ")
        if size != CELEBA_SIZE:
            return f"{size[0]}x{size[1]} pixels; expected {CELEBA_SIZE[0]}x{CELEBA_SIZE[1]} (width x height)"
        return None

    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        found = list(tqdm(pool.map(problem, range(len(index)), chunksize=64), total=len(index),
                          desc="checking images", unit="img", disable=not progress))
    return [(index.filenames[i], text) for i, text in enumerate(found) if text is not None]
