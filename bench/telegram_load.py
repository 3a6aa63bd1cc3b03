"""Telegram under Telegram's own limits: a burst, and kill -9 in the middle of one.

`run_burst`: every message at once (not paced by people). The fake Bot API runs in
a child process with the people, adds `latency_ms` to every call and answers a
share of sends 429 with `retry_after`; the bot (real adapter, real pacing: ~30
sends/s overall, ~1/s per chat) runs in this process with an instant backend.

`run_kill`: `bot run` as a child process (tests/adapters/_telegram_process.py) on a
SQLite file, against the same harsh fake in this process and the fake OpenAI
server; the burst goes in, the bot is killed with SIGKILL at a seeded random
moment, restarted on the same file, and every message is accounted for.

Both report replies/s (overall, and sustained: the middle 80 % of replies), the
most sends in any one second, latency p50/p99 from update to send, lost and
duplicated. Used by bench/platform_load.py --burst / --kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import random
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench._platform_common import percentile

__all__ = ["run_burst", "run_kill"]

REPO = Path(__file__).resolve().parent.parent


def _rates(reply_times: list[float], started: float) -> dict[str, float]:
    """Replies/s over the whole run and over its middle 80 % (the sustained rate)."""
    times = sorted(reply_times)
    if not times:
        return {"replies_per_s": 0.0, "sustained_replies_per_s": 0.0}
    overall = len(times) / max(1e-9, times[-1] - started)
    lo, hi = int(len(times) * 0.1), int(len(times) * 0.9) - 1
    sustained = (hi - lo) / (times[hi] - times[lo]) if hi > lo and times[hi] > times[lo] else 0.0
    return {"replies_per_s": round(overall, 1), "sustained_replies_per_s": round(sustained, 1)}


def _numbers(
    *,
    latencies: list[float],
    reply_times: list[float],
    started: float,
    max_sends: int,
    sent: int,
) -> dict[str, Any]:
    return {
        "messages_sent": sent,
        "replies_delivered": len(reply_times),
        **_rates(reply_times, started),
        "max_sends_in_one_second": max_sends,
        "latency_p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "latency_p99_ms": round(percentile(latencies, 99) * 1000, 1),
    }


def _harsh(seed: int, latency_ms: float, share_429: float) -> Any:
    from tests.fakes.telegram_api import Harsh

    return Harsh(seed=seed, rate_limit_share=share_429, latency_s=latency_ms / 1000)


# -- burst: the bot in this process, the fake and the people in a child ------------------


def _burst_child(
    conn: Connection,
    people: int,
    messages: int,
    seed: int,
    latency_ms: float,
    share_429: float,
    rate: float | None,
) -> None:
    from tests.fakes.telegram_api import FakeTelegramAPI, SentMessage

    async def main() -> None:
        injected: dict[int, list[float]] = {}
        replies: dict[int, int] = {}
        latencies: list[float] = []
        reply_times: list[float] = []
        total = people * messages
        done = asyncio.Event()
        async with FakeTelegramAPI(harsh=_harsh(seed, latency_ms, share_429)) as api:
            api.record_calls = False

            def on_sent(sent: SentMessage) -> None:
                index = replies.get(sent.chat_id, 0)
                times = injected.get(sent.chat_id, [])
                if index < len(times):
                    latencies.append(sent.at - times[index])
                replies[sent.chat_id] = index + 1
                reply_times.append(sent.at)
                if len(reply_times) >= total:
                    done.set()

            api.on_sent = on_sent
            conn.send({"token": api.token, "base_url": api.base_url})
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, conn.recv)  # "go"
            started = time.monotonic()
            count = 0
            for k in range(messages):  # each person's in order; everyone at once or paced
                for user in range(10_000, 10_000 + people):
                    if rate is not None:
                        await asyncio.sleep(max(0.0, started + count / rate - time.monotonic()))
                    count += 1
                    injected.setdefault(user, []).append(time.monotonic())
                    api.private_message(user, f"message {k + 1} from person {user}")
            budget = total / 20 + 60
            stop = loop.run_in_executor(None, conn.poll, budget)
            finished = asyncio.ensure_future(done.wait())
            await asyncio.wait({finished, stop}, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.sleep(1.0)  # a duplicate would come now
            conn.send(
                {
                    **_numbers(
                        latencies=latencies,
                        reply_times=reply_times,
                        started=started,
                        max_sends=api.max_sends_per_second(),
                        sent=total,
                    ),
                    "rate_limited_429": api.rate_limited,
                    "send_attempts": len(api.send_attempts),
                    "typing_actions": len(api.actions),
                    "duplicated": sum(max(0, n - messages) for n in replies.values()),
                    "people_without_all_replies": sum(
                        1 for u in injected if replies.get(u, 0) < messages
                    ),
                }
            )
            await loop.run_in_executor(None, conn.recv)  # "stop"

    asyncio.run(main())


async def run_burst(
    people: int,
    messages: int,
    *,
    seed: int = 7,
    latency_ms: float = 50,
    share_429: float = 0.02,
    rate: float | None = None,
) -> dict[str, Any]:
    """The burst run (with `rate`, messages arrive at that steady rate instead: a load
    below Telegram's ceiling, for the latency target); returns its numbers."""
    import dataclasses

    from adapters.telegram import TelegramAdapter
    from bot.app import open_app
    from bot.config import TelegramSettings, load_settings
    from bot.inbox import Inbox
    from bot.llm.mock import MockBackend
    from bot.logs import configure_logging

    configure_logging(level="WARNING", fmt="console", secrets=[])
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    process = ctx.Process(
        target=_burst_child,
        args=(child, people, messages, seed, latency_ms, share_429, rate),
        daemon=True,
    )
    process.start()
    loop = asyncio.get_running_loop()
    fake = await loop.run_in_executor(None, parent.recv)
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            None,
            {
                "database": {"url": f"sqlite:///{tmp}/burst.db"},
                "personas": {"dirs": [str(REPO / "personas")], "watch": False},
                "llm": {"max_concurrency": 1000},
                "memory": {"enabled": False},
                "logging": {"level": "WARNING"},
                # The pacer is what this measures: every message answered by itself,
                # as if each person's messages came one at a time.
                "engine": {"coalesce_bursts": False},
            },
        )
        telegram = TelegramSettings.model_validate(
            {**settings.telegram.model_dump(), "token": fake["token"], "base_url": fake["base_url"]}
        )
        async with open_app(settings, backend=MockBackend(), watch=False) as app:
            services = app.services
            if services.inbox is None:
                services = dataclasses.replace(services, inbox=Inbox(app.db))
            adapter = TelegramAdapter(services, telegram, default_persona="samantha")
            stop = asyncio.Event()
            runner = asyncio.create_task(adapter.run(stop))
            await asyncio.wait_for(adapter.ready.wait(), 30)
            cpu0 = time.process_time()
            parent.send("go")
            report: dict[str, Any] = await loop.run_in_executor(None, parent.recv)
            cpu = time.process_time() - cpu0
            stop.set()
            await runner
            parent.send("stop")
            lost = await _ledger_lost(app, people * messages)
    process.join(10)
    return {
        "mode": "burst" if rate is None else f"steady {rate:g}/s",
        "people": people,
        "messages_per_person": messages,
        "fake_latency_ms": latency_ms,
        "fake_429_share": share_429,
        **report,
        "bot_cpu_s": round(cpu, 2),
        **lost,
    }


