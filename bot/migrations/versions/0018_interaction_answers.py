"""interaction answers: a Discord slash command's defer and reply, kept until delivered

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01

Discord never resends an interaction, and its token answers for 15 minutes only. The
interaction itself is an inbox event (key `interaction:<id>`); this table keeps, per
event, whether it was deferred ("thinking…") and its reply, stored with the event's
done mark, from `generated` to `delivered` | `undeliverable` | `expired`, so that a
restart follows up with the stored reply instead of running the command again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "interaction_answers",
        sa.Column("event_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("parts_sent", sa.Integer(), nullable=False),
        sa.Column("ephemeral", sa.Boolean(), nullable=False),
        sa.Column("deferred_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["event_id"], ["inbox_events.id"]),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index(
        "ix_interaction_answers_platform_status", "interaction_answers", ["platform", "status"]
    )


def downgrade() -> None:
    op.drop_index("ix_interaction_answers_platform_status", table_name="interaction_answers")
    op.drop_table("interaction_answers")
