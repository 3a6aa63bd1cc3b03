"""The ops server over loopback: /healthz, /readyz and /metrics of a real app, on a
SQLite file and on PostgreSQL, scraped with httpx."""

from __future__ import annotations

import asyncio
import io
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from adapters.console import ConsoleAdapter
from bot.config import OpsSettings
from bot.db import Database, head_revision
from bot.errors import ConfigError
from bot.inbox import RawEvent
from bot.metrics import Metrics
from bot.web import OpsServer, Readiness
from tests.fakes.postgres import PostgresServer
from tests.web.conftest import OpsBot, open_ops_bot


def _console(bot: OpsBot, text: str, *, interactive: bool = False) -> ConsoleAdapter:
    return ConsoleAdapter(
        bot.app.services,
        persona="tester",
        display_name="Ann",
        stdin=io.StringIO(text),
        stdout=io.StringIO(),
        interactive=interactive,
    )


async def test_healthz_answers_with_the_worker(ops_bot: OpsBot) -> None:
    response = await ops_bot.http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "worker": ops_bot.app.metrics.worker}
    assert (await ops_bot.http.get("/nothing")).status_code == 404


async def test_metrics_move_after_a_real_turn(ops_bot: OpsBot) -> None:
    before = await ops_bot.metrics()
    assert before[f'personabot_worker_info{{worker="{ops_bot.app.metrics.worker}"}}'] == 1
    assert not any(k.startswith("personabot_turns_total") for k in before)
    assert before["personabot_queue_scrape_ok"] == 1

    console = _console(ops_bot, "hello\nagain\n")
    ops_bot.app.metrics.watch_delivery([console])
    await console.run(asyncio.Event())
    assert console.turns == 2

    after = await ops_bot.metrics()
    assert after['personabot_turns_total{outcome="answered",platform="console"}'] == 2
    for name in ("turn_overhead", "generation", "delivery"):
        assert after[f'personabot_{name}_seconds_count{{platform="console"}}'] == 2, name
        assert after[f'personabot_{name}_seconds_sum{{platform="console"}}'] > 0, name
    assert after['personabot_tokens_total{kind="prompt",platform="console"}'] > 0
    assert after['personabot_delivery_parts_sent_total{platform="console"}'] == 2
    assert after['personabot_rate_limited_total{platform="console"}'] == 0
    # Replies delivered, turns answered: nothing waits in the queues.
    assert not any(k.startswith("personabot_queue_depth{") for k in after)


async def test_a_streamed_turn_times_its_first_token(tmp_path: Path) -> None:
    async for bot in open_ops_bot(tmp_path, f"sqlite:///{tmp_path}/s.db"):
        console = _console(bot, "hello\n/quit\n", interactive=True)
        await console.run(asyncio.Event())
        samples = await bot.metrics()
        assert samples['personabot_time_to_first_token_seconds_count{platform="console"}'] == 1


async def test_memory_search_and_recall_are_timed(tmp_path: Path, database_url: str) -> None:
    async for bot in open_ops_bot(tmp_path, database_url, memory=True):
        await _console(bot, "I have a dog called Rex\nwhat is my dog called?\n").run(
            asyncio.Event()
        )
        samples = await bot.metrics()
        dialect = bot.app.db.engine.dialect.name
        assert samples[f'personabot_memory_search_seconds_count{{backend="{dialect}"}}'] >= 2
        assert samples["personabot_memory_recall_seconds_count"] == 2


async def test_failures_are_counted_by_stage(ops_bot: OpsBot) -> None:
    from bot.errors import BackendError
    from bot.llm.mock import MockBackend

    def broken(_req: object) -> str:
        raise BackendError("the model server is down")

    ops_bot.app.backends._fixed = MockBackend(broken)
    console = _console(ops_bot, "hello\n")
    await console.run(asyncio.Event())
    samples = await ops_bot.metrics()
    assert samples['personabot_failures_total{stage="generate"}'] == 1
    assert samples['personabot_turns_total{outcome="failed",platform="console"}'] == 1


async def test_queue_depth_and_age_come_from_the_database(ops_bot: OpsBot) -> None:
    inbox = ops_bot.app.inbox
    assert inbox is not None
    old = datetime.now(UTC) - timedelta(minutes=10)
    await inbox.accept(
        "telegram",
        [
            RawEvent(key="1", payload="{}", chat="c1", received_at=old),
            RawEvent(key="2", payload="{}", chat="c1"),
        ],
    )
    ops_bot.app.metrics.ttl_s = 0  # this test reads after writing
    samples = await ops_bot.metrics()
    labels = 'platform="telegram",queue="inbox",status="pending"'
    assert samples[f"personabot_queue_depth{{{labels}}}"] == 2
    assert 590 < samples[f"personabot_queue_oldest_age_seconds{{{labels}}}"] < 3600
    assert samples["personabot_queue_scrape_seconds"] > 0


