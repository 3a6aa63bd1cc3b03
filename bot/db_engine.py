"""Engines for SQLite files and PostgreSQL servers, and the checks before one is used.

`create_db_engine` accepts any SQLAlchemy URL; for SQLite it turns on WAL, a busy
timeout and foreign keys on every connection, and refuses a read-only file, a
directory or a file that is not a SQLite database with a clear `StorageError`
before anything is written; with `must_exist` (commands that only read) a missing
file is refused instead of created (`check_database` is that check alone).
A server database (PostgreSQL) gets a bounded pool (`PoolOptions`: at most
`size + max_overflow` connections per process, a checkout waits `timeout_s`), a
check at checkout (a connection the server dropped is replaced, not handed out:
`bot.db_pool`), a connect timeout and UTC as the session time zone; a server that
cannot be reached is a `StorageError` naming the URL with its credentials masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from bot.db_errors import reason as _reason
from bot.db_pool import server_options, watch_checkouts
from bot.db_sqlite import check_sqlite_file as _check_sqlite_file
from bot.db_sqlite import sqlite_begin as _sqlite_begin
from bot.db_sqlite import sqlite_begin_read as _sqlite_begin_read
from bot.db_sqlite import sqlite_path
from bot.db_sqlite import sqlite_pragmas as _sqlite_pragmas
from bot.errors import ConfigError, StorageError
from bot.logs import redact_text

__all__ = ["PoolOptions", "check_database", "create_db_engine", "ping", "shown_url"]


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """Connections one process may hold to a server database (ignored for SQLite).

    At most `size + max_overflow` connections are open at once; a caller that finds
    them all busy waits `timeout_s`, then gets a `StorageError`. The server's own
    limit (PostgreSQL's `max_connections`, 100 by default) must cover every worker's
    `size + max_overflow`.
    """

    size: int = 5
    max_overflow: int = 5
    timeout_s: float = 10.0
    connect_timeout_s: float = 5.0
    #: Connections older than this are replaced (servers and proxies drop idle ones).
    recycle_s: int = 1800

    @property
    def most(self) -> int:
        """The most connections open at once."""
        return self.size + self.max_overflow


def check_database(url: str, *, connect_timeout_s: float = 5.0) -> None:
    """Raise `StorageError` unless `url` names an existing SQLite database file or a
    server database that answers (one connection, opened and closed), and
    `ConfigError` if it is not a database URL."""
    try:
        path = sqlite_path(url)
        backend = make_url(url).get_backend_name()
    except (SQLAlchemyError, ValueError):
        raise ConfigError(
            f"database.url = {redact_text(repr(url))}: not a database URL, "
            "e.g. sqlite:///data/bot.db"
        ) from None
    if path is not None:
        _check_sqlite_file(path, must_exist=True)
    elif backend != "sqlite":
        engine = create_db_engine(
            url, pool=PoolOptions(size=1, max_overflow=0, connect_timeout_s=connect_timeout_s)
        )
        try:
            ping(engine)
        finally:
            engine.dispose()


def ping(engine: Engine) -> None:
    """One round trip to the database; `StorageError` ("cannot reach ...") if it fails."""
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except SQLAlchemyError as exc:
        where = shown_url(engine)
        raise StorageError(f"cannot reach the database {where}: {_reason(exc)}") from None


def shown_url(engine: Engine) -> str:
    """The engine's URL as it may be shown to people: password and tokens masked."""
    return redact_text(engine.url.render_as_string(hide_password=True))


def create_db_engine(
    url: str,
    *,
    busy_timeout_ms: int = 5000,
    echo: bool = False,
    read_only: bool = False,
    must_exist: bool = False,
    pool: PoolOptions | None = None,
) -> Engine:
    """An engine for `url`; SQLite files get WAL mode and sane pragmas on every connection,
    server databases the bounded, checked pool of `pool` (see the module doc).

    `read_only` engines refuse writes (SQLite: PRAGMA query_only; PostgreSQL:
    read-only transactions) and SQLite's begin deferred transactions, for readers
    beside the single writer (`Database.read`, the export). `must_exist` refuses a
    SQLite file that is not there (commands that only read must not leave an empty
    database behind a mistyped path). A bad URL is a `ConfigError` whose message
    masks the URL's credentials.
    """
    shown = redact_text(repr(url))
    try:
        parsed = make_url(url)
    except (SQLAlchemyError, ValueError):
        raise ConfigError(
            f"database.url = {shown}: not a database URL, e.g. sqlite:///data/bot.db"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        # The driver we ship (psycopg 3): SQLAlchemy's default for a bare postgresql://
        # is psycopg2, and postgres:// (as many hosts hand it out) it does not know.
        parsed = parsed.set(drivername="postgresql+psycopg")
        url = parsed.render_as_string(hide_password=False)
    path = sqlite_path(url)
    if path is not None:
        _check_sqlite_file(path, must_exist=must_exist)
    kwargs: dict[str, Any] = {"echo": echo}
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": busy_timeout_ms / 1000}
    else:
        kwargs.update(server_options(parsed, pool or PoolOptions()))
    try:
        engine = create_engine(url, **kwargs)
    except ImportError as exc:
        raise StorageError(
            f"database.url = {shown}: its driver is not installed ({redact_text(str(exc))})"
        ) from None
    except (SQLAlchemyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"database.url = {shown}: cannot create an engine ({redact_text(str(exc))})"
        ) from None
    watch_checkouts(engine)  # psycopg: a dropped connection is never handed out
    if backend == "postgresql" and read_only:
        # Every transaction on it begins READ ONLY (psycopg sends it with BEGIN; no
        # extra round trip), so a stray write is refused as on SQLite's reader.
        engine = engine.execution_options(postgresql_readonly=True)
    if backend == "sqlite":
        in_memory = parsed.database in (None, "", ":memory:")
        event.listen(
            engine,
            "connect",
            _sqlite_pragmas(
                busy_timeout_ms, wal=not in_memory and not read_only, query_only=read_only
            ),
        )
        # pysqlite's own transaction handling breaks SAVEPOINT and begins lazily, so a
        # read-then-write transaction can fail with SQLITE_BUSY without waiting; we
        # begin ourselves, IMMEDIATE, so writers queue on the busy timeout instead.
        event.listen(engine, "begin", _sqlite_begin_read if read_only else _sqlite_begin)
    return engine
