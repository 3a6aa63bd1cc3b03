"""Secondary indexes off during the load, on PostgreSQL.

Maintaining an index row by row is the slow part of a bulk load: pgvector's HNSW
graph above all (a copy of 10,000 embeddings spent 20 s filling vectors with the
HNSW indexes in place, 7 s dropping them and building them again afterwards), and
the GIN indexes of full-text search. So a PostgreSQL target loses its secondary
indexes (not primary keys, unique indexes or any index behind a constraint: those
still guard the data) for the load, and gets them back, exactly as they were
(`pg_get_indexdef`), once the rows and vectors are in. Each drop is recorded in the
progress record in the same transaction, and each rebuild deletes its record with
it, so a kill at any point leaves every index either in place or written down.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy import Connection

from bot.dbcopy import progress

__all__ = ["drop_secondary", "rebuild"]

_SECONDARY = sa.text(
    """
    SELECT i.relname AS name, pg_get_indexdef(i.oid) AS definition
    FROM pg_index x
    JOIN pg_class i ON i.oid = x.indexrelid
    JOIN pg_class t ON t.oid = x.indrelid
    JOIN pg_namespace n ON n.oid = t.relnamespace
    WHERE n.nspname = current_schema()
      AND t.relname = ANY(:tables)
      AND NOT x.indisunique AND NOT x.indisprimary
      AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
    ORDER BY i.relname
    """
)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def drop_secondary(conn: Connection, tables: Sequence[str]) -> int:
    """Drop (and record) the secondary indexes of `tables`; in the caller's
    transaction. Returns how many."""
    if conn.dialect.name != "postgresql":
        return 0
    found = conn.execute(_SECONDARY, {"tables": list(tables)}).all()
    for name, definition in found:
        progress.save_index(conn, name, definition)
        conn.exec_driver_sql(f"DROP INDEX {_quoted(name)}")
    return len(found)


def rebuild(conn: Connection, saved: dict[str, str]) -> None:
    """Create each recorded index again, one transaction each (the connection must
    not be in a transaction)."""
    for name, definition in sorted(saved.items()):
        with conn.begin():
            exists = conn.execute(
                sa.text("SELECT to_regclass(:n) IS NOT NULL"), {"n": _quoted(name)}
            ).scalar()
            if not exists:
                # HNSW builds fast while its graph fits in memory (64 MB by default).
                conn.exec_driver_sql("SET LOCAL maintenance_work_mem = '256MB'")
                conn.exec_driver_sql(definition)
            progress.forget_index(conn, name)
