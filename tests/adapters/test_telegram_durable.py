"""Nothing accepted by the Telegram adapter is lost: poison updates, bad Unicode,
ordering in one chat, a webhook that dies before answering, and kill -9 at random
moments of a load (`bot run` as a real process, restarted on the same SQLite file).

Real python-telegram-bot over sockets against the fake Bot API
(tests/fakes/telegram_api.py, harsh modes on), a real SQLite file; the process
tests answer through the fake OpenAI-compatible server (tests/fakes/openai_server.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import random
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.base import PacingPolicy
from adapters.telegram import TELEGRAM_PACING, TelegramAdapter
from bot.app import open_app
from bot.config import load_settings
from bot.inbox import Inbox
from bot.llm.base import ChatRequest
from bot.llm.mock import MockBackend, echo_handler
from tests.adapters._telegram_process import BotProcess, account, in_flight, write_config
from tests.adapters.conftest import TELEGRAM_FAST_PACING, TelegramBot, write_personas
from tests.fakes.openai_server import FakeOpenAIServer
from tests.fakes.telegram_api import FakeTelegramAPI, Harsh

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

Factory = Callable[..., Awaitable[TelegramBot]]


@pytest.fixture
async def harsh_bot(tmp_path: Path) -> AsyncIterator[Factory]:
    """`await harsh_bot(harsh=Harsh(...), handler=..., pacing=...)`: the fake Bot API
    with those misbehaviours, and the adapter running against it, in this process."""
    opened: list[tuple[TelegramBot, Any, FakeTelegramAPI]] = []

    async def factory(
        harsh: Harsh | None = None,
        handler: Callable[..., Any] = echo_handler,
        *,
        pacing: PacingPolicy = TELEGRAM_FAST_PACING,
        database: dict[str, Any] | None = None,
        **telegram: Any,
    ) -> TelegramBot:
        api = FakeTelegramAPI(harsh=harsh)
        await api.start()
        settings = load_settings(
            None,
            {
                "database": {"url": f"sqlite:///{tmp_path}/telegram.db", **(database or {})},
                "personas": {
                    "dirs": [str(write_personas(tmp_path))],
                    "default": "tester",
                    "watch": False,
                },
                "memory": {"enabled": False},
                "telegram": {"token": api.token, "base_url": api.base_url, **telegram},
            },
        )
        backend = MockBackend(handler)
        cm = open_app(settings, backend=backend, watch=False)
        app = await cm.__aenter__()
        services = app.services
        if services.inbox is None:  # older wiring: the adapter needs its inbox
            services = dataclasses.replace(services, inbox=Inbox(app.db))
        adapter = TelegramAdapter(
            services, settings.telegram, default_persona="tester", pacing=pacing
        )
        stop = asyncio.Event()
        task = asyncio.create_task(adapter.run(stop))
        bot = TelegramBot(api, app, adapter, backend, stop, task)
        opened.append((bot, cm, api))
        ready = asyncio.create_task(adapter.ready.wait())
        await asyncio.wait({ready, task}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        assert adapter.ready.is_set()
        return bot

    yield factory
    for bot, cm, api in reversed(opened):
        bot.stop.set()
        with contextlib.suppress(Exception):  # the test checked what it wanted
            await asyncio.wait_for(bot.task, 20)
        await cm.__aexit__(None, None, None)
        await api.stop()


async def _until(condition: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# -- poison and bad Unicode, end to end -------------------------------------------------


async def test_a_poison_update_costs_one_failure_row_and_nothing_else(harsh_bot: Factory) -> None:
    bot = await harsh_bot()
    api = bot.api
    api.poll_message(400)  # a poll PTB cannot parse, inside an allowed "message" update
    no_id = api.push_raw({"message": {"text": "no update_id"}}, with_id=False)
    for i in range(5):
        api.private_message(401 + i, f"after the poison {i}")
    await api.wait_for(lambda: all(api.sent_to(401 + i) for i in range(5)), timeout=15)
    polls_then = api.counts["getUpdates"]
    await asyncio.sleep(1.5)  # idle: long polls, no spinning
    polls_idle = api.counts["getUpdates"] - polls_then
    await bot.shutdown()
    events = await bot.rows("select event_key, status, reason from inbox_events order by id")
    failed = [e for e in events if e[1] == "failed"]
    assert len(failed) == 2, events
    assert "cannot parse" in failed[0][2] and failed[0][0] == "1"
    assert failed[1][0].startswith("invalid:") and "update_id" in failed[1][2]
    assert [e[1] for e in events if e not in failed] == ["done"] * 5
    assert polls_idle <= 2, polls_idle  # a long poll lasts seconds; a hot loop, hundreds
    assert api.counts["getUpdates"] < 15
    assert no_id not in api.updates or api.confirmed >= 6
    # The raw payload of the failure is kept for `bot inbox replay`.
    payload = (await bot.rows("select payload from inbox_events where event_key = '1'"))[0][0]
    assert json.loads(payload)["message"]["poll"]["question"] == "Tea or coffee?"


async def test_a_lone_surrogate_in_a_name_or_text_is_repaired_and_answered(
    harsh_bot: Factory,
) -> None:
    bot = await harsh_bot()
    api = bot.api
    api.private_message(410, "hi \udc00 there", name="\ud800Ann")
    api.group_message(-1410, 411, "hello", mention=True, name="Bob\udfff")
    await api.wait_for(lambda: api.sent_to(410) and api.sent_to(-1410))
    await bot.shutdown()
    assert api.sent_to(410)[0].text == "You said: hi \ufffd there"
    names = await bot.rows("select display_name from users order by platform_user_id")
    assert names == [("\ufffdAnn",), ("Bob\ufffd",)]
    assert await bot.rows("select count(*) from inbox_events where status != 'done'") == [(0,)]


async def test_webhook_bodies_are_stored_before_200_and_malformed_ones_fail_with_a_reason(
    harsh_bot: Factory,
) -> None:
    import aiohttp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/telegram"
    bot = await harsh_bot(
        mode="webhook", webhook_url=url, webhook_secret="s3cret", listen_port=port
    )
    good = {"X-Telegram-Bot-Api-Secret-Token": "s3cret"}
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=b"{not json", headers=good) as response:
            assert response.status == 200
        async with session.post(url, json={"update_id": "x"}, headers=good) as response:
            assert response.status == 200
        async with session.post(url, json={"update_id": 9}, headers={}) as response:
            assert response.status == 401
    await _until(
        lambda: _count(bot, "select count(*) from inbox_events where status = 'failed'", 2)
    )
    reasons = [r[0] for r in await bot.rows("select reason from inbox_events order by id")]
    assert reasons[0].startswith("UnparsableUpdate: not JSON")
    assert "no integer update_id" in reasons[1]
    await bot.shutdown()


async def test_a_webhook_whose_commit_fails_answers_503_and_gets_the_update_again(
    harsh_bot: Factory, tmp_path: Path
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bot = await harsh_bot(
        mode="webhook",
        webhook_url=f"http://127.0.0.1:{port}/telegram",
        listen_port=port,
        database={"busy_timeout_ms": 100},
    )
    api = bot.api
    # Another process holds the database's write lock: the bot cannot commit.
    blocker = sqlite3.connect(tmp_path / "telegram.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        api.private_message(450, "are you there?")
        await api.wait_for(lambda: 503 in api.webhook_responses, timeout=10)
        assert not api.sent_to(450) and api.updates  # not acknowledged: Telegram keeps it
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await api.wait_for(lambda: api.sent_to(450), timeout=15)
    await bot.shutdown()
    assert [m.text for m in api.sent_to(450)] == ["You said: are you there?"]  # once
    assert api.webhook_responses[-1] == 200 and not api.updates


async def test_a_batch_that_cannot_be_committed_is_not_confirmed_and_comes_again(
    harsh_bot: Factory, tmp_path: Path
) -> None:
    bot = await harsh_bot(database={"busy_timeout_ms": 100})
    api = bot.api
    blocker = sqlite3.connect(tmp_path / "telegram.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        update = api.private_message(451, "hello?")
        polls = api.counts["getUpdates"]
        await api.wait_for(lambda: api.counts["getUpdates"] >= polls + 2, timeout=10)
        # Fetched again and again, but never confirmed: the offset did not move past it.
        assert api.confirmed < update["update_id"] and api.updates
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await api.wait_for(lambda: api.sent_to(451), timeout=15)
    await bot.shutdown()
    assert len(api.sent_to(451)) == 1


async def _count(bot: TelegramBot, sql: str, expected: int) -> bool:
    return bool((await bot.rows(sql))[0][0] >= expected)


# -- the getUpdates loop never spins ----------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        {"status": 500, "description": "Internal Server Error"},
        {"status": 502, "description": "Bad Gateway"},
        {"status": 409, "description": "Conflict: terminated by other getUpdates request"},
        {"status": 429, "retry_after": 1},
    ],
)
async def test_get_updates_errors_back_off_and_the_bot_recovers(
    harsh_bot: Factory, failure: dict[str, Any]
) -> None:
    bot = await harsh_bot()
    api = bot.api
    polls = api.counts["getUpdates"]
    for _ in range(3):
        api.fail_next("getUpdates", **failure)
    api.private_message(440, "still there?")
    started = time.monotonic()
    await api.wait_for(lambda: api.sent_to(440), timeout=20)
    took = time.monotonic() - started
    await bot.shutdown()
    calls = api.counts["getUpdates"] - polls
    # Three failures, then success: 0.5 + 1 + 2 s of backoff (±25 %), never a hot loop.
    assert calls <= 6 and took >= 1.0, (calls, took)


async def test_a_server_that_does_not_long_poll_cannot_make_the_loop_spin(
    harsh_bot: Factory,
) -> None:
    bot = await harsh_bot()
    api = bot.api
    api.long_poll = False  # every getUpdates answers [] at once
    await asyncio.sleep(0.2)
    polls = api.counts["getUpdates"]
    await asyncio.sleep(2.0)
    idle_calls = api.counts["getUpdates"] - polls
    api.private_message(441, "hello")
    await api.wait_for(lambda: api.sent_to(441), timeout=10)
    await bot.shutdown()
    assert idle_calls <= 4, idle_calls  # about one a second, not hundreds


# -- order in one chat -------------------------------------------------------------------


async def test_commands_and_turns_in_one_chat_are_answered_in_their_order(
    harsh_bot: Factory,
) -> None:
    async def slow(request: ChatRequest) -> str:
        await asyncio.sleep(0.3)  # a turn is slower than a command
        text = next(m.content for m in reversed(request.messages) if m.role == "user")
        return f"You said: {text}"

    bot = await harsh_bot(Harsh(seed=3, delay_share=0.2, delay_s=(0.05, 0.3)), slow)
    api = bot.api
    script = ["/start", "first", "/help", "second", "/persona", "third", "/help"]
    for text in script:
        api.private_message(420, text)
    # /start answers twice: the persona's greeting, then what the bot keeps.
    await api.wait_for(lambda: len(api.sent_to(420)) == len(script) + 1, timeout=20)
    await bot.shutdown()
    sent = [m.text for m in api.sent_to(420)]
    kinds = [
        "greeting"
        if t == "Hi Ann!"
        else "start"
        if "I am an AI" in t
        else "turn"
        if t.startswith("You said")
        else "other"
        for t in sent
    ]
    assert kinds == ["greeting", "start", "turn", "other", "turn", "other", "turn", "other"], sent
    # Every reply went through the outbox's states: the greeting is delivered, and
    # the commands' replies, delivered, are gone from the ledger.
    outs = "select kind, status from messages where direction = 'out' order by id"
    assert await bot.rows(outs) == [
        ("greeting", "delivered"),
        *[("message", "delivered")] * 3,
    ]
    assert [t for t in sent if t.startswith("You said")] == [
        "You said: first",
        "You said: second",
        "You said: third",
    ]


# -- the harsh fake: 429s, 403s, delays --------------------------------------------------


async def test_under_a_harsh_api_every_message_is_answered_or_recorded_and_pacing_holds(
    harsh_bot: Factory,
) -> None:
    harsh = Harsh(seed=11, rate_limit_share=0.05, delay_share=0.03, delay_s=(0.5, 1.0))
    bot = await harsh_bot(harsh, pacing=TELEGRAM_PACING)
    api = bot.api
    api.blocked.update({431, 432})
    injected = [api.private_message(430 + c, f"m{k} c{c}") for k in range(2) for c in range(30)]
    db = Path(str(bot.app.settings.database.url).removeprefix("sqlite:///"))

    async def settled() -> bool:
        rows = await bot.rows(
            "select count(*) from messages where direction = 'out' "
            "and status in ('delivered', 'undeliverable')"
        )
        return bool(rows[0][0] >= len(injected))

    await _until(settled, timeout=25)
    await bot.shutdown()
    result = await asyncio.to_thread(account, db, api, injected)
    assert result.lost == [] and result.duplicates == 0
    assert result.failed == 4  # the two blocked people, two messages each
    assert api.rate_limited > 0  # the harsh fake did answer 429s, and they were waited out
    assert api.max_sends_per_second() <= 30


# -- processes killed with SIGKILL -------------------------------------------------------


@pytest.fixture
def llm() -> Any:
    with FakeOpenAIServer() as server:
        yield server


async def _inject_load(
    api: FakeTelegramAPI, chats: list[int], messages: int, rng: random.Random, *, over_s: float
) -> list[dict[str, Any]]:
    """Every chat writes `messages` messages, spread over `over_s` seconds."""
    plan = sorted((rng.uniform(0, over_s), chat, k) for chat in chats for k in range(messages))
    injected: list[dict[str, Any]] = []
    started = time.monotonic()
    for at, chat, k in plan:
        delay = at - (time.monotonic() - started)
        if delay > 0:
            await asyncio.sleep(delay)
        injected.append(api.private_message(chat, f"message {k} from {chat}"))
    return injected


async def _settled(db: Path, expected: int, timeout: float) -> None:
    """Wait until every incoming message of the ledger has reached an end state."""

    def done() -> bool:
        with sqlite3.connect(db) as con:
            rows = con.execute(
                "select "
                "(select count(*) from messages where direction = 'in' and status in "
                " ('answered', 'failed', 'expired', 'ignored')),"
                "(select count(*) from messages where direction = 'out' and status in "
                " ('generated', 'sending')),"
                "(select count(*) from inbox_events where status = 'pending')"
            ).fetchone()
        return bool(rows[0] >= expected and rows[1] == 0 and rows[2] == 0)

    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(done):
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_kill_9_at_a_random_moment_of_a_load_loses_nothing(
    tmp_path: Path, llm: FakeOpenAIServer, seed: int
) -> None:
    rng = random.Random(seed)
    harsh = Harsh(seed=seed, rate_limit_share=0.05, delay_share=0.03, delay_s=(0.2, 0.6))
    async with FakeTelegramAPI(harsh=harsh) as api:
        api.record_calls = False
        blocked = {9001 + seed}
        api.blocked.update(blocked)
        chats = [9000 + c for c in range(30)]
        config = write_config(tmp_path, llm_url=llm.base_url, api=api)
        bot = BotProcess(config, api)
        await bot.start()
        load = asyncio.create_task(_inject_load(api, chats, 3, rng, over_s=2.0))
        # A random moment of the load: after a random number of replies have left,
        # plus a random fraction of a send's time, so the kill falls anywhere.
        kill_after = rng.randint(1, len(chats) * 3 - 10)
        await api.wait_for(lambda: len(api.sent) >= kill_after, timeout=20)
        await asyncio.sleep(rng.uniform(0, 0.05))
        await bot.kill()
        sent_before = len(api.sent)
        inflight = await asyncio.to_thread(in_flight, tmp_path / "bot.db")
        injected = await load
        await bot.start()
        await _settled(tmp_path / "bot.db", len(injected), timeout=20)
        assert await bot.stop() == 0, bot.log()
        result = await asyncio.to_thread(account, tmp_path / "bot.db", api, injected)
    assert result.lost == [], (result, bot.log())
    assert result.duplicates <= inflight, (result, inflight)
    assert result.answered + result.failed == len(injected)
    assert result.failed >= 1  # the blocked person's replies: undeliverable, recorded
    assert 0 < sent_before < len(api.sent)  # killed mid-load; the rest left after the restart


async def test_a_backlog_older_than_the_staleness_limit_expires_with_one_apology_each(
    tmp_path: Path, llm: FakeOpenAIServer
) -> None:
    async with FakeTelegramAPI() as api:
        api.record_calls = False
        config = write_config(
            tmp_path, llm_url=llm.base_url, api=api, engine={"stale_after_s": 60}
        )
        bot = BotProcess(config, api)
        await bot.start()
        fresh = api.private_message(9100, "are you there?")
        await api.wait_for(lambda: api.sent_to(9100), timeout=15)
        # Killed once the reply is recorded delivered: a kill between the send and that
        # commit would repeat it, which the guarantee allows but this test is not about.
        await _settled(tmp_path / "bot.db", 1, timeout=15)
        await bot.kill()
        # Written while the bot was down, two hours ago (Telegram keeps them 24 h).
        old = int(time.time()) - 7200
        backlog = [
            api.private_message(chat, f"old {k}", extra={"date": old})
            for chat in (9101, 9102)
            for k in range(3)
        ]
        await bot.start()
        await _settled(tmp_path / "bot.db", 1 + len(backlog), timeout=20)
        assert await bot.stop() == 0, bot.log()
        result = await asyncio.to_thread(account, tmp_path / "bot.db", api, [fresh, *backlog])
    assert result.lost == [] and result.statuses["expired"] == len(backlog), result
    for chat in (9101, 9102):  # one short apology per person, not one per message
        assert [m.text for m in api.sent_to(chat)] == ["Sorry, I was away for a while."]
    assert len(api.sent_to(9100)) == 1


async def test_a_webhook_that_dies_before_answering_gets_the_update_again_and_answers_once(
    tmp_path: Path, llm: FakeOpenAIServer
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with FakeTelegramAPI() as api:
        api.record_calls = False
        config = write_config(
            tmp_path,
            llm_url=llm.base_url,
            api=api,
            telegram={
                "mode": "webhook",
                "webhook_url": f"http://127.0.0.1:{port}/telegram",
                "listen_port": port,
            },
        )
        bot = BotProcess(config, api, env={"BOT_TELEGRAM__WEBHOOK_SECRET": "s3cret-token"})
        await bot.start()
        posts: list[int] = []

        def die_on_third_post(update: dict[str, Any]) -> None:
            posts.append(update["update_id"])
            if len(posts) == 3 and bot.process is not None:
                # The post is on its way when the process dies: no answer comes back.
                loop = asyncio.get_running_loop()
                loop.call_later(0.002, os.kill, bot.process.pid, signal.SIGKILL)

        api.on_webhook_post = die_on_third_post
        injected = [api.private_message(9200 + c, f"hook {c}") for c in range(6)]
        assert bot.process is not None
        await bot.process.wait()
        assert api.updates  # Telegram still holds what was not answered 200
        await bot.start()
        await api.wait_for(lambda: not api.updates, timeout=20)
        await _settled(tmp_path / "bot.db", len(injected), timeout=20)
        assert await bot.stop() == 0, bot.log()
        result = await asyncio.to_thread(account, tmp_path / "bot.db", api, injected)
    assert result.lost == [] and result.answered == len(injected), result
    assert result.duplicates == 0
    assert len(posts) > len(set(posts))  # what the process died on was posted again
    for chat in range(9200, 9206):
        assert len(api.sent_to(chat)) == 1  # answered once


async def _bot_cli(config: Path, *args: str) -> str:
    """Run a `bot` command (a real process) against the config; its output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from bot.cli import main; main()",
        *args,
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=config.parent,
    )
    out, _ = await process.communicate()
    assert process.returncode == 0, out.decode()
    return out.decode()


