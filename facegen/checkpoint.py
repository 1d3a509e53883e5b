"""Training checkpoints that can resume exactly: model, optimizer, scheduler, step, history and every RNG state.

Writes are atomic (temp file, then rename), so an interrupted save never destroys the previous checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


@contextmanager
def atomic_folder(target: Path):
    """Yield an empty temporary sibling of `target` to fill; when the block succeeds, it replaces `target` whole.

    A reader never sees half a folder, and a failure leaves the previous `target` as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    old = target.with_name(f".{target.name}.old{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, **state: Any) -> None:
    """Save `state` (e.g. model=..., optimizer=..., step=...) plus the RNG states, atomically.

    Modules, optimizers and schedulers are stored through their `state_dict()`."""
    payload = {key: value.state_dict() if hasattr(value, "state_dict") else value for key, value in state.items()}
    payload["rng"] = rng_state()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, **objects: Any) -> dict:
    """Restore the objects given by keyword (model=..., optimizer=...) and the RNG states; return the rest.

    The file holds our own training state (RNG tuples, numpy arrays), which torch's safe `weights_only=True` loader
    refuses, so it is read with `weights_only=False`: only resume from checkpoints you wrote yourself."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a truncated or foreign file
        raise ValueError(f"{path} is not a readable facegen checkpoint ({error})") from error
    missing = [key for key in objects if key not in payload]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}; keys present: {', '.join(sorted(payload))}")
    for key, obj in objects.items():
        obj.load_state_dict(payload[key])
    set_rng_state(payload["rng"])
    return {key: value for key, value in payload.items() if key not in objects and key != "rng"}


def load_model_folder(model_class, folder: Path, what: str, how_to_make: str):
    """A `save_pretrained` folder (config.json + model.safetensors) loaded strictly into `model_class(**config)`.

    Not `from_pretrained`: huggingface_hub's version prints to stdout and loads non-strictly, and a wrong file should
    fail loudly with one error naming it. `what` names the model in messages, `how_to_make` says how to create one."""
    from safetensors.torch import load_model

    folder = Path(folder)
    config_file, weights = folder / "config.json", folder / "model.safetensors"
    if not config_file.is_file() or not weights.is_file():
        raise FileNotFoundError(f"{folder} is not a trained {what}: expected config.json and model.safetensors "
                                f"({how_to_make})")
    try:
        model = model_class(**json.loads(config_file.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as error:
        raise ValueError(f"{config_file} is not {_article(what)} {what} config ({error})") from error
    try:
        missing, unexpected = load_model(model, weights, strict=False)
    except RuntimeError as error:  # shapes differ from what config.json describes
        raise ValueError(f"{weights} does not match {config_file}: {error}") from error
    if missing or unexpected:
        raise ValueError(f"{weights} does not match its config: missing {sorted(missing)}, "
                         f"unexpected {sorted(unexpected)}")
    return model


def _article(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeiou" else "a"