async def test_queue_counts_are_cached_between_scrapes(ops_bot: OpsBot) -> None:
    inbox = ops_bot.app.inbox
    assert inbox is not None
    ops_bot.app.metrics.ttl_s = 3600
    await ops_bot.metrics()  # read now: empty
    await inbox.accept("telegram", [RawEvent(key="9", payload="{}", chat="c")])
    cached = await ops_bot.metrics()
    assert not any(k.startswith("personabot_queue_depth{") for k in cached)
    await ops_bot.app.metrics.refresh(force=True)
    fresh = await ops_bot.metrics()
    assert fresh['personabot_queue_depth{platform="telegram",queue="inbox",status="pending"}'] == 1


async def test_readyz_is_ready_with_a_migrated_database_and_connected_platforms(
    ops_bot: OpsBot,
) -> None:
    response = await ops_bot.http.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ready"] is True
    assert body["checks"]["database"] == {
        "ok": True,
        "detail": f"reachable, migrations at head {head_revision()}",
    }


class _Platform:
    """An adapter as readiness sees it: a platform name and a `ready` event."""

    def __init__(self, platform: str) -> None:
        self.platform = platform
        self.ready = asyncio.Event()


async def test_readyz_waits_for_every_platform(tmp_path: Path) -> None:
    telegram, discord = _Platform("telegram"), _Platform("discord")
    discord.ready.set()
    async for bot in open_ops_bot(
        tmp_path, f"sqlite:///{tmp_path}/r.db", adapters=(telegram, discord)
    ):
        response = await bot.http.get("/readyz")
        assert response.status_code == 503
        checks = response.json()["checks"]
        assert checks["telegram"] == {"ok": False, "detail": "not connected to the platform (yet)"}
        assert checks["discord"]["ok"] and checks["database"]["ok"]
        telegram.ready.set()
        assert (await bot.http.get("/readyz")).status_code == 200


async def test_readyz_is_not_ready_when_migrations_are_behind(tmp_path: Path) -> None:
    async for bot in open_ops_bot(tmp_path, f"sqlite:///{tmp_path}/m.db"):
        await bot.app.db.run(
            lambda c: c.exec_driver_sql("UPDATE alembic_version SET version_num = '0009'")
        )
        response = await bot.http.get("/readyz")
        assert response.status_code == 503
        detail = response.json()["checks"]["database"]["detail"]
        assert detail == (
            f"migrations at 0009, this code needs {head_revision()} (run bot db upgrade)"
        )


async def test_readyz_is_not_ready_when_postgresql_is_unreachable(
    postgres_server: PostgresServer, postgres_url: str
) -> None:
    db = await asyncio.to_thread(Database.open, postgres_url)
    try:
        server = OpsServer(Metrics(), Readiness(db, timeout_s=5), port=0)
        async with server, httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            assert (await http.get("/readyz")).status_code == 200
            # The database goes away (its connections killed with it).
            await asyncio.to_thread(postgres_server.drop_database, postgres_url)
            response = await http.get("/readyz")
            assert response.status_code == 503
            detail = response.json()["checks"]["database"]["detail"]
            assert detail.startswith("unreachable: ")
            # /metrics still answers, and says the queues could not be read.
            server.metrics.watch_database(db)
            scraped = await http.get("/metrics")
            assert scraped.status_code == 200
            assert "personabot_queue_scrape_ok 0.0" in scraped.text
            assert (await http.get("/healthz")).status_code == 200
    finally:
        await db.aclose()


async def test_readyz_says_so_when_the_database_does_not_answer_in_time() -> None:
    class _Hanging:
        async def read(self, _work: object) -> None:
            await asyncio.sleep(3600)

    readiness = Readiness(_Hanging(), timeout_s=0.05, head="x")  # type: ignore[arg-type]
    first = await readiness.database()
    assert not first.ok and first.detail.startswith("no answer from the database for ")
    # The stuck probe is reused, not stacked up behind.
    probe = readiness._probe
    await readiness.database()
    assert readiness._probe is probe
    assert probe is not None
    probe.cancel()


def test_bad_ops_config_is_a_clear_error(tmp_path: Path) -> None:
    from bot.config import load_settings

    with pytest.raises(ConfigError, match=r"ops\.port = 70000: Input should be less than or equal"):
        load_settings(None, {"ops": {"port": 70000}})
    with pytest.raises(ConfigError, match=r"ops\.host = 'http://0\.0\.0\.0:9100': a host name"):
        load_settings(None, {"ops": {"host": "http://0.0.0.0:9100"}})
    with pytest.raises(ConfigError, match=r"ops\.metrics_cache_s"):
        load_settings(None, {"ops": {"metrics_cache_s": -1}})
    with pytest.raises(ConfigError, match=r"ops\.colour"):
        load_settings(None, {"ops": {"colour": "blue"}})
    assert load_settings(None, {"ops": {"host": "::"}}).ops.host == "::"
    assert load_settings(None, {}).ops.port is None  # off unless set


async def test_a_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = OpsServer(Metrics(), Readiness(None), host="127.0.0.1", port=port)
        with pytest.raises(ConfigError) as caught:
            await server.start()
    assert str(caught.value) == (
        f"ops: cannot listen on 127.0.0.1:{port}: address already in use "
        "(another worker on this port?)"
    )


async def test_no_port_no_server(tmp_path: Path) -> None:
    from bot.web import start_ops

    async for bot in open_ops_bot(tmp_path, f"sqlite:///{tmp_path}/n.db"):
        assert await start_ops(OpsSettings(), bot.app) is None
