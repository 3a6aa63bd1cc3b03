"""Reading and writing rows in primary-key batches, on either dialect.

Rows are read raw (lightweight columns with no SQLAlchemy type, so no result
processing: the driver's own values) in primary-key order. On PostgreSQL a text key
column is ordered `COLLATE "C"` (byte order of UTF-8), which is SQLite's BINARY
order: both sides of a copy list the rows in the same order, which the verifier
relies on. Writes go through PostgreSQL's COPY (text format, psycopg's dumpers) or,
for SQLite, an executemany of the reflected table's INSERT.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from bot.dbcopy.schema import Kind, TablePlan
from bot.dbcopy.values import BadValue, Convert, converter
from bot.errors import StorageError

__all__ = ["batches", "convert_rows", "read_batch", "write_rows"]

Row = tuple[Any, ...]


def _light(plan: TablePlan) -> sa.TableClause:
    return sa.table(plan.name, *(sa.column(n) for n in plan.names))


def _order(plan: TablePlan, table: sa.TableClause, dialect: str) -> list[sa.ColumnElement[Any]]:
    out: list[sa.ColumnElement[Any]] = []
    for name in plan.key:
        col: sa.ColumnElement[Any] = table.c[name]
        if dialect == "postgresql" and plan.column(name).kind is Kind.TEXT:
            col = col.collate("C")
        out.append(col)
    return out


def read_batch(
    conn: Connection, plan: TablePlan, after: Sequence[Any] | None, limit: int
) -> list[Row]:
    """Up to `limit` raw rows with a key greater than `after` (None: from the start),
    in key order; the columns are `plan.names`."""
    table = _light(plan)
    dialect = conn.dialect.name
    query = sa.select(*(table.c[n] for n in plan.names))
    if plan.key:
        order = _order(plan, table, dialect)
        if after is not None:
            if len(order) == 1:
                query = query.where(order[0] > sa.bindparam("k0", after[0]))
            else:
                params: list[sa.BindParameter[Any]] = [
                    sa.bindparam(f"k{i}", v) for i, v in enumerate(after)
                ]
                query = query.where(sa.tuple_(*order) > sa.tuple_(*params))
        query = query.order_by(*order).limit(limit)
    elif after is not None:  # no key: one batch holds the whole table
        return []
    return [tuple(r) for r in conn.execute(query)]


def batches(
    conn: Connection, plan: TablePlan, after: Sequence[Any] | None, size: int
) -> Iterator[list[Row]]:
    """Every raw row after `after`, in key order, `size` at a time (a table without a
    primary key comes as one batch)."""
    while True:
        rows = read_batch(conn, plan, after, size)
        if not rows:
            return
        yield rows
        if not plan.key or len(rows) < size:
            return
        after = key_of(plan, rows[-1])


def key_of(plan: TablePlan, row: Row) -> tuple[Any, ...]:
    """The primary key of a row (columns in `plan.names` order)."""
    names = plan.names
    return tuple(row[names.index(k)] for k in plan.key)


def converters(
    plan: TablePlan, *, to_postgres: bool = False, replace_nul: bool = False
) -> list[Convert]:
    """One canonical-value function per column of the plan."""
    return [
        converter(c.kind, to_postgres=to_postgres, replace_nul=replace_nul) for c in plan.columns
    ]


def convert_rows(plan: TablePlan, rows: Sequence[Row], funcs: Sequence[Convert]) -> list[Row]:
    """Raw rows to canonical rows; a value its column cannot hold is a `StorageError`
    naming the table, the row's key and the column (never the value: it may be
    someone's private text)."""
    out = []
    for row in rows:
        try:
            out.append(tuple(None if v is None else f(v) for f, v in zip(funcs, row, strict=True)))
        except BadValue:
            for col, f, v in zip(plan.columns, funcs, row, strict=True):
                if v is None:
                    continue
                try:
                    f(v)
                except BadValue as exc:
                    key = ", ".join(
                        f"{k}={v!r}" for k, v in zip(plan.key, key_of(plan, row), strict=True)
                    )
                    raise StorageError(
                        f"{plan.name} row {key or '(no key)'}, column {col.name}: {exc}"
                    ) from None
            raise
    return out


def unlink(plan: TablePlan, rows: list[Row]) -> list[Row]:
    """Rows with each self-link that points at a later row set to NULL (the rows it
    points at are not there yet; `links` sets them once the table is copied)."""
    if not plan.links:
        return rows
    names = plan.names
    key = names.index(plan.key[0])
    cols = [names.index(n) for n in plan.links]
    out = []
    for row in rows:
        if any(row[i] is not None and row[i] > row[key] for i in cols):
            values = list(row)
            for i in cols:
                if values[i] is not None and values[i] > row[key]:
                    values[i] = None
            out.append(tuple(values))
        else:
            out.append(row)
    return out


def forward_links(
    conn: Connection, plan: TablePlan, column: str, after: int | None, limit: int
) -> list[tuple[int, int]]:
    """(key, value) of source rows whose `column` points at a later row, by key."""
    table = _light(plan)
    key = table.c[plan.key[0]]
    link = table.c[column]
    query = sa.select(key, link).where(link > key)
    if after is not None:
        query = query.where(key > sa.bindparam("after", after))
    rows = conn.execute(query.order_by(key).limit(limit))
    return [(int(k), int(v)) for k, v in rows]


def set_links(conn: Connection, plan: TablePlan, column: str, pairs: list[tuple[int, int]]) -> None:
    """Set `column` of target rows by key."""
    table = _light(plan)
    key = table.c[plan.key[0]]
    conn.execute(
        sa.update(table)
        .where(key == sa.bindparam("_key"))
        .values({column: sa.bindparam("_value")}),
        [{"_key": k, "_value": v} for k, v in pairs],
    )


def write_rows(conn: Connection, plan: TablePlan, rows: list[Row]) -> None:
    """Insert canonical rows into the target table."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        _copy_pg(conn, plan, rows)
        return
    names = plan.names
    conn.execute(plan.target.insert(), [dict(zip(names, row, strict=True)) for row in rows])


def _copy_pg(conn: Connection, plan: TablePlan, rows: list[Row]) -> None:
    import psycopg
    from psycopg import sql

    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(plan.name), sql.SQL(", ").join(sql.Identifier(n) for n in plan.names)
    )
    raw: Any = conn.connection.dbapi_connection
    try:
        with raw.cursor() as cur, cur.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
    except psycopg.errors.IntegrityError as exc:  # the driver's own, raw: as SQLAlchemy's
        raise sa.exc.IntegrityError(f"COPY {plan.name}", None, exc) from None
    except psycopg.Error as exc:
        raise sa.exc.DBAPIError(f"COPY {plan.name}", None, exc) from None
