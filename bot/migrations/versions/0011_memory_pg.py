"""memory on PostgreSQL: full-text columns, trigram and HNSW vector indexes

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01

PostgreSQL only (SQLite's FTS5 indexes are migration 0002's); on SQLite this
revision does nothing. See bot/memory/pg_search.py for why each piece is what it is.

- `messages.search_words`, `facts.search_words`: generated `tsvector` columns
  (configuration `english`, as SQLite's porter), each with a GIN index.
- GIN `gin_trgm_ops` indexes on `messages.text` and `facts.text` (pg_trgm) for
  Chinese and Japanese.
- `embeddings.embedding`: a pgvector column beside the portable float32 blob
  `vector` (kept, so `bot db copy` copies rows as they are; `backfill_vectors`
  fills this one), with a partial HNSW index (cosine) per common dimension.

Needs the `vector` and `pg_trgm` extensions (created here if the role may; a
managed PostgreSQL may need them enabled by its administrator first).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CONFIG = "english"
_DIMENSIONS = (384, 512, 768, 1024)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for table in ("messages", "facts"):
        op.execute(
            f"ALTER TABLE {table} ADD COLUMN search_words tsvector GENERATED ALWAYS AS "
            f"(to_tsvector('{_CONFIG}', coalesce(text, ''))) STORED"
        )
        op.execute(f"CREATE INDEX ix_{table}_search_words ON {table} USING gin (search_words)")
        op.execute(f"CREATE INDEX ix_{table}_text_trgm ON {table} USING gin (text gin_trgm_ops)")
    op.execute("CREATE INDEX ix_messages_user_conversation ON messages (user_id, conversation_id)")
    op.execute("ALTER TABLE embeddings ADD COLUMN embedding vector")
    op.execute("CREATE INDEX ix_embeddings_scope ON embeddings (user_id, conversation_id, model)")
    for dim in _DIMENSIONS:
        op.execute(
            f"CREATE INDEX ix_embeddings_hnsw_{dim} ON embeddings USING hnsw "
            f"((CAST(embedding AS vector({dim}))) vector_cosine_ops) WHERE dim = {dim}"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for dim in _DIMENSIONS:
        op.execute(f"DROP INDEX IF EXISTS ix_embeddings_hnsw_{dim}")
    op.execute("DROP INDEX IF EXISTS ix_embeddings_scope")
    op.execute("ALTER TABLE embeddings DROP COLUMN IF EXISTS embedding")
    op.execute("DROP INDEX IF EXISTS ix_messages_user_conversation")
    for table in ("messages", "facts"):
        op.execute(f"DROP INDEX IF EXISTS ix_{table}_text_trgm")
        op.execute(f"DROP INDEX IF EXISTS ix_{table}_search_words")
        op.execute(f"ALTER TABLE {table} DROP COLUMN IF EXISTS search_words")