async def test_a_failed_update_is_listed_and_replayed_with_bot_inbox(
    tmp_path: Path, llm: FakeOpenAIServer
) -> None:
    async with FakeTelegramAPI() as api:
        api.record_calls = False
        config = write_config(tmp_path, llm_url=llm.base_url, api=api)
        bot = BotProcess(config, api)
        await bot.start()
        poison = api.poll_message(9300)
        api.private_message(9301, "hi")
        await api.wait_for(lambda: api.sent_to(9301), timeout=15)
        await _settled(tmp_path / "bot.db", 1, timeout=10)
        assert await bot.stop() == 0, bot.log()

        listed = await _bot_cli(config, "inbox", "list", "--status", "failed", "--json")
        (row,) = [json.loads(line) for line in listed.splitlines() if line.startswith("{")]
        assert row["key"] == str(poison["update_id"]) and "cannot parse" in row["reason"]
        replayed = await _bot_cli(config, "inbox", "replay", "--failed", "--platform", "telegram")
        assert replayed.startswith("1 event(s) back to pending")

        await bot.start()  # the next start handles it again (the same library: it fails again)

        def attempts() -> int:
            with sqlite3.connect(tmp_path / "bot.db") as con:
                found = con.execute(
                    "select attempts from inbox_events where status = 'failed'"
                ).fetchall()
            return int(found[0][0]) if found else 0

        deadline = time.monotonic() + 15
        while await asyncio.to_thread(attempts) < 2:
            assert time.monotonic() < deadline, bot.log()
            await asyncio.sleep(0.1)
        assert await bot.stop() == 0, bot.log()
    assert len(api.sent_to(9301)) == 1  # the rest is not handled twice
