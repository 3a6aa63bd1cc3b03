"""The Alembic migrations shipped in `bot/migrations/`: where the code's head is,
where a database is, and `upgrade` (what `bot db upgrade` runs). On PostgreSQL the
upgrade holds an advisory lock, so workers that start together migrate one after
another."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from bot.db_engine import shown_url
from bot.db_errors import reason as _reason
from bot.db_errors import storage_error as _storage_error
from bot.db_errors import unreachable as _unreachable
from bot.errors import StorageError

__all__ = [
    "MIGRATIONS_DIR",
    "MIGRATION_LOCK_KEY",
    "alembic_config",
    "current_revision",
    "head_revision",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

#: Key of the advisory lock `upgrade` holds on PostgreSQL ("bot-migr" in ASCII).
MIGRATION_LOCK_KEY = 0x626F742D6D696772


def alembic_config() -> Config:
    """Alembic's configuration for the migrations shipped with this code."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    """The newest migration shipped with this version of the code."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at (None for an empty database)."""
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        raise _storage_error(exc) from exc


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to `revision`; raise `StorageError` with the reason on failure."""
    cfg = alembic_config()
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Workers starting together: the first migrates, the others wait here
                # and then find the database at head (released at commit).
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    except SQLAlchemyError as exc:  # locked, read-only, "file is not a database", ...
        what = "reach" if _unreachable(exc) else "migrate"
        raise StorageError(
            f"cannot {what} the database {shown_url(engine)}: {_reason(exc)}"
        ) from exc
