"""The durable core under a burst, without a platform library: inbox → worker →
engine → outbox → pacer, through an in-process adapter whose every send takes
`--latency-ms` (50) and which answers `--share-429` of sends 429 (retry_after 1 s).

Every message of `--people` (150) private chats × `--messages` (4) arrives at once,
is committed to the inbox in batches of 100 (as a getUpdates loop would), handled
in per-chat order, answered by an instant backend and sent under Telegram's limits
(30/s overall, a burst of 3 then 1/s per chat). Measures what the core sustains
against that ceiling: replies/s, the most sends in any one second (sliding), latency
p50/p99 from the event's commit to its reply's send, 429s, lost and duplicated.

Prints, and writes to bench/results/inbox_core.json.

    python bench/inbox_core.py [--people 150] [--messages 4] [--latency-ms 50]

Target: >= 28 replies/s sustained, never more than 30 sends in any one second,
0 lost, 0 duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from adapters.base import Adapter, AdapterServices, PacingPolicy, RateLimited  # noqa: E402
from bot.app import open_app  # noqa: E402
from bot.config import load_settings  # noqa: E402
from bot.inbox import InboxEvent, RawEvent  # noqa: E402
from bot.llm.mock import MockBackend  # noqa: E402
from bot.messages import Actor, Incoming, Outgoing, Scope  # noqa: E402

PERSONA = """\
version: 1
id: bench
name: Bench
description: A persona for benchmarks.
system_prompt: You are Bench.
"""
TELEGRAM = PacingPolicy(per_chat_interval_s=1.0, group_per_minute=20, global_per_second=30)


class SlowPlatform(Adapter):
    """Events are JSON {"chat", "text", "id"}; each send takes `latency` seconds."""

    platform = "bench"
    pacing = TELEGRAM
    typing_delay_s = 0.3

    def __init__(self, services: AdapterServices, latency: float, share_429: float) -> None:
        super().__init__(services)
        self.latency = latency
        self.share_429 = share_429
        self.rng = random.Random(7)
        self.sends: list[tuple[float, str]] = []  # (monotonic time, text)
        self.committed: dict[str, float] = {}

    async def run(self, stop: asyncio.Event) -> None:
        async with self.processing():
            await stop.wait()

    async def handle_event(self, event: InboxEvent) -> None:
        data = json.loads(event.payload)
        scope = Scope(
            platform=self.platform, channel=data["chat"], user=data["chat"], persona="bench"
        )
        await self.answer(
            Incoming(
                scope=scope,
                actor=Actor(platform=self.platform, id=data["chat"]),
                text=data["text"],
                platform_message_id=data["id"],
                received_at=event.received_at,
            )
        )

    async def _deliver(self, outgoing: Outgoing, text: str) -> str | None:
        await asyncio.sleep(self.latency)
        if self.rng.random() < self.share_429:
            raise RateLimited(1.0, "(bench)")
        # A first reply may carry the AI disclosure before it (bot/safety).
        self.sends.append((time.monotonic(), text.rsplit("\n\n", 1)[-1]))
        return str(len(self.sends))


def most_in_any_second(times: list[float]) -> int:
    times = sorted(times)
    best = start = 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        personas = Path(tmp) / "personas"
        personas.mkdir()
        (personas / "bench.yaml").write_text(PERSONA, encoding="utf-8")
        settings = load_settings(
            None,
            {
                "database": {"url": f"sqlite:///{tmp}/bench.db"},
                "personas": {"dirs": [str(personas)], "default": "bench", "watch": False},
                "memory": {"enabled": False},
                "llm": {"max_concurrency": 64},
            },
        )
        backend = MockBackend(lambda req: f"re:{req.messages[-1].content}")
        async with open_app(settings, backend=backend, watch=False) as app:
            platform = SlowPlatform(app.services, args.latency_ms / 1000, args.share_429)
            texts = [f"c{c}-{n}" for n in range(args.messages) for c in range(args.people)]
            events = [
                RawEvent(
                    key=str(i),
                    payload=json.dumps({"chat": t.split("-")[0], "text": t, "id": str(i)}),
                    chat=t.split("-")[0],
                )
                for i, t in enumerate(texts)
            ]
            started = time.monotonic()
            # A burst: batches of 100 at once. With --rate: that many a second, in
            # batches every 100 ms (below the ceiling, latency is what matters).
            size = 100 if args.rate is None else max(1, round(args.rate / 10))
            async with platform.processing():
                for n, at in enumerate(range(0, len(events), size)):
                    if args.rate is not None:
                        await asyncio.sleep(max(0.0, started + n * 0.1 - time.monotonic()))
                    batch = events[at : at + size]
                    await platform.accept(batch)
                    now = time.monotonic()
                    for event in batch:
                        platform.committed[f"re:{json.loads(event.payload)['text']}"] = now
                while len(platform.sends) < len(texts):
                    if time.monotonic() - started > args.timeout:
                        break
                    await asyncio.sleep(0.05)
            wall = max(t for t, _ in platform.sends) - started if platform.sends else 0.0
    counts = Counter(text for _, text in platform.sends)
    latencies = sorted(t - platform.committed[text] for t, text in platform.sends)
    times = sorted(t for t, _ in platform.sends)
    sustained = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    return {
        "mode": "burst" if args.rate is None else f"rate {args.rate:g}/s",
        "people": args.people,
        "messages": len(texts),
        "latency_ms_per_call": args.latency_ms,
        "replies_per_s": round(len(counts) / wall, 1) if wall else 0.0,
        # From the first send to the last: the rate once the pipeline is full.
        "sustained_replies_per_s": round(sustained, 1),
        "most_sends_in_one_second": most_in_any_second([t for t, _ in platform.sends]),
        "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "latency_p99_s": round(latencies[int(len(latencies) * 0.99) - 1], 3) if latencies else None,
        "rate_limited": platform.pacer.stats.rate_limited,
        "typing_sent": platform.pacer.stats.typing_sent,
        "typing_skipped": platform.pacer.stats.typing_skipped,
        "lost": sum(1 for t in texts if counts[f"re:{t}"] == 0),
        "duplicated": sum(n - 1 for n in counts.values() if n > 1),
        "wall_s": round(wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=150)
    parser.add_argument("--messages", type=int, default=4)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--share-429", type=float, default=0.02)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--rate", type=float, default=None, help="Messages/s instead of a burst.")
    args = parser.parse_args()
    from bot.logs import configure_logging

    configure_logging(level="WARNING", fmt="console")
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    name = "inbox_core.json" if args.rate is None else "inbox_core_rate.json"
    out = REPO / "bench" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
