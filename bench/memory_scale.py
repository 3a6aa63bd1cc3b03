"""Memory search latency at scale, and ingest throughput through the live path.

Search: a database holding 10k, 100k and 1M messages (at 1M, 100k of them in the
searching person's scope and the rest spread over 900 other people), each with
its FTS5 rows (written by the triggers); the searching person's messages have a
384-dim float32 vector each (`--vectors-for-all`: everyone's; the scan reads only
the scope's, so other vectors cost disk, not search time). Texts are
synthetic sentences drawn from LoCoMo's vocabulary with its word frequencies, so
posting lists and tokenizer cost look like a real conversation's; queries are
LoCoMo questions; vectors are random unit vectors (the numpy scan
costs the same whatever they hold), except that the *query* is embedded by the
real model each time. Reported: search p50/p99 (hybrid, and BM25 alone).

Ingest: messages stored with `Ledger.record_incoming` from 50 concurrent
conversations, each queued with `SQLiteMemory.enqueue` (what `observe` does) and
embedded in batches by the real model; messages/s until all are embedded.

    python bench/memory_scale.py [--sizes 10000,100000,1000000] [--queries 200]
        [--database-url postgresql+psycopg://…|pgserver] [--in-scope 100000]

Prints, and writes bench/results/memory_scale.json (memory_scale_postgres.json with
`--database-url`). Target: p50 <= 20 ms at 100k in scope; ingest >= 1,000
messages/s.

On PostgreSQL (`--database-url`, see bench/memory_db.py: the database is wiped) the
load goes through COPY with the search indexes dropped, then builds them as
migration 0011 defines them (GIN over the generated tsvector and over trigrams,
HNSW over the scope's vectors) and ANALYZEs; the build times are reported.
`--in-scope N` puts up to N of the messages in the searching person's scope
(default 100,000; `--in-scope 1000000` for a million in one scope).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import sqlite3
import sys
import tempfile
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bot.app import build_embedder
from bot.config import MemorySettings
from bot.db import Database
from bot.memory.ledger import Ledger
from bot.memory.store import MemoryScope, SearchWeights, SQLiteMemory
from bot.messages import Actor, Incoming, Scope

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # bench.memory_db lives beside the package
from bench._platform_common import percentile  # noqa: E402
from bench.memory_db import dialect_of, fresh_url, postgres_for  # noqa: E402

RESULTS = REPO / "bench" / "results"
DIM = 384
IN_SCOPE_MAX = 100_000
LOCOMO = REPO.parent / "shared" / "benchmarks" / "locomo" / "locomo10.json"


def vocabulary(rng: random.Random, size: int = 8000) -> tuple[list[str], list[float]]:
    """Words weighted by how often people use them: LoCoMo's turns when the file is
    there (real English, real tokenizer cost), else a Zipf list of made-up words."""
    if LOCOMO.exists():
        counts: dict[str, int] = {}
        for sample in json.loads(LOCOMO.read_text()):
            conv = sample["conversation"]
            for key, turns in conv.items():
                if key.startswith("session_") and isinstance(turns, list):
                    for turn in turns:
                        for word in re.findall(r"[A-Za-z']+", turn["text"].lower()):
                            counts[word] = counts.get(word, 0) + 1
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:size]
        return [w for w, _ in ranked], [float(c) for _, c in ranked]
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = list(
        dict.fromkeys(
            "".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(size)
        )
    )
    weights = [1 / (rank + 1) for rank in range(len(words))]  # Zipf
    return words, weights


def questions(rng: random.Random, n: int, words: list[str]) -> list[str]:
    """LoCoMo's questions (real queries) when available, else random word lists."""
    if LOCOMO.exists():
        pool = [str(qa["question"]) for s in json.loads(LOCOMO.read_text()) for qa in s["qa"]]
        return rng.sample(pool, min(n, len(pool)))
    return [" ".join(rng.choices(words[:3000], k=rng.randint(2, 6))) for _ in range(n)]


