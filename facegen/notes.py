"""One-line notes to the learner: what facegen is about to build or do, and why."""

from __future__ import annotations


def note(message: str) -> None:
    """Print `[facegen] message` at once (before a progress bar starts), so a notebook shows what is happening."""
    print(f"[facegen] {message}", flush=True)
