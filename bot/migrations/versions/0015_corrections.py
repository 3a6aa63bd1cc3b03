"""corrections: a moderator's corrected reply, kept on the reply's own row

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01

The dashboard's conversations page lets a moderator write what the persona should
have said. The text is kept on the reply it corrects (`corrected_text`, by whom and
when), not in a table of its own: `bot export` reads it in its one query and makes
a DPO pair of it (source `correction`), and a forget that deletes the reply deletes
the correction with it, so no byte of it stays behind.

And an index on conversations (last_message_at, id): the dashboard lists them by
latest activity, a page at a time, without sorting them all.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN (nullable, no default) on both dialects: no table rebuild, so
    # the FTS5 triggers on messages stay as they are.
    op.add_column("messages", sa.Column("corrected_text", sa.Text(), nullable=True))
    op.add_column("messages", sa.Column("corrected_by", sa.String(length=64), nullable=True))
    op.add_column(
        "messages", sa.Column("corrected_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index(
        "ix_conversations_last_message_at_id", "conversations", ["last_message_at", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_conversations_last_message_at_id", table_name="conversations")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("corrected_at")
        batch_op.drop_column("corrected_by")
        batch_op.drop_column("corrected_text")
