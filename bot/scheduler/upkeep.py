"""Upkeep on the scheduler's clock: the nightly retention (and SQLite's planner
statistics), SQLite backups, and the extra jobs given at construction (memory
consolidation, export); a part of `Scheduler`, bot/scheduler/service.py, which owns
the state declared here.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Connection, Table, delete, select, update
from sqlmodel import SQLModel

from bot.config import SchedulerSettings
from bot.db import Database, sqlite_path
from bot.errors import ConfigError, UsageError
from bot.models import Failure, Feedback, FollowUp, Message

log = structlog.get_logger("bot.scheduler")

_t = SQLModel.metadata.tables
_followups: Table = _t[FollowUp.__tablename__]
_messages: Table = _t[Message.__tablename__]
_feedback: Table = _t[Feedback.__tablename__]
_failures: Table = _t[Failure.__tablename__]


class Upkeep:
    """Retention, backups and the extra upkeep jobs (a part of `Scheduler`)."""

    db: Database
    settings: SchedulerSettings
    upkeep: dict[str, Callable[[datetime], Awaitable[Any]]]

    async def run_upkeep(self, name: str, now: datetime) -> Any:
        """Run one upkeep job now: nightly (retention + optimize), backup, or an
        extra one given at construction (memory consolidation, export)."""
        if name == "nightly":
            deleted = await self.retention(now)
            if self.db.engine.dialect.name == "sqlite":
                # SQLite has no autovacuum daemon to refresh its planner statistics;
                # PostgreSQL's autovacuum analyzes tables as they change.
                await self.db.run(lambda c: c.exec_driver_sql("PRAGMA optimize"))
            return deleted
        if name == "backup":
            return await self.backup(now)
        job = self.upkeep.get(name)
        if job is None:
            known = ", ".join(f"upkeep:{n}" for n in ("nightly", "backup", *self.upkeep))
            raise UsageError(f"no upkeep job {name!r}; there are: {known}")
        return await job(now)

    async def retention(self, now: datetime) -> int:
        """Delete messages older than `retention_days` (summaries and exports stay)."""
        days = self.settings.retention_days
        if days is None:
            return 0
        cutoff = now - timedelta(days=days)

        def work(conn: Connection) -> int:
            old = select(_messages.c.id).where(_messages.c.created_at < cutoff)
            conn.execute(delete(_feedback).where(_feedback.c.message_id.in_(old)))
            conn.execute(
                update(_failures).where(_failures.c.message_id.in_(old)).values(message_id=None)
            )
            conn.execute(
                update(_followups)
                .where(_followups.c.source_message_id.in_(old))
                .values(source_message_id=None)
            )
            conn.execute(
                update(_messages).where(_messages.c.reply_to_id.in_(old)).values(reply_to_id=None)
            )
            result = conn.execute(delete(_messages).where(_messages.c.created_at < cutoff))
            return int(result.rowcount or 0)

        deleted = await self.db.run(work)
        log.info("upkeep.retention", deleted=deleted, cutoff=cutoff.isoformat())
        return deleted

    async def backup(self, now: datetime) -> Path:
        """A consistent copy of the SQLite file (online backup API), keeping the newest
        `backup_keep` copies. Raises `ConfigError` when there is nothing to do it with:
        no `scheduler.backup_dir`, or a database that is not a SQLite file."""
        target_dir = self.settings.backup_dir
        if target_dir is None:
            raise ConfigError("scheduler.backup_dir is not set: there is nowhere to back up to")
        source = sqlite_path(self.db.engine.url.render_as_string(hide_password=False))
        if source is None:
            raise ConfigError(
                "database.url is not a SQLite file: back it up with the database's own tools"
            )
        return await asyncio.to_thread(_backup, source, target_dir, now, self.settings.backup_keep)


def _backup(source: Path, target_dir: Path, now: datetime, keep: int) -> Path:
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{source.stem}-{now:%Y%m%d-%H%M%S}.db"
    partial = target.with_suffix(".partial")
    with sqlite3.connect(source) as src, sqlite3.connect(partial) as dst:
        src.backup(dst)
    partial.replace(target)  # a backup that exists is a complete one
    copies = sorted(target_dir.glob(f"{source.stem}-*.db"))
    for old in copies[:-keep]:
        old.unlink(missing_ok=True)
    log.info("upkeep.backup", path=str(target), kept=min(len(copies), keep))
    return target
