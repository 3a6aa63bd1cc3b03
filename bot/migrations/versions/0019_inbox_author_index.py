"""inbox author index: the burst question reads a chat's rows of one author in order

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01

`Inbox.newer_from` asks, for every turn of a private chat, for the author's event just
before this one and whether one is waiting after it. Without an index that starts with
(platform, chat, author) the database read every stored event of the chat and sorted
them, so a long-lived DM cost more each turn. With this one both reads are a seek.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_inbox_events_platform_chat_author_id",
        "inbox_events",
        ["platform", "chat", "author", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_inbox_events_platform_chat_author_id", table_name="inbox_events")
