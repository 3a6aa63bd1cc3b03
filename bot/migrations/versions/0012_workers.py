"""workers: several `bot run` processes on one PostgreSQL database

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01

`cluster_workers`: one row per `bot run` process that joined (its name, host, pid,
when it started, when it was last seen, when it stopped or who adopted its
unfinished work after it died). Liveness itself is a PostgreSQL advisory lock the
process holds for as long as its connection lives (bot/cluster); the row is what
the lock's key points at, and what a person reads.

`inbox_events.claimed_by`: the worker that took the event (NULL: nobody yet), and
an index to find a chat's pending events in order.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cluster_workers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("host", sa.String(length=200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("adopted_by", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("cluster_workers", schema=None) as batch_op:
        batch_op.create_index("ix_cluster_workers_stopped_at", ["stopped_at"], unique=False)
    with op.batch_alter_table("inbox_events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.Integer(), nullable=True))
        batch_op.create_index(
            "ix_inbox_events_platform_chat_status_id",
            ["platform", "chat", "status", "id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("inbox_events", schema=None) as batch_op:
        batch_op.drop_index("ix_inbox_events_platform_chat_status_id")
        batch_op.drop_column("claimed_by")
    op.drop_table("cluster_workers")