def sentence(rng: random.Random, words: list[str], weights: list[float]) -> str:
    return " ".join(rng.choices(words, weights, k=rng.randint(6, 18)))


async def build(
    db: Database,
    total: int,
    rng: random.Random,
    words: list[str],
    weights: list[float],
    vectors_for_all: bool = False,
    in_scope_max: int = IN_SCOPE_MAX,
) -> MemoryScope:
    """Bulk-load `total` messages (and vectors); returns the searching person's scope."""
    ledger = Ledger(db)
    postgres = db.engine.dialect.name == "postgresql"
    in_scope = min(total, in_scope_max)
    others = total - in_scope
    people = [("me", in_scope)]
    if others:
        per = others // 900
        people += [(f"other{i}", per) for i in range(900)]
    ids = {}
    for user, _ in people:
        scope = Scope(platform="bench", channel=f"dm-{user}", user=user, persona="p")
        stored = await ledger.record_incoming(
            Incoming(scope=scope, actor=Actor(platform="bench", id=user), text="hello"), "hello"
        )
        ids[user] = (stored.user_id, stored.conversation_id)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for user, count in people:
        uid, cid = ids[user]
        done = 0
        while done < count:
            n = min(20_000, count - done)
            rows = [
                (cid, uid, "in" if i % 2 == 0 else "out", "message", "answered",
                 sentence(rng, words, weights), 0, "p",
                 (start + timedelta(minutes=done + i)).strftime("%Y-%m-%d %H:%M:%S.%f"))
                for i in range(n)
            ]  # fmt: skip
            vectors = np.random.default_rng(done).standard_normal((n, DIM)).astype("<f4")
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)

            if postgres:
                await db.run(
                    lambda conn, rows=rows, vectors=vectors, uid=uid, cid=cid, user=user: _copy_pg(
                        conn, rows, vectors, uid, cid, user == "me" or vectors_for_all
                    )
                )
                done += n
                continue

            def load(
                conn: Any,
                rows: list[Any] = rows,
                vectors: Any = vectors,
                uid: int = uid,
                cid: int = cid,
                user: str = user,
            ) -> None:
                raw = conn.connection.driver_connection
                cur = raw.cursor()
                cur.executemany(
                    "INSERT INTO messages (conversation_id, user_id, direction, kind, status, "
                    "text, truncated, persona_id, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    rows,
                )
                last = cur.execute("SELECT max(id) FROM messages").fetchone()[0]
                first = last - len(rows) + 1
                if user != "me" and not vectors_for_all:
                    return
                cur.executemany(
                    "INSERT INTO embeddings (kind, item_id, user_id, conversation_id, model, "
                    "dim, vector, created_at) VALUES ('message', ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (first + i, uid, cid, "all-MiniLM-L6-v2", DIM, vectors[i].tobytes(),
                         rows[i][-1])
                        for i in range(len(rows))
                    ],
                )  # fmt: skip

            await db.run(load)
            done += n
    return MemoryScope(*ids["me"])


#: The search indexes of migrations 0011 and 0017 the PostgreSQL bulk load drops and
#: rebuilds.
PG_INDEXES = {
    "ix_messages_search_words": "CREATE INDEX ix_messages_search_words ON messages "
    "USING gin (search_words)",
    "ix_messages_text_trgm": "CREATE INDEX ix_messages_text_trgm ON messages "
    "USING gin (text gin_trgm_ops)",
    "ix_embeddings_hnsw_half_384": "CREATE INDEX ix_embeddings_hnsw_half_384 ON embeddings "
    "USING hnsw ((CAST(embedding AS halfvec(384))) halfvec_cosine_ops) WHERE dim = 384",
}


