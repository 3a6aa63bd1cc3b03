"""The framework's own cost per turn, with an instant backend.

A SQLite database is filled with 100,000 stored messages (1,000 conversations of
100), then turns are run through the real engine (store, history, prompt, generate
with `MockBackend`, clean, store) at 1, 10 and 100 concurrent conversations.

Prints, and writes to bench/results/engine_overhead.json: per-turn overhead p50/p99
(ms, the engine's time outside the backend), end-to-end turn latency p50/p99,
turns/s at each concurrency, and the peak RSS of the process.

    python bench/engine_overhead.py [--messages 100000] [--turns 3000]

Targets on the 2-core reference machine: p50 overhead <= 5 ms, >= 300 turns/s at
100 concurrent conversations.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from bot.app import open_app
from bot.config import load_settings
from bot.llm.mock import MockBackend
from bot.messages import Actor, Incoming, Scope
from bot.models import Message

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def incoming(conv: int, text: str) -> Incoming:
    user = f"u{conv}"
    scope = Scope(platform="bench", channel=f"dm-{conv}", user=user, persona="samantha")
    return Incoming(
        scope=scope,
        actor=Actor(platform="bench", id=user, display_name=f"Person {conv}"),
        text=text,
    )


async def seed(app: object, conversations: int, per_conversation: int) -> None:
    """Create the conversations through the ledger, then bulk-insert their history."""
    from bot.app import App

    assert isinstance(app, App)
    ids = []
    for conv in range(conversations):
        stored = await app.ledger.record_incoming(incoming(conv, "hello"), "hello")
        ids.append((stored.conversation_id, stored.user_id))
    start = datetime.now(UTC) - timedelta(days=30)
    rows = []
    for conversation_id, user_id in ids:
        for i in range(per_conversation - 1):
            out = i % 2 == 1
            rows.append(
                {
                    "conversation_id": conversation_id,
                    "user_id": user_id,
                    "direction": "out" if out else "in",
                    "kind": "message",
                    "status": "generated" if out else "answered",
                    "text": (
                        "Of course, tell me more about that. "
                        if out
                        else "I went for a walk by the river today and thought of you. "
                    )
                    * 2,
                    "truncated": False,
                    "persona_id": "samantha",
                    "created_at": start + timedelta(minutes=i),
                }
            )
    table = Message.__table__

    def bulk(conn: object) -> None:
        conn.execute(insert(table), rows)  # type: ignore[attr-defined]

    await app.db.run(bulk)


async def run_level(app: object, concurrency: int, turns: int, offset: int) -> dict[str, float]:
    from bot.app import App

    assert isinstance(app, App)
    overhead: list[float] = []
    latency: list[float] = []
    per_worker = max(1, turns // concurrency)

    async def worker(w: int) -> None:
        conv = offset + w
        for i in range(per_worker):
            t0 = time.perf_counter()
            result = await app.engine.run_turn(incoming(conv, f"message {i}: how was your day?"))
            latency.append((time.perf_counter() - t0) * 1000)
            overhead.append(result.overhead_ms)
            assert result.outgoing and not result.outgoing[0].is_error

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "turns": len(latency),
        "turns_per_s": round(len(latency) / elapsed, 1),
        "overhead_p50_ms": round(percentile(overhead, 50), 3),
        "overhead_p99_ms": round(percentile(overhead, 99), 3),
        "latency_p50_ms": round(percentile(latency, 50), 3),
        "latency_p99_ms": round(percentile(latency, 99), 3),
        "latency_mean_ms": round(statistics.fmean(latency), 3),
    }


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(
            None,
            {
                "database": {"url": f"sqlite:///{tmp}/bench.db"},
                "personas": {"dirs": [str(REPO / "personas")], "watch": False},
                "llm": {"max_concurrency": 1000},
                "logging": {"level": "WARNING"},
            },
        )
        from bot.logs import configure_logging

        configure_logging(level="WARNING", fmt="json")
        async with open_app(settings, backend=MockBackend(), watch=False, memory=False) as app:
            conversations = max(100, args.messages // 100)
            t0 = time.perf_counter()
            await seed(app, conversations, args.messages // conversations)
            seeded_s = time.perf_counter() - t0
            levels = []
            for concurrency in (1, 10, 100):
                # Warm up caches for this level's conversations, then measure.
                await run_level(app, concurrency, concurrency, offset=concurrency * 3)
                levels.append(await run_level(app, concurrency, args.turns, offset=concurrency * 3))
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {
            "benchmark": "engine_overhead",
            "stored_messages": args.messages,
            "seed_seconds": round(seeded_s, 2),
            "levels": levels,
            "peak_rss_mb": round(peak_kb / 1024, 1),
            "python": sys.version.split()[0],
            "machine": platform.machine(),
            "targets": {"overhead_p50_ms_max": 5.0, "turns_per_s_at_100_min": 300.0},
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--turns", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=RESULTS / "engine_overhead.json")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    for level in result["levels"]:  # type: ignore[attr-defined]
        print(
            f"concurrency {level['concurrency']:>3}: {level['turns_per_s']:>8.1f} turns/s  "
            f"overhead p50 {level['overhead_p50_ms']:.2f} ms "
            f"p99 {level['overhead_p99_ms']:.2f} ms  "
            f"latency p50 {level['latency_p50_ms']:.2f} ms p99 {level['latency_p99_ms']:.2f} ms"
        )
    print(f"peak RSS {result['peak_rss_mb']} MB; {result['stored_messages']} stored messages")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
