"""moderation event: the inbox event whose command did a moderator action

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-01

A command's reply is stored with its event's done mark; a crash between the
command's own writes and that commit runs the command again on restart. For `/ban`,
`/mute` and the like that doubled the audit and moved a timed mute's end by the
downtime. The action now records its event, unique, and a second run for the same
event finds the first one instead of acting again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: a plain ADD COLUMN on both dialects; NULLs never collide.
    op.add_column("moderation_actions", sa.Column("event_id", sa.Integer(), nullable=True))
    op.create_index("ux_moderation_actions_event", "moderation_actions", ["event_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_moderation_actions_event", table_name="moderation_actions")
    with op.batch_alter_table("moderation_actions") as batch_op:
        batch_op.drop_column("event_id")
