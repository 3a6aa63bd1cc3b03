"""groups: channel state shared by every worker (budget, cooldowns, bot chain)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01

One row per group channel (platform, channel, thread) that the groups layer has
decided for (bot/groups/store.py): the bot-to-bot chain, the last minute's replies
counted per second, each persona's last unprompted reply (JSON text, the same in
both dialects), and when the row was last written.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "group_channels",
        sa.Column("channel_key", sa.String(length=255), nullable=False),
        sa.Column("bot_chain", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("replies", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("unprompted", sa.Text(), nullable=False, server_default="{}"),
        sa.Column("updated_at", sa.Float(precision=53), nullable=False),
        sa.PrimaryKeyConstraint("channel_key"),
    )
    op.create_index("ix_group_channels_updated_at", "group_channels", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_group_channels_updated_at", table_name="group_channels")
    op.drop_table("group_channels")
