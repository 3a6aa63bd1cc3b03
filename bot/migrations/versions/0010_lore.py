"""lore: the timed effects of lore entries per conversation (sticky, cooldown)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

One row per (conversation, persona, entry) whose timers run: the conversation length
(in messages) until which the entry stays, and until which it cannot fire again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "lore_timers",
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("persona_id", sa.String(length=64), nullable=False),
        sa.Column("entry_key", sa.String(length=200), nullable=False),
        sa.Column("sticky_until", sa.Integer(), nullable=False),
        sa.Column("cooldown_until", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("conversation_id", "persona_id", "entry_key"),
    )


def downgrade() -> None:
    op.drop_table("lore_timers")
