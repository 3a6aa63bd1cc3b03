"""Persona files on disk: a bounded read, and one writer at a time per persona
directory across processes (re-exported by bot/web/dashboard/persona_service.py;
the atomic write and its undo stay there).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from bot.personas.loader import MAX_FILE_BYTES

__all__ = ["locked_directory", "read_file_bytes"]


def read_file_bytes(path: Path) -> bytes | None:
    """A persona file's bytes (at most one past the loader's limit), None if absent."""
    try:
        with path.open("rb") as fh:
            return fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def locked_directory(directory: Path) -> Iterator[None]:
    """One writer at a time in a persona directory, across dashboard processes."""
    # The directory itself is locked (flock works on a directory's descriptor), so
    # no lock file is left among the personas.
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
