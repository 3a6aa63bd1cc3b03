"""The copy's progress record, kept in the target itself.

One table, `bot_dbcopy_progress`, created by the copy (not by a migration: it is
bookkeeping of one copy, dropped once the copy is verified). Row `*` names the
source (`bot.dbcopy.endpoints.identity`: file path or server and database, no
credentials) and the migration it was at; one row per copied table holds the
primary key of the last row copied and how many rows were. Each batch of rows is
inserted in the same transaction that moves its table's row forward, so after a
kill -9 (or a lost connection) the record says exactly what the target holds, and
a rerun continues from there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from bot.dbcopy.schema import PROGRESS_TABLE

__all__ = ["Progress", "TableState", "progress_table"]

_meta = sa.MetaData()
progress_table = sa.Table(
    PROGRESS_TABLE,
    _meta,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("source", sa.Text, nullable=True),
    sa.Column("revision", sa.String(64), nullable=True),
    sa.Column("last_key", sa.Text, nullable=True),
    sa.Column("rows", sa.BigInteger, nullable=False, default=0),
    #: rows (copying) | copied | linked (self-links set) | done (verified)
    sa.Column("state", sa.String(16), nullable=False),
)

_HEADER = "*"
#: Rows named so hold an index dropped for the load (its definition in `source`).
INDEX_PREFIX = "index:"


@dataclass(frozen=True, slots=True)
class TableState:
    """Where one table's copy stands."""

    last_key: tuple[Any, ...] | None
    rows: int
    state: str


@dataclass(frozen=True, slots=True)
class Progress:
    """The record as found: its source and revision, and each table's state."""

    source: str
    revision: str
    state: str
    tables: dict[str, TableState]
    #: Secondary indexes dropped for the load (name -> CREATE INDEX statement), to be
    #: created again once the rows are in (bot/dbcopy/indexes.py).
    indexes: dict[str, str]


def exists(conn: Connection) -> bool:
    """Whether the target holds a progress record (an unfinished copy)."""
    return sa.inspect(conn).has_table(PROGRESS_TABLE)


def read(conn: Connection) -> Progress | None:
    """The record, or None when there is none (or it has no header)."""
    if not exists(conn):
        return None
    rows = list(conn.execute(sa.select(progress_table)))
    header = next((r for r in rows if r.name == _HEADER), None)
    if header is None:
        return None
    tables = {
        r.name: TableState(
            tuple(json.loads(r.last_key)) if r.last_key is not None else None,
            int(r.rows),
            str(r.state),
        )
        for r in rows
        if r.name != _HEADER and not r.name.startswith(INDEX_PREFIX)
    }
    indexes = {
        r.name.removeprefix(INDEX_PREFIX): str(r.source)
        for r in rows
        if r.name.startswith(INDEX_PREFIX)
    }
    return Progress(str(header.source), str(header.revision), str(header.state), tables, indexes)


def save_index(conn: Connection, name: str, definition: str) -> None:
    """Remember an index about to be dropped (same transaction as the DROP)."""
    row = _row(INDEX_PREFIX + name, definition)
    row["state"] = "dropped"
    conn.execute(sa.insert(progress_table), [row])


def forget_index(conn: Connection, name: str) -> None:
    """The index exists again (same transaction as its CREATE INDEX)."""
    conn.execute(sa.delete(progress_table).where(progress_table.c.name == INDEX_PREFIX + name))


def start(conn: Connection, source: str, revision: str, tables: list[str]) -> None:
    """Create the record for a new copy: every table at its start."""
    progress_table.create(conn, checkfirst=True)
    conn.execute(sa.delete(progress_table))
    conn.execute(
        sa.insert(progress_table),
        [_row(_HEADER, source, revision)] + [_row(t) for t in tables],
    )


def _row(name: str, source: str | None = None, revision: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "source": source,
        "revision": revision,
        "last_key": None,
        "rows": 0,
        "state": "rows",
    }


def add_tables(conn: Connection, tables: list[str]) -> None:
    """Rows for tables the record lacks (none in practice: the plan is the same)."""
    if tables:
        conn.execute(sa.insert(progress_table), [_row(t) for t in tables])


def advance(conn: Connection, table: str, last_key: tuple[Any, ...], rows: int) -> None:
    """Record a batch: called in the transaction that inserted it."""
    conn.execute(
        sa.update(progress_table)
        .where(progress_table.c.name == table)
        .values(last_key=json.dumps(list(last_key)), rows=progress_table.c.rows + rows)
    )


def set_state(conn: Connection, table: str, state: str) -> None:
    """Move a table (or `*`, the whole copy) to `state`."""
    conn.execute(
        sa.update(progress_table).where(progress_table.c.name == table).values(state=state)
    )


def set_copy_state(conn: Connection, state: str) -> None:
    set_state(conn, _HEADER, state)


def drop(conn: Connection) -> None:
    """Remove the record: the copy is complete and verified."""
    progress_table.drop(conn, checkfirst=True)
