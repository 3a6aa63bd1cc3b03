"""Alembic environment: runs on the connection `bot.db.upgrade` hands over."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import bot.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from bot.memory.tables import include_object  # also registers the memory tables

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "bot.db.upgrade passes a connection; run migrations through `bot db upgrade`"
        )
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite needs batch mode to alter tables
        compare_type=True,
        include_object=include_object,  # the FTS5 tables are raw SQL, not models
    )
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
