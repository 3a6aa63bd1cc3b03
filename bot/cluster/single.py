"""`SingleProcessLock`: one `bot run` per SQLite file; a second is refused.

SQLite has no way for two processes to share the work safely: both would poll
Telegram (and take turns at 409 Conflict), both would run recovery on start and so
answer the other's in-flight turns again, and both would run the scheduler. So a
second `bot run` on the same file is refused at start with a clear error, before
it touches anything. The lock is `flock` on a file next to the database
(`bot.db.run.lock`), never on the database itself (closing any descriptor of the
database would drop SQLite's own POSIX locks); the kernel frees it when the
holder exits, kill -9 included. Other commands (`bot inbox list`, `bot db …`) do
not take it. PostgreSQL is how several workers share one database.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from bot.errors import StorageError

__all__ = ["SingleProcessLock"]


class SingleProcessLock:
    """Hold `<database>.run.lock` for as long as this `bot run` lives."""

    def __init__(self, database: Path) -> None:
        self.path = database.with_name(database.name + ".run.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise `StorageError` naming the process that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            database = self.path.with_name(self.path.name.removesuffix(".run.lock"))
            raise StorageError(
                f"another `bot run` (pid {holder}) is serving {database}: SQLite serves one "
                "process at a time; stop that one first, or use PostgreSQL "
                "(database.url = postgresql+psycopg://...) to run several workers"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        self._fd = fd

    def release(self) -> None:
        """Let the lock go (exiting does too)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
