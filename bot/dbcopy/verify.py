"""Verification: per table, both sides' row counts and a checksum of every row.

What a checksum covers: every row of the table, in primary-key order, and every
column the copy copies (all of the source's columns but derived ones: generated
columns and PostgreSQL's vector/tsvector indexes). Each value is first normalised
to its canonical form (bot/dbcopy/values.py: datetimes as UTC to the microsecond,
booleans as true/false whatever the storage, floats as the exact bits of the
double, blobs as their bytes, text as UTF-8), then tagged with its type and
length-prefixed; the table's checksum is SHA-256 over those rows. (After a
`--replace-nul` copy, text is compared with NUL read as U+FFFD on both sides.) Equal checksums
mean the two tables hold the same rows with the same values, to the bit. The
comparison walks both sides in key order at once, so a difference is reported by
the key of the first row that differs and the columns that differ (never the
values: they may be private).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from bot.dbcopy.rows import batches, convert_rows, converters, key_of
from bot.dbcopy.schema import Plan, TablePlan
from bot.dbcopy.values import encode_row

__all__ = ["TableCheck", "verify"]

#: Differences reported per table (the count of all of them is kept).
SHOWN_DIFFERENCES = 3


@dataclass
class TableCheck:
    """One table compared: counts, checksums and the first differences."""

    name: str
    source_rows: int = 0
    target_rows: int = 0
    source_sha256: str = ""
    target_sha256: str = ""
    differences: int = 0
    shown: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.differences == 0
            and self.source_rows == self.target_rows
            and self.source_sha256 == self.target_sha256
        )

    def line(self) -> str:
        """One line for people: the table, its counts, its checksum, and verdict."""
        digest = self.source_sha256[:16]
        if self.ok:
            return f"{self.name}: {self.source_rows} rows, sha256 {digest}…, ok"
        head = (
            f"{self.name}: MISMATCH source {self.source_rows} rows sha256 {digest}…, "
            f"target {self.target_rows} rows sha256 {self.target_sha256[:16]}…; "
            f"{self.differences} row(s) differ"
        )
        return head + (": " + "; ".join(self.shown) if self.shown else "")


def _count(conn: Connection, name: str) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(sa.table(name))).scalar_one())


def _stream(
    conn: Connection, plan: TablePlan, size: int, replace_nul: bool
) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...]]]:
    funcs = converters(plan, replace_nul=replace_nul)
    for raw in batches(conn, plan, None, size):
        for row in convert_rows(plan, raw, funcs):
            yield key_of(plan, row), row


def _describe(plan: TablePlan, key: tuple[Any, ...]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in zip(plan.key, key, strict=True))


def check_table(
    source: Connection,
    target: Connection,
    plan: TablePlan,
    size: int,
    *,
    replace_nul: bool = False,
) -> TableCheck:
    """Compare one table's rows on both sides (see the module docstring)."""
    check = TableCheck(plan.name)
    check.source_rows = _count(source, plan.name)
    check.target_rows = _count(target, plan.name)
    hashes = (hashlib.sha256(), hashlib.sha256())
    src = _stream(source, plan, size, replace_nul)
    dst = _stream(target, plan, size, replace_nul)
    a, b = next(src, None), next(dst, None)

    def note(text: str) -> None:
        check.differences += 1
        if len(check.shown) < SHOWN_DIFFERENCES:
            check.shown.append(text)

    while a is not None or b is not None:
        if a is not None and (b is None or (plan.key and a[0] < b[0])):
            hashes[0].update(encode_row(a[1]))
            note(f"{_describe(plan, a[0])} missing in the target")
            a = next(src, None)
            continue
        if b is not None and (a is None or (plan.key and b[0] < a[0])):
            hashes[1].update(encode_row(b[1]))
            note(f"{_describe(plan, b[0])} only in the target")
            b = next(dst, None)
            continue
        assert a is not None and b is not None
        left, right = encode_row(a[1]), encode_row(b[1])
        hashes[0].update(left)
        hashes[1].update(right)
        if left != right:
            cols = [
                c.name
                for c, x, y in zip(plan.columns, a[1], b[1], strict=True)
                if encode_row([x]) != encode_row([y])
            ]
            note(f"{_describe(plan, a[0])} differs in {', '.join(cols)}")
        a, b = next(src, None), next(dst, None)
    check.source_sha256 = hashes[0].hexdigest()
    check.target_sha256 = hashes[1].hexdigest()
    return check


def verify(
    source: Connection,
    target: Connection,
    plan: Plan,
    *,
    batch_size: int = 5000,
    on_table: Callable[[TableCheck], None] | None = None,
    replace_nul: bool = False,
) -> list[TableCheck]:
    """Check every table of the plan; `on_table` hears each result as it comes.
    `replace_nul`: compare text with NUL read as U+FFFD (a `--replace-nul` copy)."""
    out = []
    for table in plan.tables:
        result = check_table(source, target, table, batch_size, replace_nul=replace_nul)
        out.append(result)
        if on_table is not None:
            on_table(result)
    return out