async def _ledger_lost(app: Any, sent: int) -> dict[str, int]:
    """Every message sent must be stored and answered, or have a recorded failure."""

    def work(conn: Any) -> tuple[int, int, int, int]:
        row = conn.exec_driver_sql(
            "select "
            " (select count(*) from messages where direction = 'in'),"
            " (select count(*) from messages where direction = 'in' and status = 'answered'),"
            " (select count(*) from messages where direction = 'out' and status = 'delivered'),"
            " (select count(*) from messages where direction = 'in' "
            "   and status in ('failed', 'expired'))"
        ).one()
        return int(row[0]), int(row[1]), int(row[2]), int(row[3])

    stored, answered, delivered, failed = await app.db.run(work)
    accounted = min(answered, delivered) + failed
    return {"stored": stored, "failed": failed, "lost": max(0, sent - accounted)}


# -- kill: `bot run` as a child, killed and restarted ---------------------------------------


async def run_kill(
    people: int,
    messages: int,
    *,
    seed: int = 7,
    latency_ms: float = 50,
    share_429: float = 0.02,
) -> dict[str, Any]:
    """The kill run; returns its numbers."""
    from tests.adapters._telegram_process import BotProcess, account, in_flight, write_config
    from tests.fakes.openai_server import FakeOpenAIServer
    from tests.fakes.telegram_api import FakeTelegramAPI, SentMessage

    rng = random.Random(seed)
    total = people * messages
    with tempfile.TemporaryDirectory() as tmp_name, FakeOpenAIServer() as llm:
        tmp = Path(tmp_name)
        async with FakeTelegramAPI(harsh=_harsh(seed, latency_ms, share_429)) as api:
            api.record_calls = False
            injected_at: dict[int, list[float]] = {}
            replies: dict[int, int] = {}
            latencies: list[float] = []
            reply_times: list[float] = []
            all_in = asyncio.Event()

            def on_sent(sent: SentMessage) -> None:
                index = replies.get(sent.chat_id, 0)
                times = injected_at.get(sent.chat_id, [])
                if index < len(times):
                    latencies.append(sent.at - times[index])
                replies[sent.chat_id] = index + 1
                reply_times.append(sent.at)
                if len(reply_times) >= total:
                    all_in.set()

            api.on_sent = on_sent
            # One reply per message, as in the burst run: a coalesced burst would be
            # one reply for several (counted by `account` as coalesced, not lost).
            config = write_config(
                tmp, llm_url=llm.base_url, api=api, engine={"coalesce_bursts": False}
            )
            bot = BotProcess(config, api)
            await bot.start()
            started = time.monotonic()
            injected = []
            for k in range(messages):
                for user in range(20_000, 20_000 + people):
                    injected_at.setdefault(user, []).append(time.monotonic())
                    injected.append(api.private_message(user, f"message {k + 1} from {user}"))
            # Somewhere in the middle of the run (at ~28 replies/s it lasts total/28 s).
            kill_after = rng.uniform(0.2, 0.8) * total / 28
            await asyncio.sleep(kill_after)
            delivered_at_kill = len(reply_times)
            at_the_fake = api.sends_in_flight  # requests the fake is answering right now
            await bot.kill()
            inflight = await asyncio.to_thread(in_flight, tmp / "bot.db")
            down = time.monotonic()
            await bot.start(timeout=60)
            restart_s = time.monotonic() - down
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_in.wait(), total / 20 + 60)
            await asyncio.sleep(1.0)  # a duplicate would come now
            await bot.stop(timeout=60)
            result = await asyncio.to_thread(account, tmp / "bot.db", api, injected)
            max_sends = api.max_sends_per_second()
            limited = api.rate_limited
    return {
        "mode": "kill",
        "people": people,
        "messages_per_person": messages,
        "fake_latency_ms": latency_ms,
        "fake_429_share": share_429,
        **_numbers(
            latencies=latencies,
            reply_times=reply_times,
            started=started,
            max_sends=max_sends,
            sent=total,
        ),
        "killed_after_s": round(kill_after, 2),
        "delivered_before_kill": delivered_at_kill,
        "restart_s": round(restart_s, 2),
        # Replies recorded `sending` (begun: pacing or on the wire): the bound that the
        # tests check duplicates against; the fake's count is what was on the wire.
        "sends_begun_at_kill": inflight,
        "requests_at_the_fake_at_kill": at_the_fake,
        "rate_limited_429": limited,
        "answered": result.answered,
        "coalesced": result.coalesced,
        "failed": result.failed,
        "lost": len(result.lost),
        "duplicated": result.duplicates,
    }
