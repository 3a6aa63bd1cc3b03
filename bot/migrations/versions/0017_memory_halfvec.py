"""memory on PostgreSQL: the HNSW indexes over half-precision vectors

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-01

PostgreSQL only; on SQLite this revision does nothing. Migration 0011's partial
HNSW indexes (cosine, one per common dimension) were over `embedding` cast to
`vector(dim)`; these are over the cast to `halfvec(dim)` (pgvector >= 0.7): half
the pages for the scan to visit (at 100k 384-dim vectors 112 MB against 195 MB), a
scoped nearest-neighbour query about 40% faster (docs/benchmarks.md). The column
keeps full precision: the index only orders, and the similarity is computed from
the full vector (bot/memory/pg_search.py).

Building the new indexes reads every stored vector: minutes at 100k vectors, with
writes to `embeddings` waiting. A large deployment can build them first, without
blocking writes (`CREATE INDEX CONCURRENTLY ix_embeddings_hnsw_half_384 ...`, the
statement below): the migration keeps an index of that name.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DIMENSIONS = (384, 512, 768, 1024)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for dim in _DIMENSIONS:
        op.execute(f"DROP INDEX IF EXISTS ix_embeddings_hnsw_{dim}")
        op.execute(
            f"CREATE INDEX IF NOT EXISTS ix_embeddings_hnsw_half_{dim} ON embeddings USING hnsw "
            f"((CAST(embedding AS halfvec({dim}))) halfvec_cosine_ops) WHERE dim = {dim}"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for dim in _DIMENSIONS:
        op.execute(f"DROP INDEX IF EXISTS ix_embeddings_hnsw_half_{dim}")
        op.execute(
            f"CREATE INDEX ix_embeddings_hnsw_{dim} ON embeddings USING hnsw "
            f"((CAST(embedding AS vector({dim}))) vector_cosine_ops) WHERE dim = {dim}"
        )
