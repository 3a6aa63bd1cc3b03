"""Writing a dataset so that nothing half-written ever looks complete.

Files go into a staging directory next to the target (same file system, so the
final step is a rename); `manifest.json` is written last, and only then does the
staging directory take the target's name. Any error (a full disk, a vanished
directory) removes the staging directory and raises `ExportError`. A target that
exists and is not empty is refused unless `force`, and then replaced only at the
very end, after the new export is complete.

Files are written through `os.write` on a raw descriptor with our own buffer: one
system call per MiB, the sha256 and counts kept as the bytes go out, and a single
seam where tests can make the disk fill up.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypedDict

from bot.export.errors import ExportError, OutputNotEmpty

__all__ = ["DatasetWriter", "FileStats", "JsonlFile"]

_BUFFER_BYTES = 1 << 20


class FileStats(TypedDict):
    """What the manifest says about one file."""

    records: int
    bytes: int
    sha256: str


class JsonlFile:
    """One JSON Lines file: records in, compact UTF-8 lines out, hashed on the way."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records = 0
        self.bytes = 0
        self._sha = hashlib.sha256()
        self._buffer = bytearray()
        self._encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record as one line."""
        self.write_line(self._encode(record) + "\n")

    def write_line(self, line: str) -> None:
        """Append one record already encoded as a JSON line (ending in a newline)."""
        self._buffer += line.encode()
        self.records += 1
        if len(self._buffer) >= _BUFFER_BYTES:
            try:
                self._flush()
            except OSError as exc:
                raise _write_error(self.path, exc) from exc

    def _flush(self) -> None:
        assert self._fd is not None, "write after close"
        _write_all(self._fd, self._buffer)
        self._sha.update(self._buffer)
        self.bytes += len(self._buffer)
        self._buffer.clear()

    def close(self) -> FileStats:
        """Flush, fsync and close; the file's stats for the manifest."""
        if self._fd is not None:
            try:
                self._flush()
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = None
        return FileStats(records=self.records, bytes=self.bytes, sha256=self._sha.hexdigest())

    def abandon(self) -> None:
        """Close without flushing (the export failed)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


class DatasetWriter:
    """A dataset directory under construction; use as a context manager.

    `file(relpath)` opens (once) a JSONL file inside it; `commit(manifest)` closes
    the files, fills in their stats, writes `manifest.json` and moves the directory
    into place. Leaving the `with` block without committing removes everything.
    """

    def __init__(self, target: Path, *, force: bool = False) -> None:
        self.target = target
        self._force = force
        self._files: dict[str, JsonlFile] = {}
        self._staging: Path | None = None

    def __enter__(self) -> Self:
        target = self.target
        if target.exists() and not target.is_dir():
            raise ExportError(f"output {target} exists and is not a directory")
        if target.is_dir() and any(target.iterdir()) and not self._force:
            raise OutputNotEmpty(
                f"output directory {target} exists and is not empty: "
                "choose another, or pass --force to replace it"
            )
        parent = target.absolute().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self._staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=parent))
        except OSError as exc:
            raise ExportError(f"cannot write to {parent}: {exc.strerror or exc}") from exc
        return self

    def file(self, relpath: str) -> JsonlFile:
        """The JSONL file at `relpath` inside the dataset, created on first use."""
        handle = self._files.get(relpath)
        if handle is None:
            assert self._staging is not None, "use DatasetWriter as a context manager"
            path = self._staging / relpath
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                handle = JsonlFile(path)
            except OSError as exc:
                raise _write_error(path, exc) from exc
            self._files[relpath] = handle
        return handle

    def commit(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Finish every file, add their stats to `manifest["files"]`, write it, move
        the dataset into place; returns the manifest as written."""
        assert self._staging is not None, "use DatasetWriter as a context manager"
        files: dict[str, Any] = {}
        for relpath in sorted(self._files):
            handle = self._files[relpath]
            try:
                files[relpath] = dict(handle.close())
            except OSError as exc:
                raise _write_error(handle.path, exc) from exc
        manifest = {**manifest, "files": files}
        path = self._staging / "manifest.json"
        try:
            text = json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                _write_all(fd, text.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            self._move_into_place()
        except OSError as exc:
            raise _write_error(path, exc) from exc
        self._staging = None
        return manifest

    def _move_into_place(self) -> None:
        assert self._staging is not None
        target = self.target
        old: Path | None = None
        if target.is_dir() and any(target.iterdir()):
            # --force: keep the old export until the new one has its name.
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        try:
            self._staging.replace(target)
        except OSError:
            if old is not None:
                old.rename(target)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._staging is not None:  # not committed: nothing of it may stay
            for handle in self._files.values():
                handle.abandon()
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None


def _write_all(fd: int, data: bytes | bytearray) -> None:
    # os.write may write less than asked (signals, pipes): loop until all is out.
    with memoryview(data) as view:
        done = 0
        while done < len(view):
            done += os.write(fd, view[done:])


def _write_error(path: Path, exc: OSError) -> ExportError:
    if exc.errno == errno.ENOSPC:
        why = "the disk is full"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        why = "permission denied"
    else:
        why = exc.strerror or str(exc)
    return ExportError(f"cannot write {path}: {why}; the partial export was removed")
