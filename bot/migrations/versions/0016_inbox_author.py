"""inbox author: who wrote a plain message in a private chat, read without parsing

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01

A burst from one person (ten messages in five seconds) is answered as one turn. The
turn of an earlier message asks whether its author has a later message still waiting
in the same chat, and that question is answered from this column (beside the chat
and status already indexed), in every worker, without parsing any payload.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable with no default: a plain ADD COLUMN on both dialects, no table rebuild.
    op.add_column("inbox_events", sa.Column("author", sa.String(length=256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inbox_events") as batch_op:
        batch_op.drop_column("author")
