"""Slash commands survive a crash: an interaction is in the inbox before it is answered,
its reply stored before it is sent, and a restarted `bot run` (killed with -9) answers
once, or records why it cannot (Discord's 3 s and 15 min, which the fake enforces).
The real discord.py against tests/fakes/discord_api.py throughout."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.inbox import RawEvent
from tests.adapters.conftest import DiscordBot, DiscordBotFactory
from tests.adapters.test_discord import CONFIG, settle, until, until_rows, voiced
from tests.adapters.test_discord_durable import KILL_PERSONA, BotRun, write_run_config
from tests.fakes.discord_api import ANN, BOB, GENERAL, FakeDiscord
from tests.fakes.openai_server import FakeOpenAIServer

MANAGE_GUILD = 1 << 5


async def interaction_rows(bot: DiscordBot) -> list[tuple[Any, ...]]:
    return await bot.rows(
        "select event_key, status, reason from inbox_events "
        "where platform = 'discord' and event_key like 'interaction:%' order by id"
    )


# -- in one process ------------------------------------------------------------------------


async def test_an_interaction_is_committed_before_it_is_answered_and_answered_once(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord
) -> None:
    bot = await discord_bot(voiced, **CONFIG)
    release = asyncio.Event()
    original = bot.adapter.command
    ran: list[str] = []

    async def held(name: str, args: str, ctx: Any) -> str:
        ran.append(name)
        await release.wait()
        return str(await original(name, args, ctx))

    bot.adapter.command = held
    payload = discord_fake.interaction("help", ANN, GENERAL)
    await discord_fake.dispatch("INTERACTION_CREATE", payload)
    await until(lambda: ran)
    # The command runs; nothing was answered yet, and the raw interaction is stored.
    rows = await until_rows(
        bot, "select event_key, status, payload from inbox_events where event_key = ?",
        f"interaction:{payload['id']}",
    )  # fmt: skip
    assert rows[0][1] == "pending"
    assert json.loads(rows[0][2])["token"] == payload["token"]
    assert discord_fake.interaction_calls(payload) == []
    release.set()
    answer = (await until(lambda: discord_fake.interaction_answers(payload)))[0]
    await settle(bot)
    assert "/optout" in answer["content"] and answer["flags"] == 64
    calls = discord_fake.interaction_calls(payload)
    assert [(c.method, c.json["type"]) for c in calls] == [("POST", 4)]  # the initial answer
    assert await interaction_rows(bot) == [(f"interaction:{payload['id']}", "done", None)]
    # Delivered: the reply's text is let go.
    assert await bot.rows("select status, text, parts_sent from interaction_answers") == [
        ("delivered", "", 0)
    ]

    # Handled again (`bot inbox replay` puts it back): the reply was stored, the
    # command is not run again and nothing more is sent.
    ran.clear()
    event_id = (await bot.rows("select id from inbox_events where event_key = ?", rows[0][0]))[0][0]
    event = await bot.adapter.inbox.get(event_id)
    await bot.adapter.interactions.handle(event)
    assert ran == [] and len(discord_fake.interaction_calls(payload)) == 1


async def test_an_interaction_taken_too_late_is_failed_without_any_call(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord
) -> None:
    bot = await discord_bot(voiced, **CONFIG)
    ran: list[str] = []
    original = bot.adapter.command

    async def counted(name: str, args: str, ctx: Any) -> str:
        ran.append(name)
        return str(await original(name, args, ctx))

    bot.adapter.command = counted
    # Older than its token's 15 minutes when it arrives.
    old = discord_fake.interaction("memory", ANN, GENERAL, age_s=16 * 60)
    await discord_fake.dispatch("INTERACTION_CREATE", old)
    # Stored 5 s after it arrived (a worker far behind) and never deferred: Discord
    # would still take a callback from the fake's point of view (it was made just now),
    # but the bot knows it is too late and sends nothing.
    late = discord_fake.interaction("help", ANN, GENERAL)
    await bot.adapter.accept(
        [
            RawEvent(
                key=f"interaction:{late['id']}",
                payload=json.dumps(late),
                received_at=datetime.now(UTC) - timedelta(seconds=5),
            )
        ]
    )
    await until_rows(
        bot,
        "select 1 from inbox_events where status = 'failed' group by status having count(*) = 2",
    )
    await settle(bot)
    reasons = dict(
        await bot.rows("select event_key, reason from inbox_events where status = 'failed'")
    )
    assert reasons[f"interaction:{old['id']}"].startswith("InteractionExpired: /memory is 9")
    assert "past the 15 minutes" in reasons[f"interaction:{old['id']}"]
    assert "never deferred" in reasons[f"interaction:{late['id']}"]
    assert discord_fake.interaction_calls(old) == [] and discord_fake.interaction_calls(late) == []
    assert ran == []


async def test_hostile_interactions_cost_one_failure_row_each_and_block_nothing(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord
) -> None:
    bot = await discord_bot(voiced, **CONFIG)
    fake = discord_fake

    def made(name: str = "forget", **options: Any) -> dict[str, Any]:
        return fake.interaction(name, ANN, GENERAL, options or {"what": "1"})

    no_token = made()
    del no_token["token"]
    no_data = made()
    del no_data["data"]
    no_name = made()
    del no_name["data"]["name"]
    options_not_a_list = made()
    options_not_a_list["data"]["options"] = {"what": "1"}
    bad_user = fake.interaction("ban", ANN, GENERAL, {"user": BOB}, permissions=MANAGE_GUILD)
    bad_user["data"]["options"][0]["value"] = "@everyone"
    no_user = fake.interaction("mute", ANN, GENERAL, {"user": BOB}, permissions=MANAGE_GUILD)
    no_user["data"]["options"] = []
    odd_id = {**made(), "id": "12ab"}
    huge = made(what="x" * 100_000)  # over the inbox's 64 KiB: stored cut, failed
    poison = [no_token, no_data, no_name, options_not_a_list, bad_user, no_user, odd_id, huge]
    for data in poison:
        await fake.dispatch("INTERACTION_CREATE", data)
    # Answered, bounded and repaired: a long option, a lone surrogate, RTL marks, NUL.
    long_arg = made(what="y" * 20_000)
    odd_text = fake.interaction("timezone", ANN, GENERAL, {"zone": "\ud800Europe/\u202eBerlin\x00"})
    good = fake.interaction("help", ANN, GENERAL)
    for data in (long_arg, odd_text, good):
        await fake.dispatch("INTERACTION_CREATE", data)
    for data in (long_arg, odd_text, good):
        await until(lambda data=data: fake.interaction_answers(data))
    await settle(bot)
    assert "/optout" in fake.interaction_answers(good)[0]["content"]
    assert "not a time zone" in fake.interaction_answers(odd_text)[0]["content"]
    assert len(fake.interaction_answers(long_arg)[0]["content"]) <= 2000
    statuses = await bot.rows(
        "select status, count(*) from inbox_events where event_key like 'interaction:%' "
        "group by 1 order by 1"
    )
    assert statuses == [("done", 3), ("failed", len(poison))]
    reasons = [
        r[0] for r in await bot.rows("select reason from inbox_events where status = 'failed'")
    ]
    assert sum(r.startswith("payload of") and "limit" in r for r in reasons) == 1  # huge
    assert all(r.startswith(("UnparsableInteraction", "payload of")) for r in reasons), reasons
    assert await bot.rows("select count(*) from failures") == [(0,)]
    for data in poison:  # nothing sent for any of them
        if "token" in data:
            assert fake.interaction_calls(data) == []


async def test_a_recovery_queued_while_a_reply_is_sent_leaves_it_alone(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    import adapters._discord_interactions

    monkeypatch.setattr(adapters._discord_interactions, "ANSWER_WITHIN_S", 0.05)
    fake = discord_fake
    bot = await discord_bot(voiced, **CONFIG)
    original = bot.adapter.command

    async def slow(name: str, args: str, ctx: Any) -> str:
        await asyncio.sleep(0.3)
        return str(await original(name, args, ctx))

    bot.adapter.command = slow
    fake.webhooks_held = True
    payload = fake.interaction("help", ANN, GENERAL)
    await fake.dispatch("INTERACTION_CREATE", payload)
    await until(lambda: fake.held == 1)  # the edit of @original is on its way
    # Another worker died meanwhile: its adoption queues recovery in this process too.
    assert await bot.adapter.interactions.recover(bot.adapter.worker) == 1
    await asyncio.sleep(0.3)
    assert fake.held == 1
    fake.release_held(answer=True)
    await until(lambda: fake.interaction_answers(payload))
    await settle(bot)
    assert [c.method for c in fake.interaction_calls(payload)] == ["POST", "PATCH"]


class _Behind:
    """The worker's inbox, except that it finds nothing pending (a worker far behind)."""

    def __init__(self, inbox: Any) -> None:
        self._inbox = inbox

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inbox, name)

    async def pending(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []


async def test_an_interaction_not_taken_at_a_stop_is_deferred_and_answered_after_it(
    discord_bot: DiscordBotFactory, discord_fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = discord_fake
    bot = await discord_bot(voiced, **CONFIG)
    monkeypatch.setattr(bot.adapter.worker, "inbox", _Behind(bot.adapter.worker.inbox))
    payload = fake.interaction("help", ANN, GENERAL)
    await fake.dispatch("INTERACTION_CREATE", payload)
    await until_rows(bot, "select 1 from inbox_events where event_key like 'interaction:%'")
    await bot.shutdown()  # the worker stops without it: deferred, left pending
    assert [c.json for c in fake.interaction_calls(payload)] == [{"type": 5, "data": {"flags": 64}}]
    again = await discord_bot(voiced, **CONFIG)
    answers = await until(lambda: fake.interaction_answers(payload))
    await settle(again)
    assert len(answers) == 1 and "/optout" in answers[0]["content"]
    assert [c.method for c in fake.interaction_calls(payload)] == ["POST", "PATCH"]
    assert await interaction_rows(again) == [(f"interaction:{payload['id']}", "done", None)]


# -- a real `bot run`, killed with -9 -----------------------------------------------------------


def _persona(n: int) -> bytes:
    return KILL_PERSONA.replace("id: tester", f"id: new{n}").replace("Tess", f"Nova{n}").encode()


def _db(tmp_path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "bot.db") as con:
        return con.execute(sql, params).fetchall()


async def _db_until(tmp_path: Path, sql: str, *params: Any, timeout: float = 15.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        rows = _db(tmp_path, sql, *params)
        if rows:
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"no rows for {sql!r} within {timeout} s")
        await asyncio.sleep(0.02)


def _fetches(fake: FakeDiscord, name: str) -> int:
    return sum(1 for c in fake.calls if c.path == f"/attachments/{name}")


async def _crash_with_three_in_flight(
    tmp_path: Path, fake: FakeDiscord, bot: BotRun
) -> tuple[list[dict[str, Any]], bool]:
    """Three uploads in flight at a kill -9: (1) deferred, its reply stored, the edit
    of @original in flight; (2) deferred, the command still running; (3) the command
    running, not yet deferred. Returns their interactions, and whether (3) was deferred
    after all (a machine too slow to kill it within its 2 s: then it is (2)'s case)."""
    sent = []
    for n in (1, 2, 3):
        attachment = fake.add_attachment(f"new{n}.yaml", _persona(n))
        fake.attachment_delays[f"new{n}.yaml"] = 2.5 if n == 1 else 120.0
        sent.append(
            fake.interaction(
                "persona", ANN, GENERAL, permissions=MANAGE_GUILD, attachment=attachment
            )
        )
    fake.webhooks_held = True
    for data in sent[:2]:
        await fake.dispatch("INTERACTION_CREATE", data)
    deadline = time.monotonic() + 30
    while fake.held < 1 or sum(
        1 for d in sent[:2] for c in fake.interaction_calls(d) if c.path.endswith("/callback")
    ) < 2:  # fmt: skip
        assert time.monotonic() < deadline, bot.log()
        await asyncio.sleep(0.02)
    await fake.dispatch("INTERACTION_CREATE", sent[2])
    await _db_until(tmp_path, "select 1 from inbox_events where event_key = ?",
                    f"interaction:{sent[2]['id']}")  # fmt: skip
    await bot.kill()  # well within (3)'s 2 s: it was never deferred
    fake.release_held(answer=False)  # the edit in flight never reached Discord
    fake.attachment_delays.clear()
    return sent, bool(fake.interaction_calls(sent[2]))


async def test_kill_9_after_the_defer_the_restart_answers_each_once(tmp_path: Path) -> None:
    with FakeOpenAIServer() as llm:
        async with FakeDiscord() as fake:
            bot = BotRun(write_run_config(tmp_path, llm_url=llm.base_url, fake=fake), fake)
            await bot.start()
            sent, slow = await _crash_with_three_in_flight(tmp_path, fake, bot)
            stored, running, undeferred = sent
            fetched = _fetches(fake, "new3.yaml")  # 0 or 1: the kill may come before it
            deferred = [(1, stored), (2, running), *([(3, undeferred)] if slow else [])]
            assert sorted(_db(tmp_path, "select status from interaction_answers")) == sorted(
                [("sending",), ("deferred",), *([("deferred",)] if slow else [])]
            )
            await asyncio.sleep(3.0)  # a restart past (3)'s 3 s, however fast it is
            await bot.start()
            for _, data in deferred:
                await until(lambda data=data: fake.interaction_answers(data), timeout=30)
            key = f"interaction:{undeferred['id']}"
            if not slow:
                await _db_until(tmp_path, "select 1 from inbox_events where event_key = ? "
                                "and status = 'failed'", key)  # fmt: skip
            await asyncio.sleep(1.0)  # anything sent twice would be by now
            assert await bot.stop() == 0

    # Each deferred one: exactly one answer, the edit that replaced "thinking…".
    for n, data in deferred:
        answers = fake.interaction_answers(data)
        assert len(answers) == 1, answers
        assert answers[0]["content"].startswith(f"Nova{n} (new{n}) is now version")
        edits = [c for c in fake.interaction_calls(data) if c.status < 300 and c.method == "PATCH"]
        assert len(edits) == 1
    # (1)'s reply was stored: its command ran once. (2) was cut short before its reply
    # was stored: it ran again, to one answer.
    assert _fetches(fake, "new1.yaml") == 1 and _fetches(fake, "new2.yaml") == 2
    assert len(
        _db(tmp_path, "select 1 from interaction_answers where status = 'delivered'")
    ) == len(deferred)
    if slow:
        return
    # (3) was never deferred: after the restart Discord takes no answer, none was sent,
    # and its command did not run again.
    assert fake.interaction_calls(undeferred) == []
    assert _fetches(fake, "new3.yaml") == fetched
    reason = _db(tmp_path, "select reason from inbox_events where event_key = ?", key)[0][0]
    assert (
        reason.startswith("InteractionExpired: /persona was taken") and "never deferred" in reason
    )
    assert _db(tmp_path, "select status, text from interaction_answers") == [
        ("delivered", ""),
        ("delivered", ""),
    ]


async def test_kill_9_and_a_restart_past_15_minutes_sends_nothing(tmp_path: Path) -> None:
    with FakeOpenAIServer() as llm:
        async with FakeDiscord() as fake:
            bot = BotRun(write_run_config(tmp_path, llm_url=llm.base_url, fake=fake), fake)
            await bot.start()
            (stored, running, _), _ = await _crash_with_three_in_flight(tmp_path, fake, bot)
            before = {d["id"]: len(fake.interaction_calls(d)) for d in (stored, running)}
            # The bot stays down for 16 minutes: the clock of what it stored moves back.
            gone = (datetime.now(UTC) - timedelta(minutes=16)).replace(tzinfo=None)
            with sqlite3.connect(tmp_path / "bot.db") as con:
                con.execute("update interaction_answers set created_at = ?", (gone.isoformat(" "),))
                con.execute(
                    "update inbox_events set received_at = ? where event_key like 'interaction:%'",
                    (gone.isoformat(" "),),
                )
            await bot.start()
            await _db_until(
                tmp_path, "select 1 from interaction_answers where status = 'expired' "
                "group by status having count(*) >= 2",
            )  # fmt: skip
            key = f"interaction:{running['id']}"
            await _db_until(tmp_path, "select 1 from inbox_events where event_key = ? "
                            "and status = 'failed'", key)  # fmt: skip
            await asyncio.sleep(1.0)
            assert await bot.stop() == 0

    for data in (stored, running):  # not one call more than before the kill
        assert len(fake.interaction_calls(data)) == before[data["id"]]
    assert _fetches(fake, "new1.yaml") == 1 and _fetches(fake, "new2.yaml") == 1
    expired = dict(
        _db(
            tmp_path, "select e.event_key, a.status || ': ' || a.reason from interaction_answers a "
            "join inbox_events e on e.id = a.event_id",
        )
    )  # fmt: skip
    # (1): its reply was stored; (2): deferred, its command had not finished.
    assert "expired: not sent: " in expired[f"interaction:{stored['id']}"]
    assert "past its token's 15 minutes" in expired[f"interaction:{stored['id']}"]
    assert "past the 15 minutes its token answers for" in expired[f"interaction:{running['id']}"]
    reason = _db(tmp_path, "select reason from inbox_events where event_key = ?", key)[0][0]
    assert "past the 15 minutes its token answers for" in reason
