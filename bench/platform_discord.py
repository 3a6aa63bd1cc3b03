"""The Discord run of bench/platform_load.py (`--platform discord`): simulated people
in their own DM channels, the fake gateway and REST API, discord.py, the real adapter
and engine, an instant backend. Run it through platform_load.py.
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._platform_common import ledger_lost, percentile

__all__ = ["run_discord"]

REPO = Path(__file__).resolve().parent.parent


async def run_discord(people: int, messages: int, think_s: float) -> dict[str, Any]:
    """The Discord run; returns its numbers.

    Like the Telegram run, each person writes in their own DM channel: MESSAGE_CREATE
    events go out over the fake gateway (tests/fakes/discord_api.py), discord.py
    parses them, the adapter runs each turn and the reply arrives at the fake's REST
    API. Discord's per-channel pacing stays; its overall 50 requests/s per bot is
    raised (and the fake's own limits are off), as for Telegram.
    """
    from adapters.base import PacingPolicy
    from adapters.discord import DiscordAdapter
    from bot.app import open_app
    from bot.config import load_settings
    from bot.llm.mock import MockBackend
    from bot.logs import configure_logging
    from tests.fakes.discord_api import TOKEN, FakeDiscord, FakeUser

    configure_logging(level="WARNING", fmt="console", secrets=[])
    total = people * messages
    users = [FakeUser(300_000_000_000_000_000 + i, f"person{i}") for i in range(people)]
    injected: dict[int, list[float]] = {}  # channel -> injection times, in order
    latencies: list[float] = []
    replies: dict[int, int] = {}
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[None]] = set()

    with tempfile.TemporaryDirectory() as tmp:
        # The fake's Discord limits are off: the framework's throughput is measured.
        async with FakeDiscord(limits=False) as fake:
            settings = load_settings(
                None,
                {
                    "database": {"url": f"sqlite:///{tmp}/load.db"},
                    "personas": {"dirs": [str(REPO / "personas")], "watch": False},
                    "llm": {"max_concurrency": 1000},
                    "memory": {"enabled": False},  # the platform layer, not memory
                    "logging": {"level": "WARNING"},
                    "discord": {
                        "token": TOKEN,
                        "api_base_url": fake.api_base_url,
                        "gateway_url": fake.gateway_url,
                    },
                },
            )
            fake.record = False
            channels = {fake.dm_channel(user): user for user in users}

            def inject(channel: int) -> None:
                count = len(injected.setdefault(channel, []))
                injected[channel].append(time.monotonic())
                data = fake.message(channel, channels[channel], f"message {count + 1}")
                task = loop.create_task(fake.dispatch("MESSAGE_CREATE", data))
                pending.add(task)
                task.add_done_callback(pending.discard)

            def on_created(channel: int, message: dict[str, Any]) -> None:
                index = replies.get(channel, 0)
                times = injected.get(channel, [])
                if index < len(times):
                    latencies.append(time.monotonic() - times[index])
                replies[channel] = index + 1
                if len(latencies) >= total:
                    done.set()
                elif replies[channel] < messages:
                    loop.call_later(think_s, inject, channel)

            fake.on_created = on_created
            async with open_app(settings, backend=MockBackend(), watch=False) as app:
                pacing = PacingPolicy(
                    per_chat_interval_s=DiscordAdapter.pacing.per_chat_interval_s,
                    group_per_minute=DiscordAdapter.pacing.group_per_minute,
                    global_per_second=1_000_000,
                )
                adapter = DiscordAdapter(
                    app.services,
                    settings.discord,
                    default_persona="samantha",
                    pacing=pacing,
                    guild_ready_timeout=0.1,
                )
                stop = asyncio.Event()
                runner = asyncio.create_task(adapter.run(stop))
                await asyncio.wait_for(adapter.ready.wait(), 30)
                cpu0 = time.process_time()
                started = time.monotonic()
                rng = random.Random(7)
                for channel in channels:
                    loop.call_later(rng.random(), inject, channel)
                timeout = messages * (think_s + 5) + 120
                try:
                    await asyncio.wait_for(done.wait(), timeout)
                except TimeoutError:
                    print(f"timed out after {timeout:.0f} s", file=sys.stderr)
                elapsed = time.monotonic() - started
                cpu = time.process_time() - cpu0
                stop.set()
                await runner
                lost = await ledger_lost(app, injected)
            delivered = len(latencies)

    return {
        "platform": "discord",
        "people": people,
        "messages_per_person": messages,
        "think_s": think_s,
        "messages_sent": sum(len(v) for v in injected.values()),
        "replies_delivered": delivered,
        "elapsed_s": round(elapsed, 2),
        "messages_per_s": round(delivered / elapsed, 1),
        "latency_p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "latency_p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "latency_max_ms": round(max(latencies, default=float("nan")) * 1000, 1),
        "cpu_s": round(cpu, 2),
        "cpu_utilisation": round(cpu / elapsed, 2),
        **lost,
    }
