"""Plain SQL against a test database by URL (SQLite file or PostgreSQL), for tests
that look at rows directly instead of through a store."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

__all__ = ["execute", "rows"]


def rows(url: str, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """Every row `sql` returns, as plain tuples (`:name` parameters)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params or {})]
    finally:
        engine.dispose()


def execute(url: str, sql: str, params: dict[str, Any] | None = None) -> int:
    """Run one statement in its own committed transaction; returns the rows it changed."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            return int(conn.execute(text(sql), params or {}).rowcount)
    finally:
        engine.dispose()
