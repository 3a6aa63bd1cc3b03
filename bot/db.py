"""Database engine creation and migrations.

`create_db_engine` accepts any SQLAlchemy URL; for SQLite it turns on WAL, a busy
timeout and foreign keys on every connection, and refuses a read-only file with a
clear `StorageError` before anything is written. `upgrade` applies the Alembic
migrations shipped in `bot/migrations/` (the same thing `bot db upgrade` runs).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from bot.errors import StorageError

__all__ = [
    "Database",
    "create_db_engine",
    "current_revision",
    "head_revision",
    "sqlite_path",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

T = TypeVar("T")


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL, or None for other databases and `:memory:`."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.database.startswith("file:"):  # a SQLite URI: its options are SQLite's business
        return None
    return Path(parsed.database)


def _check_sqlite_file(path: Path) -> None:
    # Fail before SQLite does: its own message ("attempt to write a readonly database")
    # arrives only at the first write, possibly mid-turn, and does not name the file.
    parent = path.parent if str(path.parent) else Path()
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise StorageError(f"database file {path} is not writable (check its permissions)")
        if not os.access(parent, os.W_OK):
            raise StorageError(
                f"database directory {parent} is not writable: SQLite needs it for the WAL "
                "and journal files next to the database"
            )
        return
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create database directory {parent}: {exc.strerror}") from exc
    if not os.access(parent, os.W_OK):
        raise StorageError(f"cannot create database {path}: directory {parent} is not writable")


def create_db_engine(url: str, *, busy_timeout_ms: int = 5000, echo: bool = False) -> Engine:
    """An engine for `url`; SQLite files get WAL mode and sane pragmas on every connection."""
    try:
        parsed = make_url(url)
    except SQLAlchemyError as exc:
        raise StorageError(f"database.url = {url!r}: not a valid SQLAlchemy URL ({exc})") from exc
    path = sqlite_path(url)
    if path is not None:
        _check_sqlite_file(path)
    kwargs: dict[str, Any] = {"echo": echo}
    if parsed.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": busy_timeout_ms / 1000}
    try:
        engine = create_engine(url, **kwargs)
    except (SQLAlchemyError, ImportError) as exc:
        raise StorageError(f"database.url = {url!r}: cannot create an engine ({exc})") from exc
    if parsed.get_backend_name() == "sqlite":
        in_memory = parsed.database in (None, "", ":memory:")
        event.listen(engine, "connect", _sqlite_pragmas(busy_timeout_ms, wal=not in_memory))
    return engine


def _sqlite_pragmas(busy_timeout_ms: int, *, wal: bool) -> Any:
    def on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        cur = dbapi_conn.cursor()
        try:
            if wal:
                cur.execute("PRAGMA journal_mode=WAL")
            # NORMAL is durable across application crashes in WAL mode and much faster
            # than FULL; only an OS crash can lose the last transactions.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        finally:
            cur.close()

    return on_connect


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    """The newest migration shipped with this version of the code."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at (None for an empty database)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to `revision`; raise `StorageError` with the reason on failure."""
    cfg = _alembic_config()
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except OperationalError as exc:
        raise StorageError(f"cannot migrate the database: {_sqlite_reason(exc)}") from exc


def _sqlite_reason(exc: OperationalError) -> str:
    text = str(exc.orig) if exc.orig is not None else str(exc)
    if "locked" in text:
        return f"{text} (another process holds a write lock; is a second bot running on this file?)"
    if "readonly" in text or "read-only" in text:
        return f"{text} (the file or its directory is read-only)"
    return text


class Database:
    """An engine plus the thread its blocking work runs on, so callers can `await` it.

    SQLite takes one writer at a time, so its work runs on a single dedicated thread
    (which also keeps statements of one conversation in order); other databases get a
    small pool. Every call runs in its own transaction; SQLAlchemy errors come out as
    `StorageError` with a reason a person can act on.
    """

    def __init__(self, engine: Engine, *, workers: int | None = None) -> None:
        self.engine = engine
        if workers is None:
            workers = 1 if engine.dialect.name == "sqlite" else 8
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bot-db")

    @classmethod
    def open(cls, url: str, *, busy_timeout_ms: int = 5000, migrate: bool = True) -> Database:
        """Create the engine and apply migrations (blocking: call before the loop is busy)."""
        engine = create_db_engine(url, busy_timeout_ms=busy_timeout_ms)
        if migrate:
            upgrade(engine)
        return cls(engine)

    async def run(self, work: Callable[[Connection], T]) -> T:
        """Run `work(connection)` in a transaction on the database thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._in_transaction, work)

    def _in_transaction(self, work: Callable[[Connection], T]) -> T:
        try:
            with self.engine.begin() as conn:
                return work(conn)
        except OperationalError as exc:
            raise StorageError(f"database error: {_sqlite_reason(exc)}") from exc
        except SQLAlchemyError as exc:
            raise StorageError(f"database error: {exc}") from exc

    async def aclose(self) -> None:
        """Finish queued work, then close every connection."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._executor.shutdown, True)
        self.engine.dispose()
