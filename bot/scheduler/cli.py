"""`bot schedule list` and `bot schedule run JOB_ID`.

Both open an existing database only (a mistyped path is an error, not a new empty
database), and `list` changes nothing: the jobs it shows keep their next run.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from bot.config import merge_overrides
from bot.errors import UsageError

__all__ = ["schedule_app"]

schedule_app = typer.Typer(no_args_is_help=True, help="Proactive messages and upkeep jobs.")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar="BOT_CONFIG", help="TOML config file."),
]
DbOption = Annotated[Path | None, typer.Option(help="SQLite file (default from config).")]


def _describe(job: Any) -> dict[str, Any]:
    zone = getattr(job.trigger, "timezone", UTC)
    when = job.next_run_time
    return {
        "id": job.id,
        "next_run": when.astimezone(zone).isoformat() if when else None,
        "zone": str(zone),
        "trigger": str(job.trigger),
    }


async def _with_scheduler(config: Path | None, db: Path | None, action: Any) -> Any:
    from bot.app import open_app
    from bot.config import load_settings
    from bot.logs import configure_logging
    from bot.scheduler.service import Scheduler

    url = f"sqlite:///{db}" if db is not None else None
    settings = load_settings(
        config, merge_overrides({"personas": {"watch": False}, "database": {"url": url}})
    )
    configure_logging(level="WARNING", fmt=settings.logging.format)  # stdout is the answer
    async with open_app(settings, watch=False, must_exist=True) as bot:
        scheduler = Scheduler(
            db=bot.db,
            engine=bot.engine,
            personas=bot.personas,
            settings=settings.scheduler,
            default_zone=settings.engine.timezone,
            senders={},
            name="cli",
        )
        await scheduler.start(paused=True)  # reads the store; runs nothing by itself
        try:
            return await action(scheduler)
        finally:
            await scheduler.stop()


@schedule_app.command("list")
def schedule_list(
    persona: Annotated[str | None, typer.Option(help="Only this persona's jobs.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Upcoming jobs, with the next fire time in each person's own zone."""

    async def action(scheduler: Any) -> list[dict[str, Any]]:
        await scheduler.sync(datetime.now(UTC))
        jobs = [_describe(j) for j in scheduler.aps.get_jobs()]
        return [j for j in jobs if persona is None or f":{persona}:" in j["id"]]

    jobs = asyncio.run(_with_scheduler(config, db, action))
    for job in sorted(jobs, key=lambda j: j["next_run"] or ""):
        if as_json:
            typer.echo(json.dumps(job))
        else:
            typer.echo(f"{job['id']:<40} {job['next_run'] or 'paused':<32} {job['zone']}")


@schedule_app.command("run")
def schedule_run(
    job_id: Annotated[str, typer.Argument(help="A job id from `bot schedule list`.")],
    db: DbOption = None,
    config: ConfigOption = None,
) -> None:
    """Run a job now. Upkeep jobs run here; a proactive job is made due now, and the
    running bot (which holds the platform connections) sends it at its next wake-up."""

    async def action(scheduler: Any) -> str | None:
        now = datetime.now(UTC)
        if job_id.startswith("upkeep:"):
            result = await scheduler.run_upkeep(job_id.split(":", 1)[1], now)
            return f"{job_id}: done" + (f" ({result})" if result is not None else "")
        if job_id == "sweep":
            await scheduler.sync(now)
            return "sweep: habit jobs synced; check-ins are sent by the running bot"
        if scheduler.aps.get_job(job_id) is None:
            return None
        scheduler.aps.modify_job(job_id, next_run_time=now)
        return f"{job_id}: due now; the running bot sends it within its sweep interval"

    answer = asyncio.run(_with_scheduler(config, db, action))
    if answer is None:
        raise UsageError(f"no job {job_id!r}; see `bot schedule list`")
    typer.echo(answer)
