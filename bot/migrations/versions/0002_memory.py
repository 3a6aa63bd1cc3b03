"""memory: facts, summaries, embeddings and the FTS5 search indexes

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

The FTS5 tables are external-content indexes over `messages.text` and `facts.text`,
each twice: `porter unicode61` for words in alphabetic scripts and `trigram` for
Chinese and Japanese (and substrings). Triggers keep them in sync with every
insert, update and delete, so no writer has to remember them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TOKENIZERS = {"": "porter unicode61 remove_diacritics 2", "_tri": "trigram"}


def _indexed(row: str) -> str:
    # The text plus a token naming its scope (person and conversation): a search ANDs
    # the token into its MATCH, so FTS5 intersects with the scope before ranking
    # instead of ranking everyone's rows and filtering afterwards.
    return (
        f"{row}.text || ' zq' || coalesce({row}.user_id, 0) || 'x' || {row}.conversation_id || 'zq'"
    )


def _fts_sql(source: str) -> list[str]:
    statements = []
    for suffix, tokenizer in _TOKENIZERS.items():
        fts = f"{source}_fts{suffix}"
        statements += [
            f"CREATE VIRTUAL TABLE {fts} USING fts5(text, content='{source}', "
            f"content_rowid='id', tokenize='{tokenizer}')",
            f"INSERT INTO {fts}(rowid, text) SELECT id, {_indexed(source)} FROM {source}",
            f"CREATE TRIGGER {fts}_ai AFTER INSERT ON {source} BEGIN "
            f"INSERT INTO {fts}(rowid, text) VALUES (new.id, {_indexed('new')}); END",
            f"CREATE TRIGGER {fts}_ad AFTER DELETE ON {source} BEGIN "
            f"INSERT INTO {fts}({fts}, rowid, text) VALUES ('delete', old.id, {_indexed('old')}); "
            "END",
            f"CREATE TRIGGER {fts}_au AFTER UPDATE OF text, user_id, conversation_id ON {source} "
            f"BEGIN INSERT INTO {fts}({fts}, rowid, text) "
            f"VALUES ('delete', old.id, {_indexed('old')}); "
            f"INSERT INTO {fts}(rowid, text) VALUES (new.id, {_indexed('new')}); END",
        ]
    return statements


def upgrade() -> None:
    op.create_table(
        "facts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("persona_id", sa.String(length=64), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("is_direct", sa.Boolean(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("source_ids", sa.Text(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("importance", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("superseded_by", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"]),
        sa.ForeignKeyConstraint(["superseded_by"], ["facts.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("facts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_facts_conversation_id"), ["conversation_id"], unique=False
        )
        batch_op.create_index("ix_facts_user_persona", ["user_id", "persona_id"], unique=False)

    op.create_table(
        "summaries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("persona_id", sa.String(length=64), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("first_message_id", sa.Integer(), nullable=False),
        sa.Column("last_message_id", sa.Integer(), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("summaries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_summaries_conversation_user", ["conversation_id", "user_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_summaries_user_id"), ["user_id"], unique=False)

    op.create_table(
        "embeddings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("kind", "item_id", "model"),
    )
    with op.batch_alter_table("embeddings", schema=None) as batch_op:
        batch_op.create_index(
            "ix_embeddings_user_model_id", ["user_id", "model", "id"], unique=False
        )

    if op.get_bind().dialect.name == "sqlite":
        for source in ("messages", "facts"):
            for statement in _fts_sql(source):
                op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for source in ("facts", "messages"):
            for suffix in _TOKENIZERS:
                fts = f"{source}_fts{suffix}"
                for trigger in ("ai", "ad", "au"):
                    op.execute(f"DROP TRIGGER IF EXISTS {fts}_{trigger}")
                op.execute(f"DROP TABLE IF EXISTS {fts}")
    with op.batch_alter_table("embeddings", schema=None) as batch_op:
        batch_op.drop_index("ix_embeddings_user_model_id")
    op.drop_table("embeddings")
    with op.batch_alter_table("summaries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_summaries_user_id"))
        batch_op.drop_index("ix_summaries_conversation_user")
    op.drop_table("summaries")
    with op.batch_alter_table("facts", schema=None) as batch_op:
        batch_op.drop_index("ix_facts_user_persona")
        batch_op.drop_index(batch_op.f("ix_facts_conversation_id"))
    op.drop_table("facts")