def _copy_pg(
    conn: Any, rows: list[Any], vectors: Any, uid: int, cid: int, with_vectors: bool
) -> None:
    """COPY one chunk of messages (and their vectors) into PostgreSQL."""
    from bot.memory.pg_search import vector_literal

    raw = conn.connection.driver_connection
    with raw.cursor() as cur:
        with cur.copy(
            "COPY messages (conversation_id, user_id, direction, kind, status, text, "
            "truncated, persona_id, created_at) FROM STDIN"
        ) as copy:
            for r in rows:
                copy.write_row((*r[:6], bool(r[6]), r[7], r[8] + "+00"))
        last = cur.execute("SELECT max(id) FROM messages").fetchone()[0]
        if not with_vectors:
            return
        first = last - len(rows) + 1
        with cur.copy(
            "COPY embeddings (kind, item_id, user_id, conversation_id, model, dim, vector, "
            "created_at, embedding) FROM STDIN"
        ) as copy:
            for i in range(len(rows)):
                copy.write_row(
                    ("message", first + i, uid, cid, "all-MiniLM-L6-v2", DIM,
                     vectors[i].tobytes(), rows[i][-1] + "+00", vector_literal(vectors[i]))
                )  # fmt: skip


async def drop_pg_indexes(db: Database) -> None:
    """Before a bulk load: building an index once is far cheaper than row by row."""
    from sqlalchemy import text

    def work(conn: Any) -> None:
        for name in PG_INDEXES:
            conn.execute(text(f"DROP INDEX IF EXISTS {name}"))

    await db.run(work)


def build_pg_indexes(url: str) -> dict[str, float]:
    """The dropped indexes built again (seconds each), then ANALYZE."""
    from sqlalchemy import create_engine, text

    took: dict[str, float] = {}
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            # An HNSW graph that fits in memory builds many times faster than one that
            # spills; 1M halfvec(384) vectors take about 1.5 GB.
            conn.execute(text("SET maintenance_work_mem = '4GB'"))
            conn.execute(text("SET max_parallel_maintenance_workers = 1"))
            for name, ddl in PG_INDEXES.items():
                t = time.perf_counter()
                conn.execute(text(ddl))
                took[name] = round(time.perf_counter() - t, 1)
            t = time.perf_counter()
            conn.execute(text("VACUUM ANALYZE"))
            took["vacuum_analyze"] = round(time.perf_counter() - t, 1)
    finally:
        engine.dispose()
    return took


