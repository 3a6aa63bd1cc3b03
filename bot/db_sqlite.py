"""SQLite's side of `bot.db`: refusing a file that will not work before anything is
written, and the pragmas and BEGIN of every connection (WAL, busy timeout, foreign
keys, secure delete; IMMEDIATE for writers, deferred for readers)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import make_url

from bot.errors import StorageError

__all__ = [
    "SQLITE_HEADER",
    "check_sqlite_file",
    "check_sqlite_header",
    "sqlite_begin",
    "sqlite_begin_read",
    "sqlite_path",
    "sqlite_pragmas",
]


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for other databases and `:memory:`."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.database.startswith("file:"):  # a SQLite URI: its options are SQLite's business
        return None
    return Path(parsed.database)


#: The first bytes of every SQLite database file (an empty file is a new database).
SQLITE_HEADER = b"SQLite format 3\x00"


def check_sqlite_file(path: Path, *, must_exist: bool = False) -> None:
    """`StorageError` unless `path` can be a working SQLite database (created if missing
    unless `must_exist`): a directory, a read-only file or folder, or a file that is
    not SQLite is refused before anything is written."""
    # Fail before SQLite does: its own message ("attempt to write a readonly database")
    # arrives only at the first write, possibly mid-turn, and does not name the file.
    parent = path.parent if str(path.parent) else Path()
    if path.is_dir():
        raise StorageError(f"database {path} is a directory, not a SQLite file")
    if path.exists() and not path.is_file():
        raise StorageError(f"database {path} is not a regular file")
    if path.exists():
        check_sqlite_header(path)
        if not os.access(path, os.R_OK | os.W_OK):
            raise StorageError(f"database file {path} is not writable (check its permissions)")
        if not os.access(parent, os.W_OK):
            raise StorageError(
                f"database directory {parent} is not writable: SQLite needs it for the WAL "
                "and journal files next to the database"
            )
        return
    if must_exist:
        raise StorageError(
            f"database file {path} does not exist: check --db or database.url "
            "(`bot db upgrade` creates a new one)"
        )
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create database directory {parent}: {exc.strerror}") from exc
    if not os.access(parent, os.W_OK):
        raise StorageError(f"cannot create database {path}: directory {parent} is not writable")


def check_sqlite_header(path: Path) -> None:
    """`StorageError` unless the existing file at `path` opens as a SQLite database."""
    # Never open the file ourselves: closing any descriptor of it drops every POSIX lock
    # this process holds on the file (a running writer's too), and another process's
    # reader may then checkpoint and delete the WAL under us, losing what we write
    # next. SQLite's own VFS shares descriptors per file and so keeps the locks.
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            conn.execute("PRAGMA schema_version").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if "not a database" in str(exc):
            raise StorageError(f"database file {path} is not a SQLite database") from None
        raise StorageError(f"database file {path}: cannot read it ({exc})") from None


def sqlite_begin(conn: Connection) -> None:
    """Begin a writer's transaction: IMMEDIATE, so writers queue on the busy timeout."""
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def sqlite_begin_read(conn: Connection) -> None:
    """Begin a reader's transaction: deferred, a snapshot that never blocks the writer."""
    # A reader takes a plain (deferred) transaction: a WAL snapshot that neither
    # blocks the writer nor waits for it.
    conn.exec_driver_sql("BEGIN")


def sqlite_pragmas(busy_timeout_ms: int, *, wal: bool, query_only: bool = False) -> Any:
    """The `connect` listener that sets every connection's pragmas."""

    def on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (see sqlite_begin)
        cur = dbapi_conn.cursor()
        try:
            if wal:
                cur.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across application crashes in WAL mode and much faster
            # than FULL; only an OS crash can lose the last transactions.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            # Deleted content is overwritten with zeros, freelist pages included: what a
            # person asked us to forget must not linger in unused parts of the file.
            cur.execute("PRAGMA secure_delete=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            if query_only:
                cur.execute("PRAGMA query_only=ON")
        finally:
            cur.close()

    return on_connect
