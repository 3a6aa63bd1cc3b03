"""Evidence recall of our memory search on LoCoMo (no LLM at retrieval time).

Per conversation, a fresh database: every turn is stored the way a live message is
(speaker A is the person: `Ledger.record_incoming`; speaker B is the persona:
`Ledger.record_reply`), at its session's date, and indexed by the memory's own
path (`SQLiteMemory.enqueue`, what `observe` does; FTS5 triggers and batched
embeddings). Each question is then asked as a query in that person's scope;
recall@k is the share of the question's evidence turns among the top k (a
question without evidence counts as 1), per category and overall, as in the
LoCoMo paper's code. Nothing is tuned to question ids.

    python bench/locomo.py [--data PATH] [--embedding-model NAME|none] [--limit N]
        [--database-url postgresql+psycopg://…|pgserver]

`--database-url`: the same on PostgreSQL (the database there is wiped before each
conversation; `pgserver` starts a private one), see bench/memory_db.py.

Prints a table and writes bench/results/locomo.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text as sql_text

from bot.app import build_embedder
from bot.config import MemorySettings
from bot.db import Database
from bot.memory.ledger import Ledger, ReplyRecord
from bot.memory.store import MemoryScope, SearchWeights, SQLiteMemory
from bot.messages import Actor, Attachment, Incoming, Scope

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # bench.memory_db lives beside the package
from bench.memory_db import fresh_url, postgres_for  # noqa: E402

DATA = REPO.parent / "shared" / "benchmarks" / "locomo" / "locomo10.json"
RESULTS = REPO / "bench" / "results"
KS = (1, 5, 10, 25, 50)
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def evidence_ids(raw: list[str]) -> set[str]:
    """Evidence ids normalised: "D8:6; D9:17" splits, "D:11:26" and "D30:05" mend."""
    out = set()
    for item in raw:
        for piece in re.split(r"[;,\s]+", item):
            m = re.fullmatch(r"D:?(\d+):0*(\d+)", piece.strip())
            if m:
                out.add(f"D{int(m.group(1))}:{int(m.group(2))}")
    return out


def sessions(conversation: dict[str, Any]) -> list[tuple[datetime, list[dict[str, Any]]]]:
    """The sessions in order, each with its start time (UTC)."""
    out = []
    n = 1
    while f"session_{n}" in conversation:
        stamp = datetime.strptime(
            conversation[f"session_{n}_date_time"], "%I:%M %p on %d %B, %Y"
        ).replace(tzinfo=UTC)
        out.append((stamp, conversation[f"session_{n}"]))
        n += 1
    return out


@dataclass
class Ingested:
    """One conversation stored and indexed, ready for questions."""

    db: Database
    memory: SQLiteMemory
    scope: MemoryScope
    dia_of: dict[int, str]
    now: datetime
    turns: int
    ingest_s: float

    async def aclose(self) -> None:
        await self.memory.aclose()
        await self.db.aclose()


async def ingest(
    sample: dict[str, Any],
    embedder: Any,
    workdir: Path,
    weights: SearchWeights,
    context_turns: int = 1,
    database_url: str | None = None,
) -> Ingested:
    """A fresh store with every turn of the conversation stored and indexed."""
    conv = sample["conversation"]
    person, persona = conv["speaker_a"], conv["speaker_b"]
    url = await asyncio.to_thread(fresh_url, database_url, str(workdir), sample["sample_id"])
    db = await asyncio.to_thread(Database.open, url)
    ledger = Ledger(db)
    memory = SQLiteMemory(
        db, embedder=embedder, weights=weights, embed_batch=512, context_turns=context_turns
    )
    scope = Scope(platform="locomo", channel=f"dm-{person}", user=person, persona=persona)
    actor = Actor(platform="locomo", id=person, display_name=person)
    dia_of: dict[int, str] = {}
    started = time.perf_counter()
    user_id = conversation_id = 0
    last_in: int | None = None
    orphans: list[int] = []  # persona lines before the person first spoke
    last_at = datetime.now(UTC)
    turns = 0
    for stamp, turns_of_session in sessions(conv):
        for i, turn in enumerate(turns_of_session):
            at = stamp + timedelta(seconds=30 * i)
            last_at = at
            text = turn["text"]
            caption = turn.get("blip_caption")
            if turn["speaker"] == person:
                attachments = (Attachment(kind="image", description=caption),) if caption else ()
                incoming = Incoming(
                    scope=scope, actor=actor, text=text, attachments=attachments, received_at=at
                )
                # What the engine stores: the text with attachments described.
                stored_text = text + (f"\n[image: {caption}]" if caption else "")
                stored = await ledger.record_incoming(incoming, stored_text)
                user_id, conversation_id = stored.user_id, stored.conversation_id
                message_id = last_in = stored.message_id
            else:
                if not conversation_id:  # the persona spoke first: the conversation exists
                    conversation_id = await ledger.conversation_id(scope)
                message_id = await ledger.record_reply(
                    ReplyRecord(
                        conversation_id=conversation_id,
                        user_id=user_id or None,
                        reply_to_id=last_in,
                        text=text + (f"\n[image: {caption}]" if caption else ""),
                        persona_id=persona,
                        created_at=at,
                    )
                )
                last_in = None
                if not user_id:
                    orphans.append(message_id)
            dia_of[message_id] = turn["dia_id"]
            memory.enqueue([("message", message_id)])
            turns += 1
    await memory.flush()
    ingest_s = time.perf_counter() - started
    if not user_id:
        raise SystemExit(f"{sample['sample_id']}: {person} never speaks")
    # Replies stored before the person first spoke have no user; give them one.
    await db.run(
        lambda c: c.execute(
            sql_text("UPDATE messages SET user_id = :uid WHERE user_id IS NULL"),
            {"uid": user_id},
        )
    )
    memory.enqueue([("message", m) for m in orphans])
    await memory.flush()
    return Ingested(
        db,
        memory,
        MemoryScope(user_id, conversation_id),
        dia_of,
        last_at + timedelta(days=1),
        turns,
        ingest_s,
    )


async def evaluate(
    store: Ingested, questions: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[float]]:
    """Recall@k per question, and each search's latency in ms."""
    rows = []
    latencies = []
    dia_of = store.dia_of
    for qa in questions:
        t = time.perf_counter()
        hits = await store.memory.search(store.scope, str(qa["question"]), k=max(KS), now=store.now)
        latencies.append((time.perf_counter() - t) * 1000)
        ranked = [dia_of[h.id] for h in hits if h.kind == "message" and h.id in dia_of]
        gold = evidence_ids(qa.get("evidence", []))
        row: dict[str, Any] = {"category": qa["category"]}
        for k in KS:
            top = set(ranked[:k])
            row[f"r@{k}"] = 1.0 if not gold else len(gold & top) / len(gold)
        rows.append(row)
    return rows, latencies


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"questions": len(rows)}
    for k in KS:
        out[f"recall@{k}"] = round(100 * statistics.fmean(r[f"r@{k}"] for r in rows), 1)
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    data = json.loads(args.data.read_text())[: args.limit]
    # The embedder the app builds (ONNX Runtime unless --runtime torch); None: BM25 only.
    settings = MemorySettings(embedding_model=args.embedding_model, embedding_runtime=args.runtime)
    embedder = build_embedder(settings)
    weights = SearchWeights()
    all_rows: list[dict[str, Any]] = []
    latencies: list[float] = []
    turns = 0
    ingest_s = 0.0
    with tempfile.TemporaryDirectory() as tmp, postgres_for(args.database_url, tmp) as url:
        for sample in data:
            store = await ingest(sample, embedder, Path(tmp), weights, database_url=url)
            rows, took = await evaluate(store, sample["qa"])
            await store.aclose()
            all_rows += rows
            latencies += took
            turns += store.turns
            ingest_s += store.ingest_s
            print(
                f"{sample['sample_id']}: {len(rows)} questions, recall@10 "
                f"{summarise(rows)['recall@10']}",
                file=sys.stderr,
            )
    result: dict[str, Any] = {
        "benchmark": "locomo10 evidence recall",
        "database": "postgresql" if args.database_url else "sqlite",
        "retriever": ("Memory on PostgreSQL: tsvector BM25 + pg_trgm + "
                      if args.database_url else "Memory on SQLite: FTS5 BM25 + ")
        + (f"{args.embedding_model} dense" if embedder else "no dense")
        + ", RRF, neighbour smoothing, recency/time boosts",
        "overall": summarise(all_rows),
        "by_category": {
            f"{c} {name}": summarise([r for r in all_rows if r["category"] == c])
            for c, name in CATEGORIES.items()
        },
        "search_ms": {
            "p50": round(percentile(latencies, 50), 2),
            "p99": round(percentile(latencies, 99), 2),
        },
        "ingest": {"turns": turns, "seconds": round(ingest_s, 1),
                   "turns_per_s": round(turns / ingest_s, 1)},
        "reference": {"bm25": {"recall@5": 52.0, "recall@10": 58.3, "recall@25": 66.6,
                               "recall@50": 70.7},
                      "dragon": {"recall@5": 56.7, "recall@10": 66.2, "recall@25": 76.7,
                                 "recall@50": 82.7}},
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or
                    platform.machine()},
    }  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--embedding-model", default="all-MiniLM-L6-v2")
    parser.add_argument("--runtime", choices=["auto", "onnx", "torch"], default="auto")
    parser.add_argument("--limit", type=int, default=None, help="first N conversations only")
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (wiped!), or pgserver")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.out is None:
        args.out = RESULTS / ("locomo_postgres.json" if args.database_url else "locomo.json")
    result = asyncio.run(main_async(args))
    head = "".join(f"{'@' + str(k):>7}" for k in KS)
    print(f"{'':<16}{head}{'n':>7}")
    for name, values in [("overall", result["overall"]), *result["by_category"].items()]:
        cells = "".join(f"{values[f'recall@{k}']:>7.1f}" for k in KS)
        print(f"{name:<16}{cells}{values['questions']:>7}")
    print(f"search p50 {result['search_ms']['p50']} ms, p99 {result['search_ms']['p99']} ms; "
          f"ingest {result['ingest']['turns_per_s']} turns/s")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