def checkpoint(path: Path) -> None:
    """Move the WAL's pages into the database file, as SQLite's auto-checkpoint does."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


async def search_latency(
    memory: SQLiteMemory, scope: MemoryScope, queries: list[str]
) -> dict[str, float]:
    await memory.search(scope, queries[0], k=10)  # warm: loads the scope's vectors once
    took = []
    for q in queries:
        t = time.perf_counter()
        await memory.search(scope, q, k=10)
        took.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": round(percentile(took, 50), 2), "p99_ms": round(percentile(took, 99), 2)}


async def ingest(
    embedder: Any, workdir: Path, messages: int, rng: random.Random, url: str | None = None
) -> dict[str, Any]:
    words, weights = vocabulary(rng)
    target = await asyncio.to_thread(fresh_url, url, str(workdir), "ingest")
    db = await asyncio.to_thread(Database.open, target)
    ledger = Ledger(db)
    memory = SQLiteMemory(db, embedder=embedder, embed_batch=256, embed_delay_s=0.05)
    await asyncio.to_thread(embedder.embed, ["warm up"])  # load the model before timing
    conversations = 50

    async def talk(c: int) -> None:
        scope = Scope(platform="bench", channel=f"dm-{c}", user=f"u{c}", persona="p")
        actor = Actor(platform="bench", id=f"u{c}")
        for _ in range(messages // conversations):
            text = sentence(rng, words, weights)
            stored = await ledger.record_incoming(
                Incoming(scope=scope, actor=actor, text=text), text
            )
            memory.enqueue([("message", stored.message_id)])

    started = time.perf_counter()
    await asyncio.gather(*(talk(c) for c in range(conversations)))
    stored_s = time.perf_counter() - started
    await memory.flush()
    total_s = time.perf_counter() - started
    await memory.aclose()
    await db.aclose()
    return {
        "messages": messages,
        "stored_per_s": round(messages / stored_s, 1),
        "stored_and_embedded_per_s": round(messages / total_s, 1),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(7)
    words, weights = vocabulary(rng)
    # The embedder the app builds for these settings (ONNX Runtime unless --runtime torch).
    settings = MemorySettings(
        embedding_model=args.embedding_model,
        embedding_runtime=args.runtime,
        embedding_device=args.device,
    )
    embedder = build_embedder(settings)
    assert embedder is not None, "the memory extra is needed for this benchmark"
    await asyncio.to_thread(embedder.embed, ["load the model"])
    queries = questions(rng, args.queries, words)
    result: dict[str, Any] = {
        "search": {},
        "embedder": type(
            getattr(embedder, "first", None) or getattr(embedder, "second", embedder)
        ).__name__,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "database": dialect_of(args.database_url and "postgresql://"),
        "vectors": "random unit vectors (384-dim) for the stored messages; queries embedded",
    }
    with (
        tempfile.TemporaryDirectory(dir=args.tmp) as tmp,
        postgres_for(args.database_url, tmp) as pg_url,
    ):
        for size in args.sizes:
            url = await asyncio.to_thread(fresh_url, pg_url, tmp, f"scale-{size}")
            db = await asyncio.to_thread(Database.open, url)
            t = time.perf_counter()
            index_s: dict[str, float] = {}
            if pg_url is not None:
                await drop_pg_indexes(db)
            scope = await build(db, size, rng, words, weights, args.vectors_for_all, args.in_scope)
            if pg_url is not None:
                index_s = await asyncio.to_thread(build_pg_indexes, url)
            else:
                # The bulk load leaves a large WAL behind; a running bot's auto-checkpoint
                # keeps it small, so checkpoint it before searching, as in service.
                await asyncio.to_thread(checkpoint, Path(tmp) / f"scale-{size}.db")
            built_s = time.perf_counter() - t
            hybrid = SQLiteMemory(db, embedder=embedder)
            bm25 = SQLiteMemory(db, embedder=None, weights=SearchWeights())
            # The machine may be shared: the load beside each timing says how much.
            load = [round(x, 2) for x in os.getloadavg()]
            row = {
                "in_scope": min(size, args.in_scope),
                "build_s": round(built_s, 1),
                **({"index_build_s": index_s} if index_s else {}),
                "hybrid": await search_latency(hybrid, scope, queries),
                "bm25_only": await search_latency(bm25, scope, queries),
                "load_average": {"before": load, "after": [round(x, 2) for x in os.getloadavg()]},
            }
            result["search"][str(size)] = row
            hyb, lex = row["hybrid"], row["bm25_only"]
            print(
                f"{size:>9,} memories ({row['in_scope']:,} in scope): hybrid p50 "
                f"{hyb['p50_ms']} ms p99 {hyb['p99_ms']} ms; bm25 p50 {lex['p50_ms']} ms "
                f"p99 {lex['p99_ms']} ms  (built in {built_s:.0f} s; load average "
                f"{row['load_average']['before'][0]} -> {row['load_average']['after'][0]})",
                flush=True,
            )
            await hybrid.aclose()
            await bm25.aclose()
            await db.aclose()
        if args.ingest:
            result["ingest"] = await ingest(embedder, Path(tmp), args.ingest, rng, pg_url)
            print(f"ingest: {result['ingest']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[10_000, 100_000, 1_000_000],
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ingest", type=int, default=5000, help="messages for the ingest run")
    parser.add_argument("--embedding-model", default="all-MiniLM-L6-v2")
    parser.add_argument("--runtime", choices=["auto", "onnx", "torch"], default="auto")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    parser.add_argument("--tmp", default=None, help="where the databases go")
    parser.add_argument(
        "--vectors-for-all",
        action="store_true",
        help="store vectors for other people's messages too (only the scope's are scanned)",
    )
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (wiped!), or pgserver")
    parser.add_argument(
        "--in-scope", type=int, default=IN_SCOPE_MAX, help="most messages in the searched scope"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.out is None:
        name = "memory_scale_postgres.json" if args.database_url else "memory_scale.json"
        args.out = RESULTS / name
    result = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
