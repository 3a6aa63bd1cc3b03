"""What the dashboard's conversations and people queries cost on a ledger with a history.

A database (a SQLite file, or a private PostgreSQL with `--start-postgres`) is filled
with `--conversations` conversations of `--per` messages each (half people's, half
replies; a tenth of the conversations are groups), one person per conversation. Then
each query of bot/web/dashboard/data_service.py runs `--repeat` times, p50 and p99:

- the first page of conversations (no filter), and the tenth page by cursor;
- by persona; by person (a display name prefix); by a rare word and by a common word
  (text search among the newest SEARCH_WINDOW messages);
- one conversation's newest page; one person's page.

On PostgreSQL the tables are ANALYZEd after the load, as autovacuum would soon.
Prints, and writes bench/results/dashboard_data.json (or `--out`).

    python bench/dashboard_data.py [--conversations 5000] [--per 40]
    python bench/dashboard_data.py --start-postgres
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert, text
from sqlmodel import SQLModel

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results"

from bot.db import Database  # noqa: E402
from bot.models import Conversation, Message, User  # noqa: E402

TABLES = {
    m.__tablename__: SQLModel.metadata.tables[str(m.__tablename__)]
    for m in (Conversation, Message, User)
}
from bot.web.dashboard.data_service import (  # noqa: E402
    ConversationFilter,
    conversation_view,
    list_conversations,
    person_view,
)

WORDS = [
    "morning",
    "coffee",
    "walk",
    "rain",
    "book",
    "music",
    "train",
    "dinner",
    "work",
    "weekend",
    "garden",
    "movie",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def seed(db: Database, conversations: int, per: int) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    users = [
        {"platform": "test", "platform_user_id": f"u{i}", "display_name": f"Person{i:06d}",
         "created_at": start, "last_seen_at": start}
        for i in range(conversations)
    ]  # fmt: skip
    convs = [
        {"key": f"test/c{i}", "platform": "test", "channel": f"c{i}",
         "persona_id": ("tess", "biscuit", "sam")[i % 3], "is_direct": i % 10 != 0,
         "created_at": start, "last_message_at": start + timedelta(minutes=i * per)}
        for i in range(conversations)
    ]  # fmt: skip
    await db.run(lambda c: c.execute(insert(TABLES["users"]), users))
    await db.run(lambda c: c.execute(insert(TABLES["conversations"]), convs))
    batch: list[dict[str, Any]] = []
    for i in range(conversations):
        persona = convs[i]["persona_id"]
        for j in range(per):
            out = j % 2 == 1
            word = WORDS[(i + j) % len(WORDS)]
            rare = " walrus" if (i == conversations // 2 and j == 0) else ""
            batch.append(
                {"conversation_id": i + 1, "user_id": i + 1, "direction": "out" if out else "in",
                 "kind": "message", "status": "delivered" if out else "answered",
                 "text": f"{'reply' if out else 'hello'} about the {word} number {j}{rare}",
                 "persona_id": persona, "persona_hash": "0" * 64 if out else None,
                 "backend": "vllm" if out else None, "model": "m" if out else None,
                 "latency_ms": 800.0 if out else None,
                 "created_at": start + timedelta(minutes=i * per + j), "parts_sent": 0}
            )  # fmt: skip
            if len(batch) >= 20_000:
                rows = batch
                await db.run(lambda c, rows=rows: c.execute(insert(TABLES["messages"]), rows))  # type: ignore[misc]
                batch = []
    if batch:
        await db.run(lambda c: c.execute(insert(TABLES["messages"]), batch))


async def timed(db: Database, work: Callable[[Connection], Any], repeat: int) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await db.read(work)
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(percentile(times, 0.5), 2), "p99_ms": round(percentile(times, 0.99), 2)}


async def measure(url: str, args: argparse.Namespace) -> dict[str, Any]:
    db = await asyncio.to_thread(Database.open, url, migrate=True)
    try:
        started = time.perf_counter()
        await seed(db, args.conversations, args.per)
        load_s = time.perf_counter() - started
        if url.startswith("postgresql"):
            await db.run(lambda c: c.execute(text("ANALYZE")))

        cursor = None
        for _ in range(9):
            cursor = (
                await db.read(
                    lambda c, cur=cursor: list_conversations(c, ConversationFilter(), cursor=cur)
                )
            ).next_cursor
        mid = args.conversations // 2
        cases: dict[str, Callable[[Connection], Any]] = {
            "conversations_first_page": lambda c: list_conversations(c, ConversationFilter()),
            "conversations_page_10": lambda c: list_conversations(
                c, ConversationFilter(), cursor=cursor
            ),
            "by_persona": lambda c: list_conversations(c, ConversationFilter(persona="sam")),
            "by_person_name": lambda c: list_conversations(
                c, ConversationFilter(person=f"Person{mid:06d}")
            ),
            "text_rare_word": lambda c: list_conversations(c, ConversationFilter(text="walrus")),
            "text_common_word": lambda c: list_conversations(c, ConversationFilter(text="coffee")),
            "one_conversation": lambda c: conversation_view(c, mid),
            "one_person": lambda c: person_view(c, mid),
        }
        results = {name: await timed(db, work, args.repeat) for name, work in cases.items()}
        found = await db.read(
            lambda c: len(list_conversations(c, ConversationFilter(text="walrus")).rows)
        )
        return {"load_s": round(load_s, 1), "rare_word_found": found, "queries": results}
    finally:
        await db.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=5000)
    parser.add_argument("--per", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--start-postgres", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "dashboard_data.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.start_postgres:
            import pgserver

            server = pgserver.get_server(f"{tmp}/pg", cleanup_mode="stop")
            server.psql("CREATE DATABASE bench;")
            url = server.get_uri("bench").replace("postgresql://", "postgresql+psycopg://", 1)
            backend = "postgresql"
        else:
            url = f"sqlite:///{tmp}/bench.db"
            backend = "sqlite"
        result = asyncio.run(measure(url, args))
    report = {
        "backend": backend,
        "conversations": args.conversations,
        "messages": args.conversations * args.per,
        "python": platform.python_version(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        **result,
    }
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
