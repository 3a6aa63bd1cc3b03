"""The scheduler over a real app, on a SQLite file and on PostgreSQL (the job store
and its queries are the contract), with time passed in (never slept)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.app import App, open_app
from bot.config import SchedulerSettings, load_settings
from bot.errors import ConfigError, UsageError
from bot.llm.mock import MockBackend
from bot.messages import Actor, Incoming, Outgoing, Scope
from bot.scheduler import Scheduler, job_ids
from tests.sql import execute, rows
from tests.test_engine import PERSONA

SCHEDULED = (
    PERSONA
    + """\
schedule:
  habits:
    - {name: walk, cron: "30 7 * * *", prompt: "It is walk time."}
  checkins:
    - {after_hours: 48, prompt: "Say you miss them."}
  quiet_hours: {start: "22:00", end: "07:00"}
  daily_cap: 2
  max_unanswered: 2
"""
)


class Sender:
    def __init__(self) -> None:
        self.sent: list[Outgoing] = []

    async def send(self, outgoing: Outgoing) -> list[str | None]:
        self.sent.append(outgoing)
        return ["x"]


@pytest.fixture
async def app(tmp_path: Path, database_url: str) -> AsyncIterator[App]:
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "tester.yaml").write_text(SCHEDULED, encoding="utf-8")
    settings = load_settings(
        None,
        {
            "database": {"url": database_url},
            "personas": {"dirs": [str(personas)]},
            "memory": {"enabled": False},  # not what these tests are about
        },
    )
    async with open_app(
        settings, backend=MockBackend(lambda r: "Woof! Walk?"), watch=False
    ) as opened:
        yield opened


def _memory_search_on(url: str) -> bool:
    """Whether memory search runs on this database yet (memory-pg's PostgreSQL
    backend): its factory refuses a dialect it has no backend for."""
    if url.startswith("sqlite"):
        return True
    from concurrent.futures import ThreadPoolExecutor

    from bot.db import Database, create_db_engine
    from bot.memory.backend import search_backend_for

    db = Database(create_db_engine(url))
    with ThreadPoolExecutor(1) as thread:
        try:
            search_backend_for(db, model=None, thread=thread)
        except NotImplementedError:
            return False
        finally:
            db.engine.dispose()
    return True


def make_scheduler(app: App, tmp_path: Path, sender: Sender, **settings: Any) -> Scheduler:
    return Scheduler(
        db=app.db,
        engine=app.engine,
        personas=app.personas,
        settings=SchedulerSettings(backup_dir=tmp_path / "backups", **settings),
        default_zone="UTC",
        senders={"test": sender},
        name=f"test-{id(app)}",
    )


async def person_writes(app: App, user: str, at: datetime, zone: str | None = None) -> None:
    scope = Scope(platform="test", channel=f"dm-{user}", user=user, persona="tester")
    actor = Actor(platform="test", id=user, display_name=user.title())
    await app.engine.handle(Incoming(scope=scope, actor=actor, text="hi", received_at=at))
    if zone:
        await app.people.set_timezone("test", user, zone)


def db(app: App, sql: str) -> list[tuple[Any, ...]]:
    return rows(app.settings.database.url, sql)


NOW = datetime(2026, 6, 1, 7, 30, tzinfo=UTC)


async def test_sync_makes_one_job_per_person_habit_in_their_zone(app: App, tmp_path: Path) -> None:
    await person_writes(app, "ann", NOW - timedelta(hours=1), "Europe/Berlin")
    await person_writes(app, "bo", NOW - timedelta(hours=1), "America/New_York")
    scheduler = make_scheduler(app, tmp_path, Sender())
    await scheduler.start(paused=True)
    try:
        assert await scheduler.sync(NOW) == 2
        assert await scheduler.sync(NOW) == 0  # unchanged jobs are left alone
        zones = {
            str(j.trigger.timezone) for j in scheduler.aps.get_jobs() if j.id.startswith("habit:")
        }
        assert zones == {"Europe/Berlin", "America/New_York"}
        await app.people.set_timezone("test", "bo", "Asia/Tokyo")
        assert await scheduler.sync(NOW) == 1  # re-timed for the new zone
    finally:
        await scheduler.stop()


async def test_habit_fires_within_policy_and_is_stored_as_proactive(
    app: App, tmp_path: Path
) -> None:
    await person_writes(app, "ann", NOW - timedelta(hours=1))
    sender = Sender()
    scheduler = make_scheduler(app, tmp_path, sender)
    cid = await app.engine.ledger.conversation_id(
        Scope(platform="test", channel="dm-ann", user="ann", persona="tester")
    )
    assert await scheduler.fire_habit("tester", "walk", cid, NOW)
    assert [o.text for o in sender.sent] == ["Woof! Walk?"] and sender.sent[0].kind == "proactive"
    assert db(app, "select kind from messages where direction='out' order by id")[-1] == (
        "proactive",
    )
    # Second in a row without an answer: allowed (max 2); the third is not.
    assert await scheduler.fire_habit("tester", "walk", cid, NOW + timedelta(minutes=1))
    assert not await scheduler.fire_habit("tester", "walk", cid, NOW + timedelta(minutes=2))
    await person_writes(app, "ann", NOW + timedelta(minutes=3))
    # They answered, but the daily cap of 2 holds until their midnight.
    assert not await scheduler.fire_habit("tester", "walk", cid, NOW + timedelta(minutes=4))
    assert await scheduler.fire_habit("tester", "walk", cid, NOW + timedelta(days=1))
    assert len(sender.sent) == 3


async def test_quiet_hours_and_opt_out_in_the_middle_of_a_schedule(
    app: App, tmp_path: Path
) -> None:
    await person_writes(app, "ann", NOW - timedelta(hours=1))
    sender = Sender()
    scheduler = make_scheduler(app, tmp_path, sender)
    scope = Scope(platform="test", channel="dm-ann", user="ann", persona="tester")
    cid = await app.engine.ledger.conversation_id(scope)
    assert not await scheduler.fire_habit("tester", "walk", cid, NOW.replace(hour=23))
    await app.people.set_opted_out("test", "ann", True)
    assert not await scheduler.fire_habit("tester", "walk", cid, NOW)
    assert sender.sent == []
    await app.people.set_opted_out("test", "ann", False)
    assert await scheduler.fire_habit("tester", "walk", cid, NOW)


async def test_unreachable_people_are_skipped(app: App, tmp_path: Path) -> None:
    await person_writes(app, "ann", NOW - timedelta(hours=1))
    await app.people.mark_unreachable("test", "ann", "bot was blocked by the user")
    sender = Sender()
    scheduler = make_scheduler(app, tmp_path, sender)
    cid = await app.engine.ledger.conversation_id(
        Scope(platform="test", channel="dm-ann", user="ann", persona="tester")
    )
    assert not await scheduler.fire_habit("tester", "walk", cid, NOW)
    assert sender.sent == []


async def test_checkin_after_silence_fires_once_per_silence(app: App, tmp_path: Path) -> None:
    await person_writes(app, "ann", NOW - timedelta(hours=50))
    await person_writes(app, "bo", NOW - timedelta(hours=10))
    sender = Sender()
    scheduler = make_scheduler(app, tmp_path, sender)
    await scheduler.start(paused=True)
    try:
        assert await scheduler.sweep(NOW) == 1
        assert [o.scope.user for o in sender.sent] == ["ann"]
        assert await scheduler.sweep(NOW + timedelta(hours=1)) == 0
    finally:
        await scheduler.stop()


async def test_followup_fires_once_and_respects_the_policy(app: App, tmp_path: Path) -> None:
    await person_writes(app, "ann", NOW - timedelta(days=2))
    sender = Sender()
    scheduler = make_scheduler(app, tmp_path, sender)
    cid = await app.engine.ledger.conversation_id(
        Scope(platform="test", channel="dm-ann", user="ann", persona="tester")
    )
    for text in ("the exam on Friday", "the job interview"):
        execute(
            app.settings.database.url,
            "insert into followups (conversation_id, user_id, persona_id, text, due_at,"
            " status, created_at) values (:cid, 1, 'tester', :text, :at, 'pending', :at)",
            {"cid": cid, "text": text, "at": NOW},
        )
    assert await scheduler.fire_followup(1, NOW) == "sent"
    assert await scheduler.fire_followup(1, NOW) == "sent"  # already fired: not again
    assert len(sender.sent) == 1
    await app.people.set_opted_out("test", "ann", True)
    assert await scheduler.fire_followup(2, NOW) == "skipped"
    assert db(app, "select status, reason from followups order by id") == [
        ("sent", "ok"),
        ("skipped", "opted out"),
    ]


async def test_jobs_survive_a_restart_and_a_missed_window_sends_nothing(
    app: App, tmp_path: Path
) -> None:
    await person_writes(app, "ann", datetime.now(UTC) - timedelta(hours=1))
    sender = Sender()
    first = make_scheduler(app, tmp_path, sender, misfire_grace_s=60)
    await first.start(paused=True)
    await first.sync(datetime.now(UTC))
    job_id = job_ids("tester", "walk", 1)
    # The bot goes down; the walk was due two hours ago.
    first.aps.modify_job(job_id, next_run_time=datetime.now(UTC) - timedelta(hours=2))
    await first.stop()
    assert db(app, "select id from apscheduler_jobs where id like 'habit:%'") == [(job_id,)]

    second = make_scheduler(app, tmp_path, sender, misfire_grace_s=60)
    await second.start()  # not paused: due jobs are processed at once
    try:
        for _ in range(100):
            job = second.aps.get_job(job_id)
            if job is not None and job.next_run_time > datetime.now(UTC):
                break
            await asyncio.sleep(0.02)
        job = second.aps.get_job(job_id)
        assert job is not None and job.next_run_time > datetime.now(UTC)  # moved on
        assert sender.sent == []  # too late: skipped, not sent
    finally:
        await second.stop()


async def test_retention_and_backup(app: App, tmp_path: Path) -> None:
    await person_writes(app, "ann", NOW - timedelta(days=400))
    await person_writes(app, "ann", NOW - timedelta(days=1))
    scheduler = make_scheduler(app, tmp_path, Sender(), retention_days=365, backup_keep=2)
    assert await scheduler.run_upkeep("nightly", NOW) == 1  # the old incoming message
    assert db(app, "select count(*) from messages where direction='in'") == [(1,)]
    if app.db.engine.dialect.name != "sqlite":
        # A server database is backed up with its own tools (pg_dump), not by us.
        with pytest.raises(ConfigError, match="not a SQLite file"):
            await scheduler.backup(NOW)
        return
    paths = [await scheduler.backup(NOW + timedelta(seconds=i)) for i in range(3)]
    kept = sorted((tmp_path / "backups").glob("*.db"))
    assert kept == sorted(p for p in paths[1:] if p is not None)
    with sqlite3.connect(kept[-1]) as conn:
        assert conn.execute("pragma integrity_check").fetchone() == ("ok",)
        assert conn.execute("select count(*) from messages").fetchone()[0] >= 1


async def test_scheduled_export_and_memory_upkeep_run_through_the_scheduler(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = _memory_search_on(database_url)
    monkeypatch.setenv("BOT_EXPORT__HMAC_KEY", "a-test-key-that-is-long-enough-123456")
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "tester.yaml").write_text(SCHEDULED, encoding="utf-8")
    settings = load_settings(
        None,
        {
            "database": {"url": database_url},
            "personas": {"dirs": [str(personas)]},
            # Memory search on PostgreSQL is memory-pg's (bot/memory/): until it is
            # there, the memory upkeep half of this test runs on SQLite only.
            "memory": {"embedding_model": "none", "enabled": memory},
            "scheduler": {"export_dir": str(tmp_path / "exports")},
        },
    )
    async with open_app(settings, backend=MockBackend(lambda r: "Woof!"), watch=False) as app:
        wanted = {"memory", "export"} if memory else {"export"}
        assert {"memory", "export"} & set(app.upkeep) == wanted  # besides the inbox's own
        await person_writes(app, "ann", NOW - timedelta(days=3))
        scheduler = Scheduler(
            db=app.db,
            engine=app.engine,
            personas=app.personas,
            settings=settings.scheduler,
            default_zone="UTC",
            senders={},
            upkeep=app.upkeep,
            name="export-test",
        )
        await scheduler.start(paused=True)
        try:
            assert "upkeep:export" in {j.id for j in scheduler.aps.get_jobs()}
            manifest = await scheduler.run_upkeep("export", NOW)
            if memory:
                await scheduler.run_upkeep("memory", NOW)
        finally:
            await scheduler.stop()
    [out] = list((tmp_path / "exports").iterdir())
    assert (out / "manifest.json").exists() and manifest is not None


async def test_starting_again_leaves_standing_jobs_where_they_were(
    app: App, tmp_path: Path
) -> None:
    first = make_scheduler(app, tmp_path, Sender())
    await first.start(paused=True)
    before = {j.id: j.next_run_time for j in first.aps.get_jobs()}
    await first.stop()
    await asyncio.sleep(1.1)  # an interval re-added now would move by this much
    again = make_scheduler(app, tmp_path, Sender())
    await again.start(paused=True)
    try:
        after = {j.id: j.next_run_time for j in again.aps.get_jobs()}
    finally:
        await again.stop()
    assert {"sweep", "upkeep:nightly", "upkeep:backup"} <= before.keys()
    assert after == before
    # A changed setting does replace the job.
    changed = make_scheduler(app, tmp_path, Sender(), sweep_minutes=5)
    await changed.start(paused=True)
    try:
        sweep = changed.aps.get_job("sweep")
        assert sweep is not None and sweep.trigger.interval == timedelta(minutes=5)
    finally:
        await changed.stop()


async def test_backup_without_a_directory_or_an_unknown_upkeep_job_is_an_error(
    app: App, tmp_path: Path
) -> None:
    scheduler = make_scheduler(app, tmp_path, Sender())
    scheduler.settings = SchedulerSettings(backup_dir=None)
    with pytest.raises(ConfigError, match=r"scheduler\.backup_dir is not set"):
        await scheduler.run_upkeep("backup", NOW)
    with pytest.raises(UsageError, match=r"no upkeep job 'vacuum'; there are: upkeep:nightly"):
        await scheduler.run_upkeep("vacuum", NOW)


async def test_the_job_store_does_not_wait_for_the_turns_connections(
    tmp_path: Path, postgres_url: str
) -> None:
    # Every connection of the pool is busy with a (stuck) turn: the job store, which
    # runs on the event loop, has one of its own, so the loop does not stall on it.
    import threading
    import time

    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "tester.yaml").write_text(SCHEDULED, encoding="utf-8")
    settings = load_settings(
        None,
        {
            "database": {
                "url": postgres_url,
                "pool_size": 1,
                "max_overflow": 0,
                "pool_timeout_s": 20,
            },
            "personas": {"dirs": [str(personas)]},
            "memory": {"enabled": False},
        },
    )
    async with open_app(settings, backend=MockBackend(lambda r: "hi"), watch=False) as app:
        scheduler = make_scheduler(app, tmp_path, Sender())
        await scheduler.start(paused=True)
        entered, release = threading.Event(), threading.Event()

        def stuck(conn: Any) -> None:
            entered.set()
            release.wait(30)

        holding = asyncio.ensure_future(app.db.run(stuck))
        try:
            await asyncio.to_thread(entered.wait, 10)
            started = time.monotonic()
            jobs = scheduler.aps.get_jobs()  # on the loop, as APScheduler does
            assert time.monotonic() - started < 10  # well inside the pool's 20 s
            assert {"sweep", "upkeep:nightly"} <= {j.id for j in jobs}
        finally:
            release.set()
            await holding
            await scheduler.stop()
