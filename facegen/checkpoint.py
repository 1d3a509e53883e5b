"""Training checkpoints that can resume exactly: model, optimizer, scheduler, step, history and every RNG state.

Writes are atomic: into a uniquely named temporary file or folder next to the target, then renamed over it. An
interrupted or failed save (a kill, a full disk) never destroys the previous version, and its temporary files are
removed (a killed run's leftovers at the next save). `artifact_lock` keeps two facegen processes from writing one
artifacts folder at the same time.
"""

from __future__ import annotations

import errno
import json
import os
import random
import secrets
import shutil
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facegen.errors import ArtifactBusyError, FacegenError, NoSpaceError  # noqa: F401 (re-exported)


def _disk_full(error: BaseException) -> bool:
    """Does `error` say the disk is full? OSError(ENOSPC/EDQUOT), safetensors' "os error 28", torch's zip writer's
    "unexpected pos" (its C++ writer reports a short write that way)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return "No space left on device" in text or "os error 28" in text or "unexpected pos" in text


def _no_space(error: BaseException, path: Path) -> NoSpaceError:
    full = NoSpaceError(f"no space left on device while writing {path}; nothing was replaced (free some space and "
                        "run it again)")
    full.errno = errno.ENOSPC  # still an ENOSPC OSError for code that checks
    return full


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _owner_pid(name: str, prefix: str) -> int | None:
    """The pid in a temporary name `<prefix><pid>-<random>...`, or None when the name is not one of ours."""
    rest = name[len(prefix):]
    digits = rest.split("-", 1)[0].split(".", 1)[0]
    return int(digits) if name.startswith(prefix) and digits.isdigit() else None


def _remove_stale(parent: Path, name: str) -> None:
    """Remove what killed earlier saves of `parent/name` left behind: `.name.<pid>-*.tmp` files and
    `.name.tmp<pid>*` / `.name.old<pid>*` folders of processes that are gone (and the old fixed names `name.tmp`).
    A save killed between its two renames leaves no `name` but a complete `.name.old*`: that one is put back."""
    if not parent.is_dir():
        return
    for legacy in (parent / f"{name}.tmp",):
        if legacy.is_file():
            legacy.unlink(missing_ok=True)
    for path in parent.iterdir():
        for prefix in (f".{name}.tmp", f".{name}.old", f".{name}."):
            pid = _owner_pid(path.name, prefix)
            if pid is None or _pid_alive(pid):
                continue
            if prefix == f".{name}.old" and not (parent / name).exists():
                try:
                    os.replace(path, parent / name)  # the previous version, interrupted mid-swap
                    continue
                except OSError:
                    pass
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            break


@contextmanager
def atomic_file(path: Path, mode: str = "wb"):
    """Yield an open temporary file next to `path`; when the block succeeds, it replaces `path`. On any failure the
    temporary file is removed and `path` is left as it was; a full disk raises `NoSpaceError` naming `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path.parent, path.name)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a saved artifact is an ordinary file
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, Exception) and _disk_full(error):
            raise _no_space(error, path) from error
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


@contextmanager
def atomic_folder(target: Path):
    """Yield an empty temporary sibling of `target` to fill; when the block succeeds, it replaces `target` whole.

    A reader never sees half a folder, and a failure leaves the previous `target` as it was. The temporary folders
    have unique names and are removed on success and on any failure (a killed run's ones at the next save); a full
    disk raises `NoSpaceError` naming `target`."""
    target = Path(target)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(parent, target.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp{os.getpid()}-", dir=parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the saved folder is an ordinary one
    old = parent / f".{target.name}.old{os.getpid()}-{secrets.token_hex(4)}"
    try:
        try:
            yield tmp
        except Exception as error:
            if _disk_full(error):
                raise _no_space(error, target) from error
            raise
        moved = False
        if target.exists():
            os.replace(target, old)
            moved = True
        try:
            os.replace(tmp, target)
        except BaseException:
            if moved:
                os.replace(old, target)  # put the previous version back
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


_held_locks: dict[Path, list] = {}  # this process's locks: resolved folder -> [fd, depth]
_held_guard = threading.Lock()


@contextmanager
def artifact_lock(folder: Path, what: str):
    """Hold an exclusive lock on `folder` (an artifact folder, created if needed) while writing to it.

    The lock is `fcntl.flock` on `folder/.lock`, which names the holder (pid and command line); the kernel drops it
    when the process ends, however it ends. A second facegen process gets an `ArtifactBusyError` at once, saying who
    holds it. Re-entrant within one process (a CLI command and the trainer it calls may both take it)."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    with _held_guard:
        held = _held_locks.get(key)
        if held is not None:
            held[1] += 1
    if held is not None:
        try:
            yield
        finally:
            with _held_guard:
                held[1] -= 1
        return
    path = key / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(fd)
        if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        try:
            holder = path.read_text().strip() or "pid unknown"
        except OSError:
            holder = "pid unknown"
        raise ArtifactBusyError(f"{what} in {folder} is being written by another facegen process ({holder}); wait "
                                f"for it or stop it") from None
    try:
        command = " ".join(sys.argv) or sys.executable
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}: {command}\n".encode(), 0)
        with _held_guard:
            _held_locks[key] = [fd, 1]
        try:
            yield
        finally:
            with _held_guard:
                _held_locks.pop(key, None)
            os.ftruncate(fd, 0)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


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
    with atomic_file(path) as f:  # through a Python file: a full disk then raises ENOSPC, not a C++ assertion
        torch.save(payload, f)


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


RECIPE_FILE = "facegen.json"  # in a trained model's folder: {"recipe": the settings it was trained with, ...}


def write_recipe(folder: Path, recipe: dict) -> None:
    """Record in a trained model's `folder` the settings it was trained with (`config.training_recipe`)."""
    atomic_write_json(Path(folder) / RECIPE_FILE, {"recipe": recipe})


def saved_recipe(folder: Path) -> dict | None:
    """The settings the model saved in `folder` was trained with, or None when it records none (saved before facegen
    recorded them). An unreadable record is a ValueError naming the file."""
    path = Path(folder) / RECIPE_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{path} is unreadable ({type(error).__name__}: {error}); expected a JSON object with the "
                         '"recipe" its model was trained with') from None
    if not isinstance(record, dict) or not isinstance(record.get("recipe", {}), dict):
        raise ValueError(f'{path} is not a JSON object whose "recipe" is an object of settings; expected what facegen '
                         "writes beside a trained model")
    return record.get("recipe")  # None: a record from before recipes (a GPT's facegen.json holds more than this)


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
    except (json.JSONDecodeError, TypeError, ValueError) as error:  # UnicodeDecodeError is a ValueError
        raise ValueError(f"{config_file} is not {_article(what)} {what} config ({error})") from None
    try:
        missing, unexpected = load_model(model, weights, strict=False)
    except RuntimeError as error:  # shapes differ from what config.json describes
        raise ValueError(f"{weights} does not match {config_file}: {error}") from None
    except Exception as error:  # noqa: BLE001 - SafetensorError (truncated, random bytes), OSError, ...
        raise ValueError(f"{weights} is not a readable safetensors file ({error}); expected the {what}'s saved "
                         f"weights (truncated or overwritten? {how_to_make})") from None
    if missing or unexpected:
        raise ValueError(f"{weights} does not match its config: missing {sorted(missing)}, "
                         f"unexpected {sorted(unexpected)}")
    return model


def _article(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeiou" else "a"
