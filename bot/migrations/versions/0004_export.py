"""export: moderator flags on messages, and an index to find regenerated replies

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24

`flagged_at`/`flag_reason` let a moderator keep a reply out of training data without
deleting it from the ledger. The index on `reply_to_id` lets the export find, for
each reply, whether a later reply answered the same message (a regeneration).
Both steps are plain ALTER TABLE ADD COLUMN / CREATE INDEX in SQLite: no table is
rebuilt, so the memory part's FTS triggers on `messages` stay in place.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("flagged_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("flag_reason", sa.String(length=512), nullable=True))
        batch_op.create_index(batch_op.f("ix_messages_reply_to_id"), ["reply_to_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_messages_reply_to_id"))
        batch_op.drop_column("flag_reason")
        batch_op.drop_column("flagged_at")
