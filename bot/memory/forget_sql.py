"""Forget's SQL: written once in SQLite's dialect, with the few fragments that
PostgreSQL spells differently swapped in on PostgreSQL, and its id-list helpers."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, TextClause, text


def _sql(conn: Connection, sql: str) -> TextClause:
    """`sql`, written in SQLite's dialect, with the few fragments that PostgreSQL
    spells differently swapped in when `conn` is PostgreSQL."""
    if conn.dialect.name == "postgresql":
        for sqlite_form, pg_form in _PG_FORMS:
            sql = sql.replace(sqlite_form, pg_form)
    return text(sql)


def _ids(conn: Connection, sql: str, **params: Any) -> list[int]:
    return [int(i) for i in conn.execute(_sql(conn, sql), params).scalars()]


def _json(ids: Iterable[int]) -> str:
    return json.dumps(sorted(set(ids)))


_IN = "(SELECT value FROM json_each(:ids))"
_TYPE_NAME = (
    "(CASE WHEN error_type GLOB '*[^A-Za-z0-9_.]*' OR length(error_type) > 64 "
    "THEN 'error' ELSE error_type END)"
)
_PERSONA_NULL = ":persona IS NULL"
_PG_FORMS = [
    *(
        (f"(SELECT value FROM json_each(:{p}))",
         f"(SELECT CAST(value AS bigint) FROM jsonb_array_elements_text(CAST(:{p} AS jsonb)))")
        for p in ("ids", "m", "f", "s")
    ),
    ("json_each(f.source_ids) j WHERE f.user_id = :uid AND j.value IN",
     "jsonb_array_elements_text(CAST(f.source_ids AS jsonb)) AS j(value) "
     "WHERE f.user_id = :uid AND CAST(j.value AS bigint) IN"),
    ("error_type GLOB '*[^A-Za-z0-9_.]*'", "error_type ~ '[^A-Za-z0-9_.]'"),
    ("json_each(:forms) f WHERE instr(inbox_events.payload, f.value) > 0",
     "jsonb_array_elements_text(CAST(:forms AS jsonb)) AS f(value) "
     "WHERE strpos(inbox_events.payload, f.value) > 0"),
    (_PERSONA_NULL, "CAST(:persona AS VARCHAR) IS NULL"),
]  # fmt: skip
