"""The shared delivery policy, through a scripted platform (the real platforms are
tested end to end against fake servers in test_telegram.py and test_discord.py)."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest

from adapters.base import (
    Adapter,
    AdapterServices,
    DeliveryError,
    PacingPolicy,
    RateLimited,
    Unreachable,
    split_message,
)
from bot.app import App, open_app
from bot.config import load_settings
from bot.llm.mock import MockBackend
from bot.messages import Actor, Incoming, Outgoing, Scope
from tests.test_engine import PERSONA


class ScriptedPlatform(Adapter):
    platform = "test"
    max_message_length = 50
    typing_interval_s = 0.05
    pacing = PacingPolicy(
        per_chat_interval_s=0.05, group_per_minute=1000, global_per_second=1000, per_chat_burst=1
    )

    def __init__(self, services: AdapterServices, script: list[Exception | None]) -> None:
        super().__init__(services)
        self.script = script
        self.sent: list[tuple[float, str, str]] = []
        self.typing_calls = 0

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()

    async def _deliver(self, outgoing: Outgoing, text: str) -> str | None:
        step = self.script.pop(0) if self.script else None
        if step is not None:
            raise step
        self.sent.append((time.monotonic(), outgoing.scope.channel, text))
        return f"m{len(self.sent)}"

    async def _send_typing(self, scope: Scope) -> None:
        self.typing_calls += 1


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    settings = load_settings(
        None,
        {"database": {"url": f"sqlite:///{tmp_path}/a.db"}, "personas": {"dirs": [str(personas)]}},
    )

    async def slow(req: Any) -> str:
        await asyncio.sleep(0.2)
        return "First sentence here. " * 6

    async with open_app(settings, backend=MockBackend(slow), watch=False) as opened:
        yield opened


def incoming(user: str = "u1", channel: str = "c1") -> Incoming:
    scope = Scope(platform="test", channel=channel, user=user, persona="tester")
    return Incoming(
        scope=scope, actor=Actor(platform="test", id=user, display_name="Ann"), text="hi"
    )


def db(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "a.db") as conn:
        return conn.execute(sql).fetchall()


async def test_reply_is_split_paced_delivered_and_typing_shown(app: App, tmp_path: Path) -> None:
    platform = ScriptedPlatform(app.services, [])
    [reply] = await platform.answer(incoming())
    parts = [text for _, _, text in platform.sent]
    assert len(parts) > 1 and all(len(p) <= 50 for p in parts)
    assert " ".join(parts) == reply.text
    gaps = [b[0] - a[0] for a, b in zip(platform.sent, platform.sent[1:], strict=False)]
    assert min(gaps) >= 0.045  # per-chat pacing
    assert platform.typing_calls >= 2  # renewed while the 0.2 s generation ran
    assert db(
        tmp_path, "select status, platform_message_id from messages where direction='out'"
    ) == [("delivered", "m1")]


async def test_rate_limit_is_retried_after_retry_after(app: App) -> None:
    platform = ScriptedPlatform(app.services, [RateLimited(0.1)])
    started = time.monotonic()
    await platform.send(Outgoing(scope=incoming().scope, text="hello"))
    assert [t for _, _, t in platform.sent] == ["hello"]
    assert platform.sent[0][0] - started >= 0.1


async def test_persistent_rate_limit_gives_up_and_records(app: App, tmp_path: Path) -> None:
    platform = ScriptedPlatform(app.services, [RateLimited(0.01)] * 10)
    with pytest.raises(DeliveryError, match="still rate limited after 3 retries"):
        await platform.send(Outgoing(scope=incoming().scope, text="hello"))
    assert len(platform.script) == 6  # 1 try + 3 retries, then it stopped
    assert db(tmp_path, "select stage from failures") == [("deliver",)]


async def test_unreachable_person_is_marked_and_not_retried(app: App, tmp_path: Path) -> None:
    platform = ScriptedPlatform(app.services, [Unreachable("bot was blocked by the user")])
    replies = await platform.answer(incoming(user="blocker"))
    assert len(replies) == 1 and platform.sent == [] and platform.script == []
    assert db(
        tmp_path, "select unreachable_reason from users where platform_user_id='blocker'"
    ) == [("bot was blocked by the user",)]
    assert db(tmp_path, "select stage, reason from failures") == [
        ("deliver", "bot was blocked by the user")
    ]
    assert db(tmp_path, "select status from messages where direction='out'") == [("undeliverable",)]
    assert not await app.people.is_reachable("test", "blocker")
    await app.people.mark_reachable("test", "blocker")
    assert await app.people.is_reachable("test", "blocker")


async def test_different_chats_are_not_held_up_by_each_others_pacing(app: App) -> None:
    platform = ScriptedPlatform(app.services, [])
    platform.pacer.policy = PacingPolicy(per_chat_interval_s=0.5, global_per_second=1000)
    started = time.monotonic()
    await asyncio.gather(
        *(
            platform.send(Outgoing(scope=incoming(channel=f"c{i}").scope, text="x"))
            for i in range(5)
        )
    )
    assert time.monotonic() - started < 0.4


def test_split_never_cuts_inside_a_code_block_when_it_can_avoid_it() -> None:
    code = "```python\n" + "\n".join(f"print({i})" for i in range(5)) + "\n```"
    text = "Here is how.\n\n" + code + "\n\nThat is all, and that is that."
    parts = split_message(text, 80)
    assert len(parts) == 2 and code in parts[0]  # the block stays whole
    assert all(p.count("```") % 2 == 0 for p in parts)
    parts = split_message("Intro words here.\n\n" + code, 60)
    assert code in parts  # cut before the block rather than inside it


def test_split_code_block_longer_than_the_limit_is_refenced() -> None:
    code = "```\n" + "\n".join(f"line number {i}" for i in range(40)) + "\n```"
    parts = split_message(code, 100)
    assert len(parts) > 1 and all(len(p) <= 100 for p in parts)
    assert all(p.startswith("```") and p.endswith("```") for p in parts)
    joined = "\n".join(line for p in parts for line in p.splitlines() if line != "```")
    assert joined == "\n".join(f"line number {i}" for i in range(40))


# -- pacing on a virtual clock (no sleeping) -------------------------------------------


class VirtualClock:
    """Time that moves only when every task waits: the earliest sleeper wakes next."""

    def __init__(self) -> None:
        self.t = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        import heapq

        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (self.t + max(seconds, 0.0), self._seq, future))
        await future

    async def run(self, *aws: Any) -> list[Any]:
        import heapq

        tasks = [asyncio.ensure_future(a) for a in aws]
        while not all(t.done() for t in tasks):
            for _ in range(50):  # let every runnable task reach its next wait
                await asyncio.sleep(0)
            if self._sleepers:
                when, _, future = heapq.heappop(self._sleepers)
                self.t = max(self.t, when)
                future.set_result(None)
        return [t.result() for t in tasks]


def most_in_any_window(times: list[float], period: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= period - 1e-9:
            start += 1
        best = max(best, end - start + 1)
    return best


TELEGRAMISH = PacingPolicy(
    per_chat_interval_s=1.0, group_per_minute=20, global_per_second=30, per_chat_burst=3
)


async def test_a_burst_never_sends_more_than_the_overall_limit_in_any_second() -> None:
    from adapters.base import Pacer

    clock = VirtualClock()
    pacer = Pacer(TELEGRAMISH, clock=clock)
    granted: list[float] = []

    async def one(chat: str) -> None:
        await pacer.wait(chat, group=False)
        granted.append(clock.now())

    # 300 private chats x 5 messages, all at once.
    await clock.run(*(one(f"c{i}") for i in range(300) for _ in range(5)))
    assert len(granted) == 1500
    assert most_in_any_window(granted, 1.0) <= 30
    # Evenly spaced: the platform sees about 30 a second whatever jitter it adds.
    assert min(b - a for a, b in itertools.pairwise(sorted(granted))) >= 1 / 30 - 1e-9
    # ... and the bot itself is not what holds it below the ceiling.
    assert max(granted) <= 1500 / 30 + 1


async def test_telegrams_reserve_keeps_any_second_at_30_when_sends_arrive_with_jitter() -> None:
    import random

    from adapters.base import Pacer
    from adapters.telegram import TELEGRAM_PACING

    clock = VirtualClock()
    pacer = Pacer(TELEGRAM_PACING, clock=clock)
    granted: list[float] = []

    async def one(chat: str) -> None:
        await pacer.wait(chat, group=False)
        granted.append(clock.now())

    await clock.run(*(one(f"c{i}") for i in range(600) for _ in range(2)))
    assert len(granted) == 1200
    rng = random.Random(5)
    for _ in range(20):  # each send reaches Telegram 50 ms later, give or take 20 ms
        arrived = [t + 0.05 + rng.uniform(-0.02, 0.02) for t in granted]
        assert most_in_any_window(arrived, 1.0) <= 30
    # The reserve costs little: the bot still sustains well over 28 replies a second.
    rate = (len(granted) - 1) / (max(granted) - min(granted))
    assert 28.2 <= rate <= 29.5, rate


async def test_one_chat_gets_a_short_burst_then_one_per_second() -> None:
    from adapters.base import Pacer

    clock = VirtualClock()
    pacer = Pacer(TELEGRAMISH, clock=clock)
    granted: list[float] = []

    async def one() -> None:
        await pacer.wait("c1", group=False)
        granted.append(clock.now())

    await clock.run(*(one() for _ in range(8)))
    assert granted[2] < 0.1  # the burst, spaced only by the overall budget (1/30 s)
    assert all(b - a >= 1 / 30 - 1e-9 for a, b in itertools.pairwise(granted))
    gaps = [b - a for a, b in itertools.pairwise(granted[2:])]
    assert all(abs(g - 1.0) < 0.07 for g in gaps), granted


async def test_a_group_gets_at_most_twenty_a_minute() -> None:
    from adapters.base import Pacer

    clock = VirtualClock()
    pacer = Pacer(TELEGRAMISH, clock=clock)
    granted: list[float] = []

    async def one() -> None:
        await pacer.wait("g1", group=True)
        granted.append(clock.now())

    await clock.run(*(one() for _ in range(45)))
    assert most_in_any_window(granted, 60.0) <= 20
    assert 60.0 <= max(granted) <= 125.0


async def test_a_429_pauses_its_chat_for_retry_after_and_is_counted() -> None:
    from adapters.base import Pacer

    clock = VirtualClock()
    pacer = Pacer(TELEGRAMISH, clock=clock)
    assert pacer.rate_limited("c1", 7.0) == 7.0
    assert pacer.rate_limited("c2", 10_000.0) == TELEGRAMISH.max_retry_after_s  # bounded
    granted: dict[str, float] = {}

    async def one(chat: str) -> None:
        await pacer.wait(chat, group=False)
        granted[chat] = clock.now()

    await clock.run(one("c1"), one("c3"))
    assert granted == {"c3": 0.0, "c1": 7.0}  # other chats go on meanwhile
    assert pacer.stats.rate_limited == 2
    pacer.rate_limited(None, 2.0)  # a global one holds everything
    await clock.run(one("c4"))
    assert granted["c4"] == 9.0


async def test_typing_never_takes_a_replys_capacity_and_is_skipped_under_backlog() -> None:
    from adapters.base import Pacer

    clock = VirtualClock()
    pacer = Pacer(TELEGRAMISH, clock=clock)
    # Idle: typing may use at most half the overall budget of a second.
    allowed = sum(pacer.try_typing() for _ in range(100))
    assert allowed == 15 and pacer.stats.typing_skipped == 85
    clock.t += 1.0
    # A backlog of replies: no typing at all while they wait.
    gate = asyncio.Event()
    seen: list[bool] = []

    async def reply(chat: str) -> None:
        await pacer.wait(chat, group=False)

    async def typist() -> None:
        await clock.sleep(0.05)  # the replies are queued by now
        while not gate.is_set():
            seen.append(pacer.try_typing())
            await clock.sleep(0.1)

    async def burst() -> None:
        await asyncio.gather(*(reply(f"c{i}") for i in range(200)))
        gate.set()

    await clock.run(burst(), typist())
    assert seen and not any(seen[:-1]), seen  # skipped while replies queued


async def test_a_stored_reply_resumes_from_the_first_part_not_confirmed(
    app: App, tmp_path: Path
) -> None:
    from bot.memory.ledger import ReplyRecord

    platform = ScriptedPlatform(app.services, [])
    stored = await app.ledger.record_incoming(incoming(), "hi")
    text = "First sentence here. " * 6
    mid = await app.ledger.record_reply(
        ReplyRecord(
            conversation_id=stored.conversation_id,
            user_id=stored.user_id,
            reply_to_id=stored.message_id,
            text=text,
            persona_id="tester",
        )
    )
    parts = split_message(text, platform.max_message_length)
    assert len(parts) == 3
    out = Outgoing(scope=incoming().scope, text=text, message_id=mid)
    ids = await platform.send(out, first_part=2)
    assert [t for _, _, t in platform.sent] == parts[2:] and ids == ["m1"]
    assert db(tmp_path, f"select status, parts_sent from messages where id = {mid}") == [
        ("delivered", 3)
    ]
    assert Adapter.part_nonce(out, 2) == f"{mid}.2"
    assert Adapter.part_nonce(Outgoing(scope=out.scope, text="x"), 0) is None


async def test_a_send_is_recorded_as_sending_before_its_first_part_leaves(
    app: App, tmp_path: Path
) -> None:
    from bot.memory.ledger import ReplyRecord

    seen: list[Any] = []

    class Watching(ScriptedPlatform):
        async def _deliver(self, outgoing: Outgoing, text: str) -> str | None:
            seen.append(
                db(tmp_path, f"select status, parts_sent from messages where id = {mid}")[0]
            )
            return await super()._deliver(outgoing, text)

    platform = Watching(app.services, [])
    stored = await app.ledger.record_incoming(incoming(), "hi")
    text = "First sentence here. " * 6
    mid = await app.ledger.record_reply(
        ReplyRecord(
            conversation_id=stored.conversation_id,
            user_id=stored.user_id,
            reply_to_id=stored.message_id,
            text=text,
            persona_id="tester",
        )
    )
    await platform.send(Outgoing(scope=incoming().scope, text=text, message_id=mid))
    assert seen == [("sending", 0), ("sending", 1), ("sending", 2)]


async def test_no_typing_while_the_inbox_has_a_backlog(app: App) -> None:
    class Busy:
        backlog = 10_000  # more than a second of sends at this pacing

    platform = ScriptedPlatform(app.services, [])
    platform.worker = Busy()  # type: ignore[assignment]
    async with platform.typing(incoming().scope):
        await asyncio.sleep(0.2)
    assert platform.typing_calls == 0 and platform.pacer.stats.typing_skipped >= 2
    platform.worker = None
    async with platform.typing(incoming().scope):
        await asyncio.sleep(0.12)
    assert platform.typing_calls >= 2


async def test_typing_stops_with_its_turn_even_when_the_platform_call_swallows_the_cancel(
    app: App,
) -> None:
    # Python 3.11's asyncio.wait_for returns normally when the cancel arrives as the
    # request ends (bot/aio.py): a typing loop that relied on the cancel alone went on
    # for good, and a turn waiting for it to end held its chat's lane.
    class Swallowing(ScriptedPlatform):
        async def _send_typing(self, scope: Scope) -> None:
            self.typing_calls += 1
            with suppress(asyncio.CancelledError):  # what the lost cancel looks like
                await asyncio.sleep(0.02)

    platform = Swallowing(app.services, [])
    started = time.monotonic()
    async with platform.typing(incoming().scope):
        while platform.typing_calls == 0:
            await asyncio.sleep(0.005)
    assert time.monotonic() - started < 5  # the turn was not held
    calls = platform.typing_calls
    await asyncio.sleep(0.3)  # six typing intervals
    assert platform.typing_calls == calls  # and the indicator stopped with it
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "typing-test"]
