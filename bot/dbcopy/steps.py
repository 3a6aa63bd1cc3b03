"""The steps of a copy, table by table (bot/dbcopy/copy.py runs them in order).

Each step commits in small transactions and can be interrupted anywhere: the
row step moves the progress record in the transaction of each batch; the links,
sequences and vectors steps are idempotent and simply run again.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from bot.dbcopy import progress
from bot.dbcopy.rows import (
    batches,
    convert_rows,
    converters,
    forward_links,
    key_of,
    set_links,
    unlink,
    write_rows,
)
from bot.dbcopy.schema import Plan, TablePlan
from bot.dbcopy.values import converter
from bot.errors import StorageError

__all__ = ["backfill", "copy_links", "copy_table", "first_line", "reset_sequences"]

#: Where memory's PostgreSQL backend provides `backfill_vectors(conn) -> int`.
BACKFILL_MODULES = ("bot.memory.pg_search",)

Say = Callable[[str], None]


def _resume_key(table: TablePlan, last: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    if last is None:
        return None
    return tuple(
        converter(table.column(k).kind)(v) if v is not None else None
        for k, v in zip(table.key, last, strict=True)
    )


def copy_table(
    src: Connection,
    dst: Connection,
    table: TablePlan,
    state: progress.TableState,
    batch_size: int,
    rate: float | None,
    say: Say,
    *,
    replace_nul: bool = False,
) -> int:
    copied = state.rows
    if state.state != "rows":
        return copied
    funcs = converters(table, to_postgres=dst.dialect.name == "postgresql", replace_nul=replace_nul)
    started = time.monotonic()
    done_here = 0
    last_said = started
    total = int(
        src.execute(sa.select(sa.func.count()).select_from(sa.table(table.name))).scalar_one()
    )
    for raw in batches(src, table, _resume_key(table, state.last_key), batch_size):
        rows = unlink(table, convert_rows(table, raw, funcs))
        try:
            with dst.begin():
                write_rows(dst, table, rows)
                if table.key:
                    progress.advance(dst, table.name, _jsonable(key_of(table, rows[-1])), len(rows))
        except IntegrityError as exc:
            raise StorageError(_integrity(table, exc)) from None
        except SQLAlchemyError as exc:
            raise StorageError(f"--to: writing {table.name}: {first_line(exc)}") from None
        copied += len(rows)
        done_here += len(rows)
        now = time.monotonic()
        if rate:
            ahead = done_here / rate - (now - started)
            if ahead > 0:
                time.sleep(ahead)
        if now - last_said >= 2:
            say(f"{table.name}: {copied} of {total} rows")
            last_said = now
    with dst.begin():
        if not table.key:
            progress.advance(dst, table.name, (), copied)
        progress.set_state(dst, table.name, "copied" if table.links else "linked")
    if copied:
        say(f"{table.name}: {copied} rows copied")
    return copied


def copy_links(src: Connection, dst: Connection, table: TablePlan, batch_size: int) -> None:
    # Idempotent (it sets values to what the source holds), so after a kill it simply
    # runs again from the start.
    for column in table.links:
        after: int | None = None
        while True:
            pairs = forward_links(src, table, column, after, batch_size)
            if not pairs:
                break
            with dst.begin():
                set_links(dst, table, column, pairs)
            after = pairs[-1][0]
    with dst.begin():
        progress.set_state(dst, table.name, "linked")


def reset_sequences(dst: Connection, plan: Plan) -> None:
    # The copy inserted explicit ids; the next row the bot inserts must not reuse one.
    with dst.begin():
        for table in plan.tables:
            if not table.int_key:
                continue
            key = table.key[0]
            seq = dst.execute(
                sa.text("SELECT pg_get_serial_sequence(:t, :c)"),
                {"t": f'"{table.name}"', "c": key},
            ).scalar()
            if seq is None:
                continue
            highest = f'SELECT MAX("{key}") FROM "{table.name}"'
            dst.execute(
                sa.text(f"SELECT setval(:s, COALESCE(({highest}), 0) + 1, false)"), {"s": seq}
            )


def backfill(dst: Connection, say: Say) -> int | None:
    for module_name in BACKFILL_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        backfill = getattr(module, "backfill_vectors", None)
        if backfill is None:
            continue
        with dst.begin():
            filled = int(backfill(dst))
        say(f"vectors: {filled} filled from the stored embeddings")
        return filled
    return None


def _jsonable(key: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(v if v is None or isinstance(v, int | str) else str(v) for v in key)


def first_line(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig) if orig is not None else str(exc)
    return " ".join(text.strip().split("\n")[0].split())


def _integrity(table: TablePlan, exc: IntegrityError) -> str:
    reason = first_line(exc)
    if "foreign key" in reason.lower():
        detail = getattr(getattr(exc.orig, "diag", None), "message_detail", None)
        if detail:  # "Key (message_id)=(999999) is not present in table "messages"."
            reason = f"{reason}: {' '.join(str(detail).split())}"
        # The source did not enforce it when the row was written (SQLite enforces
        # foreign keys only when asked, per connection).
        return (
            f"--to: a row of {table.name} refers to a row the source does not have "
            f"({reason}): fix or remove it in the source, then run the command again"
        )
    return (
        f"--to: inserting into {table.name} broke a constraint ({reason}): is something "
        "else writing to the target?"
    )
