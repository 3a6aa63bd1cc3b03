"""The scheduler: proactive messages, follow-ups, and upkeep, on APScheduler 3.

Jobs live in the project's database (`apscheduler_jobs`, created by migration 0005)
so they survive restarts; `coalesce` and a misfire grace time mean a bot that was
down sends at most one late message per job, and none that is too late.

Every job is a module-level function taking the runtime's name (APScheduler stores
jobs by textual reference); it finds the running `Scheduler` in a registry and
calls its method with `now`. Those methods are what tests call, with a frozen
`now`: nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from weakref import WeakValueDictionary

import structlog
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Connection, Engine, Table, delete, select, update
from sqlmodel import SQLModel

from bot.config import SchedulerSettings
from bot.db import Database, PoolOptions, create_db_engine, sqlite_path
from bot.engine import PersonaEngine
from bot.errors import ConfigError, UsageError
from bot.messages import Outgoing, TurnKind
from bot.models import Failure, Feedback, FollowUp, Message
from bot.personas import PersonaRegistry
from bot.personas.schedule import Schedule
from bot.scheduler.policy import decide
from bot.scheduler.targets import Target, load_target, load_targets

__all__ = ["ProactiveSender", "Scheduler", "habit_trigger", "job_ids"]

log = structlog.get_logger("bot.scheduler")

_t = SQLModel.metadata.tables
_followups: Table = _t[FollowUp.__tablename__]
_messages: Table = _t[Message.__tablename__]
_feedback: Table = _t[Feedback.__tablename__]
_failures: Table = _t[Failure.__tablename__]

# The running schedulers by name, for job functions (APScheduler stores a textual
# reference to a function, not an object). Weak: a closed scheduler disappears.
_RUNNING: WeakValueDictionary[str, Scheduler] = WeakValueDictionary()


class ProactiveSender(Protocol):
    """Delivers a proactive message on one platform (an adapter's `send`)."""

    async def send(self, outgoing: Outgoing) -> list[str | None]:
        """Deliver it; raise `DeliveryError` (recorded by the adapter) on failure."""
        ...


def habit_trigger(cron: str, zone: str, jitter_minutes: int = 0) -> CronTrigger:
    """The trigger of a habit for a person in `zone` (local wall-clock times, DST-aware)."""
    trigger = CronTrigger.from_crontab(cron, timezone=zone)
    trigger.jitter = jitter_minutes * 60 or None
    return trigger


def job_ids(persona: str, habit: str, conversation_id: int) -> str:
    """The id of a person's habit job (stable, so restarts find it again)."""
    return f"habit:{persona}:{habit}:{conversation_id}"


class Scheduler:
    """Owns the APScheduler instance and the jobs' logic."""

    def __init__(
        self,
        *,
        db: Database,
        engine: PersonaEngine,
        personas: PersonaRegistry,
        settings: SchedulerSettings,
        default_zone: str,
        senders: Mapping[str, ProactiveSender],
        name: str = "default",
        upkeep: Mapping[str, Callable[[datetime], Awaitable[Any]]] | None = None,
    ) -> None:
        self.db = db
        self.engine = engine
        self.personas = personas
        self.settings = settings
        self.default_zone = default_zone
        self.senders = dict(senders)
        self.name = name
        self.upkeep = dict(upkeep or {})
        self._jobs_engine = _job_store_engine(db)
        self.aps = AsyncIOScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=self._jobs_engine)},
            job_defaults={
                "coalesce": True,
                "misfire_grace_time": settings.misfire_grace_s,
                "max_instances": 1,
            },
            timezone=UTC,
        )

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, *, paused: bool = False) -> None:
        """Start (or resume) jobs from the store and add the standing ones."""
        _RUNNING[self.name] = self
        # Must run on the loop's thread; the job store's table exists (migration 0005),
        # so this does not write.
        self.aps.start(paused=paused)
        self._standing_jobs()
        if not paused:
            await self.sync(datetime.now(UTC))

    async def stop(self) -> None:
        """Stop running jobs; jobs stay in the store for the next start."""
        if self.aps.running:
            self.aps.shutdown(wait=False)
        _RUNNING.pop(self.name, None)
        if self._jobs_engine is not self.db.engine:
            self._jobs_engine.dispose()

    def _standing_jobs(self) -> None:
        s = self.settings
        self._keep_job("sweep", sweep_job, IntervalTrigger(minutes=s.sweep_minutes), [self.name])
        if s.backup_dir is not None:
            self._keep_job(
                "upkeep:backup",
                upkeep_job,
                CronTrigger.from_crontab(s.backup_cron, timezone=UTC),
                [self.name, "backup"],
            )
        self._keep_job(
            "upkeep:nightly",
            upkeep_job,
            CronTrigger.from_crontab("15 3 * * *", timezone=UTC),
            [self.name, "nightly"],
        )
        for name in self.upkeep:
            cron = s.export_cron if name == "export" else "45 3 * * *"
            self._keep_job(
                f"upkeep:{name}",
                upkeep_job,
                CronTrigger.from_crontab(cron, timezone=UTC),
                [self.name, name],
            )

    def _keep_job(
        self, job_id: str, func: Callable[..., Any], trigger: Any, args: list[Any]
    ) -> None:
        """Add a standing job, or leave the stored one as it is when it is the same:
        re-adding would move its next run (an interval counts from when it is added),
        so every start, and every `bot schedule list`, would postpone it."""
        job = self.aps.get_job(job_id)
        if job is not None and list(job.args) == args and _same_trigger(job.trigger, trigger):
            return
        self.aps.add_job(func, trigger, args=args, id=job_id, replace_existing=True)

    # -- habits -------------------------------------------------------------------------

    async def sync(self, now: datetime) -> int:
        """Make the store hold exactly one job per (persona habit, person): add new
        ones, re-time those whose person changed zone, drop those that no longer
        apply. Existing jobs are left alone, so a missed run keeps its misfire
        handling across restarts. Returns how many jobs changed."""
        wanted: dict[str, CronTrigger] = {}
        for loaded in self.personas.personas():
            schedule = loaded.persona.schedule
            if schedule is None or not schedule.habits:
                continue
            targets = await self._targets(loaded.persona.id, now, schedule)
            for target in targets:
                for habit in schedule.habits:
                    wanted[job_ids(loaded.persona.id, habit.name, target.conversation_id)] = (
                        habit_trigger(habit.cron, target.state.timezone, habit.jitter_minutes)
                    )
        changed = 0
        existing = {job.id: job for job in self.aps.get_jobs() if job.id.startswith("habit:")}
        for job_id, trigger in wanted.items():
            job = existing.get(job_id)
            # repr names the fields and the zone; jitter is not in it.
            if (
                job is not None
                and repr(job.trigger) == repr(trigger)
                and getattr(job.trigger, "jitter", None) == trigger.jitter
            ):
                continue
            _, persona_id, habit_name, cid = job_id.split(":")
            self.aps.add_job(
                habit_job,
                trigger,
                args=[self.name, persona_id, habit_name, int(cid)],
                id=job_id,
                replace_existing=True,
            )
            changed += 1
        for job_id in existing.keys() - wanted.keys():
            self.aps.remove_job(job_id)
            changed += 1
        return changed

    async def fire_habit(
        self, persona: str, habit: str, conversation_id: int, now: datetime
    ) -> bool:
        """A habit's time has come for one person: send it if the policy allows."""
        loaded = self.personas.get(persona)
        schedule = loaded.persona.schedule
        if schedule is None:
            return False
        found = next((h for h in schedule.habits if h.name == habit), None)
        if found is None:
            return False
        target = await self._target(persona, conversation_id, now, schedule)
        if target is None:
            return False
        return await self._speak(target, schedule, found.prompt, now, f"habit {habit}")

    # -- check-ins and follow-ups -----------------------------------------------------

    async def sweep(self, now: datetime) -> int:
        """Check-ins for people who went quiet, and habit jobs kept in sync; returns
        how many check-ins were sent."""
        sent = 0
        for loaded in self.personas.personas():
            schedule = loaded.persona.schedule
            if schedule is None or not schedule.checkins:
                continue
            for target in await self._targets(loaded.persona.id, now, schedule):
                if target.last_incoming_at is None:
                    continue
                silence = now - target.last_incoming_at
                due = [c for c in schedule.checkins if silence >= timedelta(hours=c.after_hours)]
                # Once per silence: only if nothing proactive went out since they last wrote.
                if not due or (
                    target.last_proactive_at is not None
                    and target.last_proactive_at > target.last_incoming_at
                ):
                    continue
                checkin = max(due, key=lambda c: c.after_hours)
                if await self._speak(target, schedule, checkin.prompt, now, "check-in"):
                    sent += 1
        await self.sync(now)
        return sent

    def schedule_followup(self, followup_id: int, due_at: datetime) -> None:
        """Add the job that fires a stored follow-up at its time."""
        self.aps.add_job(
            followup_job,
            DateTrigger(run_date=due_at),
            args=[self.name, followup_id],
            id=f"followup:{followup_id}",
            replace_existing=True,
        )

    async def fire_followup(self, followup_id: int, now: datetime) -> str:
        """Ask about a follow-up; returns its new status (sent, skipped, failed)."""
        row = await self.db.run(
            lambda c: c.execute(select(_followups).where(_followups.c.id == followup_id)).first()
        )
        if row is None or row.status != "pending":
            return "missing" if row is None else str(row.status)
        loaded = self.personas.get(row.persona_id)
        schedule = loaded.persona.schedule or Schedule()
        target = await self._target(row.persona_id, row.conversation_id, now, schedule)
        status, reason = "skipped", "not a direct conversation any more"
        if target is not None:
            decision = decide(target.state, schedule, now)
            reason = decision.reason
            if not decision.allowed:
                self.engine.metrics.proactive_skipped(reason)
            else:
                instruction = (
                    f"Earlier you meant to follow up on this: {row.text} Ask about it now."
                )
                sent = await self._deliver(target, instruction, now)
                status, reason = ("sent", "ok") if sent else ("failed", "not delivered")

        def mark(conn: Connection) -> None:
            conn.execute(
                update(_followups)
                .where(_followups.c.id == followup_id)
                .values(status=status, reason=reason[:256], fired_at=now)
            )

        await self.db.run(mark)
        log.info("followup.fired", followup=followup_id, status=status, reason=reason)
        return status

    # -- upkeep ---------------------------------------------------------------------------

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

    # -- helpers ------------------------------------------------------------------------

    async def _targets(self, persona: str, now: datetime, schedule: Schedule) -> list[Target]:
        zone = schedule.timezone or self.default_zone
        return await self.db.run(lambda c: load_targets(c, persona, now=now, default_zone=zone))

    async def _target(
        self, persona: str, conversation_id: int, now: datetime, schedule: Schedule
    ) -> Target | None:
        zone = schedule.timezone or self.default_zone
        return await self.db.run(
            lambda c: load_target(c, persona, conversation_id, now=now, default_zone=zone)
        )

    async def _speak(
        self, target: Target, schedule: Schedule, instruction: str, now: datetime, why: str
    ) -> bool:
        decision = decide(target.state, schedule, now)
        if not decision.allowed:
            log.info("proactive.skipped", why=why, reason=decision.reason, user=target.scope.user)
            self.engine.metrics.proactive_skipped(decision.reason)
            return False
        return await self._deliver(target, instruction, now)

    async def _deliver(self, target: Target, instruction: str, now: datetime) -> bool:
        sender = self.senders.get(target.scope.platform)
        if sender is None:
            log.info("proactive.no_sender", platform=target.scope.platform)
            self.engine.metrics.proactive_skipped("no sender")
            return False
        outgoing = await self.engine.proactive(
            target.scope,
            instruction=instruction,
            display_name=target.display_name,
            kind=TurnKind.PROACTIVE,
            now=now,
        )
        if outgoing is None:
            self.engine.metrics.proactive_failed("generation")
            return False
        try:
            await sender.send(outgoing)
        except Exception as exc:  # recorded by the adapter; never retried in a loop
            log.warning("proactive.undelivered", error=str(exc), user=target.scope.user)
            self.engine.metrics.proactive_failed("delivery")
            return False
        self.engine.metrics.proactive_sent()
        return True


