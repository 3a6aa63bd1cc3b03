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

from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from weakref import WeakValueDictionary

import structlog
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine

from bot.config import SchedulerSettings
from bot.db import Database, PoolOptions, create_db_engine
from bot.engine import PersonaEngine
from bot.personas import PersonaRegistry
from bot.scheduler.proactive import Proactive, ProactiveSender
from bot.scheduler.upkeep import Upkeep

__all__ = ["ProactiveSender", "Scheduler", "habit_trigger", "job_ids"]

log = structlog.get_logger("bot.scheduler")


# The running schedulers by name, for job functions (APScheduler stores a textual
# reference to a function, not an object). Weak: a closed scheduler disappears.
_RUNNING: WeakValueDictionary[str, Scheduler] = WeakValueDictionary()


def habit_trigger(cron: str, zone: str, jitter_minutes: int = 0) -> CronTrigger:
    """The trigger of a habit for a person in `zone` (local wall-clock times, DST-aware)."""
    trigger = CronTrigger.from_crontab(cron, timezone=zone)
    trigger.jitter = jitter_minutes * 60 or None
    return trigger


def job_ids(persona: str, habit: str, conversation_id: int) -> str:
    """The id of a person's habit job (stable, so restarts find it again)."""
    return f"habit:{persona}:{habit}:{conversation_id}"


class Scheduler(Proactive, Upkeep):
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

    def schedule_followup(self, followup_id: int, due_at: datetime) -> None:
        """Add the job that fires a stored follow-up at its time."""
        self.aps.add_job(
            followup_job,
            DateTrigger(run_date=due_at),
            args=[self.name, followup_id],
            id=f"followup:{followup_id}",
            replace_existing=True,
        )


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
