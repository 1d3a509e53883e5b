"""facegen's own error types (kept free of heavy imports: the CLI catches them before torch is loaded)."""

from __future__ import annotations


class FacegenError(Exception):
    """A problem facegen explains in one line (the CLI prints it as `facegen: error: ...`, no traceback)."""


class NoSpaceError(FacegenError, OSError):
    """The disk filled up during an atomic save; the previous version of the file or folder is intact."""


class ArtifactBusyError(FacegenError, RuntimeError):
    """Another facegen process holds the artifact folder's lock."""


class ArtifactError(FacegenError, ValueError):
    """A saved model or dataset folder cannot be used as it is (unreadable, stale, or not facegen's); the message
    names it and says what to do."""