def _job_store_engine(db: Database) -> Engine:
    # APScheduler's job store runs its queries on the event loop's thread. On a server
    # database it gets a connection of its own: from the shared pool, a checkout while
    # every connection is busy with turns would stall the loop for the pool's timeout.
    # SQLite's engine opens connections on demand (no such wait), so it is shared.
    if db.engine.dialect.name == "sqlite":
        return db.engine
    return create_db_engine(
        db.engine.url.render_as_string(hide_password=False),
        pool=PoolOptions(size=1, max_overflow=1, timeout_s=30),
    )


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


def _same_trigger(stored: Any, wanted: Any) -> bool:
    """Whether two triggers fire alike (an interval's start date aside)."""
    if isinstance(stored, IntervalTrigger) and isinstance(wanted, IntervalTrigger):
        return stored.interval == wanted.interval and str(stored.timezone) == str(wanted.timezone)
    return repr(stored) == repr(wanted) and getattr(stored, "jitter", None) == getattr(
        wanted, "jitter", None
    )


def _running(name: str) -> Scheduler | None:
    scheduler = _RUNNING.get(name)
    if scheduler is None:
        log.warning("scheduler.job_without_runtime", runtime=name)
    return scheduler


async def habit_job(name: str, persona: str, habit: str, conversation_id: int) -> None:
    """APScheduler entry point for a habit."""
    if (s := _running(name)) is not None:
        await s.fire_habit(persona, habit, conversation_id, datetime.now(UTC))


async def sweep_job(name: str) -> None:
    """APScheduler entry point for check-ins and habit sync."""
    if (s := _running(name)) is not None:
        await s.sweep(datetime.now(UTC))


async def followup_job(name: str, followup_id: int) -> None:
    """APScheduler entry point for a follow-up."""
    if (s := _running(name)) is not None:
        await s.fire_followup(followup_id, datetime.now(UTC))


async def upkeep_job(name: str, which: str) -> None:
    """APScheduler entry point for upkeep."""
    if (s := _running(name)) is not None:
        await s.run_upkeep(which, datetime.now(UTC))
