"""What a Prometheus scrape of `/metrics` costs a worker, on a database with a history.

A database (a SQLite file, or `--database-url`, or a private PostgreSQL with
`--start-postgres`) is filled with `--messages` stored messages (delivered and
answered, as after months of use), `--undelivered` replies still waiting and
`--inbox` pending inbox events. Then:

- the queue query alone (`bot.metrics.read_queues`: three grouped counts on the
  status indexes), p50/p99;
- a whole scrape over HTTP from the ops server on 127.0.0.1, with the cache off
  (every scrape queries) and on (`ops.metrics_cache_s` = 5: scrapes within it reuse
  the counts), p50/p99, and the size of the answer.

On PostgreSQL the tables are ANALYZEd after the load, as autovacuum would soon.

Prints, and writes to bench/results/ops_scrape.json (or `--out`).

    python bench/ops_scrape.py [--messages 200000] [--scrapes 200]
    python bench/ops_scrape.py --start-postgres
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import insert

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results"

from bot.app import App, open_app  # noqa: E402
from bot.config import load_settings  # noqa: E402
from bot.llm.mock import MockBackend  # noqa: E402
from bot.messages import Actor, Incoming, Scope  # noqa: E402
from bot.metrics import read_queues  # noqa: E402
from bot.models import InboxRow, Message  # noqa: E402
from bot.web import start_ops  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def _incoming(conv: int) -> Incoming:
    scope = Scope(platform="telegram", channel=f"dm-{conv}", user=f"u{conv}", persona="samantha")
    return Incoming(
        scope=scope, actor=Actor(platform="telegram", id=f"u{conv}", display_name="P"), text="hi"
    )


async def seed(app: App, messages: int, undelivered: int, inbox: int) -> None:
    """Conversations through the ledger, then the rows in bulk."""
    ids = []
    for conv in range(200):
        stored = await app.ledger.record_incoming(_incoming(conv), "hi")
        ids.append((stored.conversation_id, stored.user_id))
    start = datetime.now(UTC) - timedelta(days=90)
    batch: list[dict[str, Any]] = []

    async def flush() -> None:
        rows = list(batch)
        batch.clear()
        await app.db.run(lambda c: c.execute(insert(Message.__table__), rows))  # type: ignore[arg-type]

    for i in range(messages + undelivered):
        conversation_id, user_id = ids[i % len(ids)]
        out = i % 2 == 1 or i >= messages
        if i >= messages:
            status = "generated" if i % 3 else "sending"
        else:
            status = "delivered" if out else "answered"
        batch.append(
            {
                "conversation_id": conversation_id,
                "user_id": user_id,
                "direction": "out" if out else "in",
                "kind": "message",
                "status": status,
                "text": "a message of ordinary length, as people write them " * 2,
                "truncated": False,
                "persona_id": "samantha",
                "created_at": start + timedelta(seconds=i * 30),
            }
        )
        if len(batch) >= 5000:
            await flush()
    if batch:
        await flush()
    events = [
        {
            "platform": "telegram",
            "event_key": str(k),
            "chat": f"dm-{k % 200}",
            "status": "pending",
            "payload": "{}",
            "received_at": datetime.now(UTC) - timedelta(seconds=k),
        }
        for k in range(inbox)
    ]
    for s in range(0, len(events), 5000):
        chunk = events[s : s + 5000]
        await app.db.run(lambda c, chunk=chunk: c.execute(insert(InboxRow.__table__), chunk))  # type: ignore[misc]


async def measure(args: argparse.Namespace, url: str, tmp: str) -> dict[str, Any]:
    settings = load_settings(
        None,
        {
            "database": {"url": url},
            "personas": {"dirs": [str(REPO / "personas")], "watch": False},
            "logging": {"level": "WARNING"},
            "memory": {"enabled": False},
            "ops": {"port": 0, "metrics_cache_s": 0},
        },
    )
    async with open_app(settings, backend=MockBackend(lambda r: "ok"), memory=False) as app:
        t0 = time.perf_counter()
        await seed(app, args.messages, args.undelivered, args.inbox)
        seeded_s = time.perf_counter() - t0
        if app.db.engine.dialect.name == "postgresql":
            # What autovacuum does soon after a bulk load: fresh statistics for the planner.
            await app.db.run(lambda c: c.exec_driver_sql("ANALYZE"))
        now = datetime.now(UTC)
        query: list[float] = []
        for _ in range(args.scrapes):
            t = time.perf_counter()
            snap = await app.db.read(lambda c: read_queues(c, now))
            query.append((time.perf_counter() - t) * 1000)
        server = await start_ops(settings.ops, app)
        assert server is not None
        result: dict[str, Any] = {
            "seeded_s": round(seeded_s, 1),
            "queue_read_p50_ms": round(percentile(query, 50), 3),
            "queue_read_p99_ms": round(percentile(query, 99), 3),
            "outbox_depth": sum(n for n, _ in snap.outbox.values()),
            "inbox_depth": sum(n for n, _ in snap.inbox.values()),
        }
        try:
            async with httpx.AsyncClient(base_url=server.url) as http:
                for label, ttl in (("uncached", 0.0), ("cached_5s", 5.0)):
                    app.metrics.ttl_s = ttl
                    times: list[float] = []
                    size = 0
                    for _ in range(args.scrapes):
                        t = time.perf_counter()
                        response = await http.get("/metrics")
                        times.append((time.perf_counter() - t) * 1000)
                        size = len(response.content)
                    result[f"scrape_{label}_p50_ms"] = round(percentile(times, 50), 3)
                    result[f"scrape_{label}_p99_ms"] = round(percentile(times, 99), 3)
                    result["scrape_bytes"] = size
        finally:
            await server.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--start-postgres", action="store_true")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--undelivered", type=int, default=1_000)
    parser.add_argument("--inbox", type=int, default=10_000)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS / "ops_scrape.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/ops.db"
        server = None
        if args.start_postgres:
            import pgserver

            server = pgserver.get_server(f"{tmp}/pg", cleanup_mode="stop")
            server.psql("CREATE DATABASE ops_bench;")
            url = server.get_uri("ops_bench").replace("postgresql://", "postgresql+psycopg://", 1)
        try:
            measured = asyncio.run(measure(args, url, tmp))
        finally:
            if server is not None:
                server.cleanup()
    dialect = url.split(":", 1)[0].split("+")[0]
    result = {
        "benchmark": "ops_scrape",
        "database": dialect,
        "messages": args.messages,
        "undelivered": args.undelivered,
        "inbox": args.inbox,
        "scrapes": args.scrapes,
        "python": platform.python_version(),
        **measured,
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
