"""What `bot db copy` copies: the tables of both databases, reflected, and the plan
that pairs them.

A table is copied when it holds the bot's data: every table the migrations create,
except Alembic's own `alembic_version` (the target is migrated by itself), SQLite's
internal tables, the FTS5 indexes over messages and facts and their shadow tables
(derived: the triggers of migration 0002 fill them as rows are inserted), the
postings tables of PostgreSQL's word search (derived the same way, migration
0021), and the copy's own progress table. Columns are paired by name. A column is *derived* when a
database computes it from others (a generated column) or it is a PostgreSQL-only
index of data the row already holds (`vector`, `halfvec`, `tsvector`): derived
columns are neither copied nor compared; `backfill_vectors` fills the vectors after
the copy. Every other column of the source must exist in the target, or the copy is
refused before it starts (nothing is dropped silently).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection

from bot.errors import StorageError
from bot.memory.tables import FTS_TABLES, PG_ONLY_COLUMNS, PG_POSTINGS

with contextlib.suppress(ImportError):  # reflect pgvector's columns as VECTOR, not NullType
    import pgvector.sqlalchemy  # noqa: F401

__all__ = ["Column", "Kind", "Plan", "TablePlan", "build_plan", "reflect"]

#: The copy's own bookkeeping in the target (bot/dbcopy/progress.py).
PROGRESS_TABLE = "bot_dbcopy_progress"

#: Tables never copied, by exact name.
_SKIPPED = frozenset({"alembic_version", PROGRESS_TABLE})

#: Column types that PostgreSQL derives from data the row already holds.
_DERIVED_TYPES = frozenset({"vector", "halfvec", "sparsevec", "tsvector"})


class Kind(Enum):
    """How a value is normalised across dialects (bot/dbcopy/values.py)."""

    INT = "int"
    FLOAT = "float"
    DECIMAL = "decimal"
    BOOL = "bool"
    DATETIME = "datetime"
    DATE = "date"
    BYTES = "bytes"
    TEXT = "text"
    OTHER = "other"


def kind_of(type_: sa.types.TypeEngine[Any]) -> Kind:
    """The normalisation a column type gets (generic SQLAlchemy types, any dialect)."""
    if isinstance(type_, sa.Boolean):
        return Kind.BOOL
    if isinstance(type_, sa.DateTime):
        return Kind.DATETIME
    if isinstance(type_, sa.Date):
        return Kind.DATE
    if isinstance(type_, sa.Integer):
        return Kind.INT
    if isinstance(type_, sa.Float):
        return Kind.FLOAT
    if isinstance(type_, sa.Numeric):
        return Kind.DECIMAL
    if isinstance(type_, sa.LargeBinary):  # BLOB, bytea
        return Kind.BYTES
    if isinstance(type_, sa.String):
        return Kind.TEXT
    return Kind.OTHER


def _derived(column: sa.Column[Any]) -> bool:
    if column.computed is not None:
        return True
    table = column.table.name if column.table is not None else ""
    if column.name in PG_ONLY_COLUMNS.get(table, ()):  # memory declares its own
        return True
    name = getattr(column.type, "__visit_name__", "") or ""
    return str(name).lower() in _DERIVED_TYPES or type(column.type).__name__.lower() in (
        _DERIVED_TYPES
    )


def skipped_table(name: str) -> bool:
    """Tables `bot db copy` leaves alone (see the module docstring)."""
    return (
        name in _SKIPPED
        or name in PG_POSTINGS.values()
        or name.startswith("sqlite_")
        or any(name == fts or name.startswith(f"{fts}_") for fts in FTS_TABLES)
    )


def reflect(conn: Connection) -> sa.MetaData:
    """Every table of the database (views are not tables and are not copied)."""
    meta = sa.MetaData()
    try:
        with warnings.catch_warnings():
            # Types this SQLAlchemy does not know (an extension's) reflect as NullType.
            warnings.simplefilter("ignore", sa.exc.SAWarning)
            meta.reflect(conn, only=lambda name, _meta: not skipped_table(name))
    except sa.exc.SQLAlchemyError as exc:
        raise StorageError(f"cannot read the database's tables: {exc}") from None
    return meta


@dataclass(frozen=True, slots=True)
class Column:
    """A column copied and compared: its name, normalisation and nullability."""

    name: str
    kind: Kind
    nullable: bool


@dataclass(frozen=True, slots=True)
class TablePlan:
    """One table to copy: the shared columns, the primary key, the self-links."""

    name: str
    columns: tuple[Column, ...]
    #: Primary key column names, in key order (empty: the table has none).
    key: tuple[str, ...]
    #: Columns referencing this table's own single-column integer key (messages.reply_to_id,
    #: facts.superseded_by): a value pointing at a later row is set in a second pass.
    links: tuple[str, ...]
    source: sa.Table
    target: sa.Table

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def int_key(self) -> bool:
        """A single integer primary key (sequences, self-links, id ranges)."""
        return len(self.key) == 1 and self.column(self.key[0]).kind is Kind.INT

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class Plan:
    """The tables to copy, parents before children (foreign keys)."""

    tables: tuple[TablePlan, ...]


def build_plan(source: sa.MetaData, target: sa.MetaData) -> Plan:
    """Pair the source's tables with the target's; raise `StorageError` naming the
    table and column when the source holds data the target has no place for."""
    problems: list[str] = []
    wanted = {n for n in source.tables if not skipped_table(n)}
    missing = sorted(n for n in wanted if n not in target.tables)
    problems.extend(f"table {n} is not in the target" for n in missing)
    ordered = [t for t in _sorted(target) if t.name in wanted]
    plans = []
    for target_table in ordered:
        source_table = source.tables[target_table.name]
        plan = _table_plan(source_table, target_table, problems)
        if plan is not None:
            plans.append(plan)
    if problems:
        raise StorageError(
            "the target's schema cannot hold the source's data: "
            + "; ".join(problems[:5])
            + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
        )
    return Plan(tuple(plans))


def _sorted(meta: sa.MetaData) -> list[sa.Table]:
    # Parents first; a self-reference does not order (see TablePlan.links).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sa.exc.SAWarning)  # a cycle: none in this schema
        return list(meta.sorted_tables)


def _table_plan(source: sa.Table, target: sa.Table, problems: list[str]) -> TablePlan | None:
    columns: list[Column] = []
    for col in source.columns:
        if _derived(col):
            continue
        if col.name not in target.columns:
            problems.append(f"column {source.name}.{col.name} is not in the target")
            continue
        other = target.columns[col.name]
        if _derived(other):
            continue
        kind = kind_of(other.type)
        if kind is Kind.OTHER:
            kind = kind_of(col.type)
        columns.append(Column(col.name, kind, bool(other.nullable)))
    for col in target.columns:
        if col.name in source.columns or _derived(col):
            continue
        if not col.nullable and col.server_default is None:
            problems.append(
                f"column {target.name}.{col.name} of the target has no source column, "
                "no default and is NOT NULL"
            )
    key = tuple(c.name for c in target.primary_key.columns)
    if any(k not in {c.name for c in columns} for k in key):
        problems.append(f"table {target.name}: its primary key is not copied")
        return None
    plan = TablePlan(target.name, tuple(columns), key, (), source, target)
    links: list[str] = []
    if plan.int_key:
        for fk in target.foreign_key_constraints:
            if fk.referred_table.name != target.name or len(fk.elements) != 1:
                continue
            name = fk.elements[0].parent.name
            if name in plan.names and plan.column(name).nullable:
                links.append(name)
    return TablePlan(target.name, tuple(columns), key, tuple(links), source, target)
