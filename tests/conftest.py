"""Shared fixtures: a tiny dataset written in CelebA's folder layout, quirks of the real files included; the
benchmark scripts as importable modules."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from facegen.attributes import CELEBA_ATTRIBUTES

TINY_SPLITS = (0,) * 6 + (1,) * 2 + (2,) * 2  # 6 train, 2 valid, 2 test, in file order like the real partition


def tiny_face(i: int) -> Image.Image:
    """A 178x218 image that differs per index: a colour ramp plus a bright square whose place depends on i."""
    y, x = np.mgrid[0:218, 0:178]
    pixels = np.stack([(x + 17 * i) % 256, (y + 31 * i) % 256, np.full_like(x, (60 * i) % 256)], axis=-1)
    top, left = 30 + 7 * i, 20 + 9 * i
    pixels[top:top + 40, left:left + 40] = 255
    return Image.fromarray(pixels.astype(np.uint8))


def write_celeba(root: Path, splits=TINY_SPLITS, seed: int = 0) -> SimpleNamespace:
    """Write ROOT/img_align_celeba/*.jpg, list_attr_celeba.txt and list_eval_partition.txt exactly as the real
    CelebA download spells them (the name line ends with a space, a `1` is padded to the width of `-1`)."""
    n = len(splits)
    filenames = [f"{i + 1:06d}.jpg" for i in range(n)]
    attributes = np.where(np.random.default_rng(seed).random((n, 40)) < 0.3, 1, -1).astype(np.int8)
    (root / "img_align_celeba").mkdir(parents=True)
    for i, name in enumerate(filenames):
        tiny_face(i).save(root / "img_align_celeba" / name, quality=95)
    rows = [f"{name} " + " ".join(f"{v:2d}" for v in values) for name, values in zip(filenames, attributes)]
    (root / "list_attr_celeba.txt").write_text(f"{n}\n" + " ".join(CELEBA_ATTRIBUTES) + " \n" + "\n".join(rows) + "\n")
    (root / "list_eval_partition.txt").write_text("".join(f"{name} {s}\n" for name, s in zip(filenames, splits)))
    return SimpleNamespace(root=root, filenames=filenames, attributes=attributes, splits=np.array(splits, np.int8))


@pytest.fixture
def celeba(tmp_path) -> SimpleNamespace:
    """A 10-image CelebA-layout folder; `.root`, and what was written: `.filenames`, `.attributes`, `.splits`."""
    return write_celeba(tmp_path / "celeba")


@pytest.fixture
def make_celeba(tmp_path):
    """`make_celeba(name, splits=..., seed=...)` writes another CelebA-layout folder under tmp_path."""
    return lambda name="celeba", **kwargs: write_celeba(tmp_path / name, **kwargs)


@pytest.fixture(scope="module")
def celeba_shared(tmp_path_factory) -> SimpleNamespace:
    """Like `celeba`, written once per test module: for tests that only read it."""
    return write_celeba(tmp_path_factory.mktemp("shared") / "celeba")


@pytest.fixture(scope="session")
def import_benchmark():
    """`import_benchmark("bench_tokenizers")` -> benchmarks/bench_tokenizers.py as a module. benchmarks/ is not a
    package: its scripts import their shared helpers (held_out.py) by name, so it is on sys.path while they load."""
    folder = str(Path(__file__).resolve().parents[1] / "benchmarks")

    def load(name: str):
        sys.path.insert(0, folder)
        try:
            return importlib.import_module(name)
        finally:
            sys.path.remove(folder)

    return load


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Unit tests run tiny models made of many small ops; with 2 threads every op waits for both cores, which a busy
    machine may not give (measured: one training test took 29 s instead of 1.8 s next to two busy processes)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
