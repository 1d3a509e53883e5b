"""One-line notes to the learner: what facegen is about to build or do, and why."""

from __future__ import annotations

import os
from pathlib import Path


def shown(path) -> str:
    """`path` as a learner should read it: relative to the repository root (`artifacts/cpu/vqvae`) when it lies
    inside it, else unchanged. Printed notes and committed notebook outputs then name no machine-specific folder
    (such as the temporary clone a course run used)."""
    from facegen.config import REPO_ROOT

    path = Path(path)
    try:
        return str(path.resolve().relative_to(REPO_ROOT.resolve()))
    except ValueError:
        return str(path)


def note(message: str) -> None:
    """Print `[facegen] message` at once (before a progress bar starts), so a notebook shows what is happening.
    Absolute paths inside the repository are printed relative to its root (see `shown`)."""
    from facegen.config import REPO_ROOT

    for root in {str(REPO_ROOT), str(REPO_ROOT.resolve())}:
        message = message.replace(root.rstrip(os.sep) + os.sep, "")
    print(f"[facegen] {message}", flush=True)
