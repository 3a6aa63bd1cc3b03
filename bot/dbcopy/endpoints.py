"""Opening the two ends of a copy, with one-line errors a person can act on.

`--from` must be a bot database at the newest migration this code ships (an older
one is refused with the command that upgrades it: the copy never changes its
source); `--to` may be empty, at any older revision of ours (it is migrated first),
or at head. Credentials never appear in a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from bot.db import create_db_engine, current_revision, head_revision, sqlite_path
from bot.db_migrate import alembic_config
from bot.errors import StorageError, UsageError
from bot.logs import redact_text

__all__ = ["Endpoint", "open_endpoint", "same_database", "shown"]

_EXAMPLE = "e.g. sqlite:///data/bot.db or postgresql+psycopg://user:pass@host/dbname"

#: Seconds to wait for a PostgreSQL server before saying it is unreachable.
CONNECT_TIMEOUT_S = 10


@dataclass
class Endpoint:
    """An open end of the copy: its engine, what to call it, its migration."""

    option: str  # "--from" or "--to"
    engine: Engine
    shown: str
    revision: str | None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def dispose(self) -> None:
        self.engine.dispose()


def shown(url: str | URL) -> str:
    """The URL as messages show it: password masked."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
        return redact_text(parsed.render_as_string(hide_password=True))
    except (ArgumentError, ValueError):
        return redact_text(repr(url))


def _parse(option: str, url: str) -> URL:
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise UsageError(
            f"{option} {redact_text(repr(url))}: not a database URL, {_EXAMPLE}"
        ) from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise UsageError(
            f"{option} {shown(parsed)}: {parsed.get_backend_name()} is not supported "
            "(SQLite or PostgreSQL)"
        )
    if parsed.get_backend_name() == "sqlite" and sqlite_path(url) is None:
        raise UsageError(f"{option} {shown(parsed)}: name a SQLite file, not an in-memory database")
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":  # SQLAlchemy's default driver is psycopg2
            parsed = parsed.set(drivername="postgresql+psycopg")
        if "connect_timeout" not in parsed.query:
            parsed = parsed.update_query_dict({"connect_timeout": str(CONNECT_TIMEOUT_S)})
    return parsed


def _identity(parsed: URL) -> str:
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_path(parsed.render_as_string(hide_password=False))
        assert path is not None
        return f"sqlite:{path.resolve()}"
    host = parsed.host or parsed.query.get("host") or "localhost"
    return f"postgresql:{host}:{parsed.port or 5432}/{parsed.database}"


def same_database(first: str, second: str) -> bool:
    """Whether two URLs name the same database (same file, or same server and name)."""
    return _identity(_parse("--from", first)) == _identity(_parse("--to", second))


def identity(url: str) -> str:
    """A stable name of the database `url` points at (no credentials): what a progress
    record remembers as its source."""
    return _identity(_parse("--from", url))


def open_endpoint(option: str, url: str, *, must_exist: bool, read_only: bool = False) -> Endpoint:
    """Open `url`, connect once, and read its migration; one-line errors.

    `read_only`: a SQLite file is opened so that no write can happen (query_only)
    and reads take no write lock (a running bot beside it is not blocked)."""
    parsed = _parse(option, url)
    name = shown(url)
    try:
        engine = create_db_engine(
            parsed.render_as_string(hide_password=False), must_exist=must_exist, read_only=read_only
        )
    except StorageError as exc:
        raise StorageError(f"{option}: {exc}") from None
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = _reason(exc)
        hint = ""
        if "does not exist" in reason and option == "--to":
            hint = ": create it first (CREATE DATABASE, then CREATE EXTENSION vector, pg_trgm)"
        raise StorageError(f"{option} {name}: cannot connect ({reason}){hint}") from None
    try:
        revision = current_revision(engine)
    except StorageError as exc:
        engine.dispose()
        raise StorageError(f"{option} {name}: {exc}") from None
    return Endpoint(option, engine, name, revision)


def _reason(exc: SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    message = str(orig) if orig is not None else str(exc)
    line = " ".join(message.strip().split("\n")[0].split())
    return redact_text(line) or type(exc).__name__


def check_source_revision(source: Endpoint, hint_url: str) -> None:
    """The source must be a bot database at head: the copy reads it as the code's
    newest schema and never migrates it."""
    head = head_revision()
    if source.revision == head:
        return
    if source.revision is None:
        raise StorageError(
            f"--from {source.shown}: not a bot database (no migrations applied); nothing to copy"
        )
    if _known(source.revision):
        raise StorageError(
            f"--from {source.shown} is at migration {source.revision}, this bot's newest is "
            f"{head}: upgrade it first with `{_upgrade_command(hint_url)}`, then copy"
        )
    raise StorageError(
        f"--from {source.shown} is at migration {source.revision}, which this version of "
        "the bot does not know (a newer bot wrote it): copy with that version"
    )


def check_target_revision(target: Endpoint) -> None:
    """The target may be empty, at an older revision of ours, or at head; not at a
    revision this code does not know."""
    if target.revision is None or _known(target.revision):
        return
    raise StorageError(
        f"--to {target.shown} is at migration {target.revision}, which this version of "
        "the bot does not know: copy with the version that wrote it"
    )


def _known(revision: str) -> bool:
    script = ScriptDirectory.from_config(alembic_config())
    try:
        return script.get_revision(revision) is not None
    except Exception:  # alembic's ResolutionError / CommandError: not ours
        return False


def _upgrade_command(url: str) -> str:
    path = sqlite_path(url)
    if path is not None:
        return f"bot db upgrade --db {Path(path)}"
    return "BOT_DATABASE__URL=... bot db upgrade"
