"""What deciding who answers a group message costs (bot/groups/decide.py), with no
database: four personas present (names, nicknames, keywords, one talkative), the
channel state kept by `GroupState`, over ordinary chat lines and hostile ones
(a 64 KB line of near-miss names).

Then the same ordinary messages with the state in the database (`GroupStore`, what
`bot run` uses: one transaction per decision, the channel's row locked): on a
SQLite file, and on PostgreSQL with `--database-url URL` or `--start-postgres` (a
private server, pgserver); one after another, and 16 at once over 50 channels.

Prints, and writes to bench/results/groups_decide.json: microseconds per ordinary
message (p50, p99, mean) and per hostile message, in process and per database.

    python bench/groups_decide.py [--messages 20000] [--store-messages 3000]
    python bench/groups_decide.py --start-postgres
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path

from bot.db import Database
from bot.groups.decide import MessageFacts, Present, decide
from bot.groups.policy import SpeakPolicy
from bot.groups.state import GroupState
from bot.groups.store import GroupStore

PRESENT = [
    Present("tess", ("Tess", "Tessie"), SpeakPolicy(keywords=("cats", "kittens"))),
    Present("otto", ("Otto",), SpeakPolicy(mode="talkative", talkativeness=0.2, cooldown_s=30)),
    Present("yu", ("小雨",), SpeakPolicy(keywords=("天气",))),
    Present("bisc", ("Biscuit", "Bisc"), SpeakPolicy(mode="always", cooldown_s=120)),
]
ORDINARY = [
    "hey, how was your day?",
    "Otto, what do you think about this?",
    "I had pizza for dinner and it was amazing",
    "今天天气真好，我们去公园吧",
    "cats are better than dogs, fight me",
    "Tess and Biscuit: movie tonight?",
    "lol",
    "can someone help me plan my trip to Kyoto next month?",
]
HOSTILE = ("Tes Ott Biscui Tessa Ottoman 小 " * 2400)[:65536]


def run(messages: int) -> dict[str, object]:
    rng = random.Random(0)
    state = GroupState()
    times: list[float] = []
    for i in range(messages):
        facts = MessageFacts(ORDINARY[i % len(ORDINARY)], platform_addressed=i % 9 == 0)
        key = f"c{i % 50}"
        started = time.perf_counter()
        view = state.view(key, float(i), replies_per_minute=20, max_bot_chain=3)
        decision = decide(facts, PRESENT, view, rng, float(i))
        state.record(key, facts, decision, float(i))
        times.append((time.perf_counter() - started) * 1e6)
    times.sort()
    hostile: list[float] = []
    for _ in range(50):
        started = time.perf_counter()
        decide(MessageFacts(HOSTILE), PRESENT, state.view("h", 0, replies_per_minute=20,
               max_bot_chain=3), rng, 0.0)  # fmt: skip
        hostile.append((time.perf_counter() - started) * 1e6)
    return {
        "messages": messages,
        "personas": len(PRESENT),
        "ordinary_us": {
            "p50": round(times[len(times) // 2], 1),
            "p99": round(times[int(len(times) * 0.99)], 1),
            "mean": round(statistics.fmean(times), 1),
        },
        "hostile_64k_us": {
            "p50": round(statistics.median(hostile), 1),
            "max": round(max(hostile), 1),
        },
        "python": platform.python_version(),
    }


def _summary(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    return {
        "p50": round(times[len(times) // 2], 1),
        "p99": round(times[int(len(times) * 0.99)], 1),
        "mean": round(statistics.fmean(times), 1),
    }


async def run_store(url: str, messages: int) -> dict[str, object]:
    """Decisions with the state in the database at `url`: one at a time, then 16 at
    once (two `GroupStore`s on two engines, as two workers), in µs per decision."""
    rng = random.Random(0)
    db, other = Database.open(url), Database.open(url)
    try:
        stores = (GroupStore(db), GroupStore(other))

        async def one(i: int, base: float) -> float:
            facts = MessageFacts(ORDINARY[i % len(ORDINARY)], platform_addressed=i % 9 == 0)
            now = base + i * 0.01
            started = time.perf_counter()
            await stores[i % 2].decide(
                f"c{i % 50}",
                now,
                replies_per_minute=20,
                max_bot_chain=3,
                facts=facts,
                choose=lambda view: decide(facts, PRESENT, view, rng, now),
            )
            return (time.perf_counter() - started) * 1e6

        for i in range(100):  # warm: the 50 rows exist, connections open
            await one(i, 1.0e9)
        sequential = [await one(i, 1.1e9) for i in range(messages)]
        gate = asyncio.Semaphore(16)

        async def limited(i: int) -> float:
            async with gate:
                return await one(i, 1.2e9)

        started = time.perf_counter()
        concurrent = await asyncio.gather(*(limited(i) for i in range(messages)))
        wall = time.perf_counter() - started
    finally:
        await db.aclose()
        await other.aclose()
    return {
        "database": url.split(":", 1)[0].split("+")[0],
        "messages": messages,
        "sequential_us": _summary(sequential),
        "concurrent16_us": _summary(list(concurrent)),
        "concurrent16_per_s": round(messages / wall),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--store-messages", type=int, default=3_000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--start-postgres", action="store_true")
    args = parser.parse_args()
    result = run(args.messages)
    stores: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        stores.append(asyncio.run(run_store(f"sqlite:///{tmp}/groups.db", args.store_messages)))
        url = args.database_url
        server = None
        if args.start_postgres and url is None:
            import pgserver

            server = pgserver.get_server(f"{tmp}/pg", cleanup_mode="stop")  # type: ignore[attr-defined]
            server.psql("CREATE DATABASE groups_bench;")
            url = server.get_uri("groups_bench").replace(
                "postgresql://", "postgresql+psycopg://", 1
            )
        try:
            if url is not None:
                stores.append(asyncio.run(run_store(url, args.store_messages)))
        finally:
            if server is not None:
                server.cleanup()
    result["stores"] = stores
    # The machine is shared: what else ran says how far to trust the numbers.
    result["load_average_1m"] = round(os.getloadavg()[0], 2)
    result["cpus"] = os.cpu_count()
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results" / "groups_decide.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
