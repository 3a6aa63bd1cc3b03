"""safety: crisis hits, disclosures and blocked replies; the moderators' queue

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "safety_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("platform_user_id", sa.String(length=256), nullable=False),
        sa.Column("persona_id", sa.String(length=64), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=True),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("check_name", sa.String(length=32), nullable=False),
        sa.Column("verdict", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column("pause_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("alert_status", sa.String(length=16), nullable=False),
        sa.Column("alert_reason", sa.String(length=512), nullable=True),
        sa.Column("reviewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reviewed_by", sa.String(length=256), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("safety_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_safety_events_created_at"), ["created_at"])
        batch_op.create_index(
            "ix_safety_events_queue", ["check_name", "reviewed_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_safety_events_person", ["user_id", "persona_id", "check_name"], unique=False
        )


def downgrade() -> None:
    op.drop_table("safety_events")
