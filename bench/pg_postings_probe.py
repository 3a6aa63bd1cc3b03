"""A probe for planners: BM25 over a postings table against the committed word search.

Not a product path. #10's search target (p50 <= 20 ms at 100k memories in one
scope on PostgreSQL) is missed, and the word statement is the longer of the two
legs. This script measures the design that would replace it, on a database that
`bench/memory_scale.py --database-url URL` left behind:

- a table of one row per (scope, lexeme, message): `unnest(search_words)`, with the
  message's lexeme count, and a btree on (user_id, conversation_id, lexeme) that
  INCLUDEs the message id and length, so that a word's postings in a scope are one
  index-only range scan (what FTS5's doclists are to SQLite);
- exact BM25 from those postings: the document frequency of each word is its range's
  row count, so no word is left out and no frequency is floored (the committed
  statement prunes words in 2% of a large scope's rows; see pg_words.py).

It builds the table (dropped again at the end), then runs the committed statement
(`lexical_lists`, messages only) and the postings statement for each LoCoMo
question, interleaved, and reports p50/p90/p99 of each and how many of the
committed statement's top 10 the exact one also returns.

    python bench/pg_postings_probe.py --database-url postgresql+psycopg://…/db
        [--queries 200] [--out bench/results/pg_postings_probe.json]

What a product version would still need (not here): a migration with triggers that
keep the postings in step with inserts, edits, soft deletes and superseded facts;
the table in forget's VACUUM FULL list (it holds the words); excluded from
`bot db copy`, which would rebuild it; the same for facts.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.memory_scale import percentile, questions, vocabulary  # noqa: E402
from bot.memory.pg_words import BM25_B, BM25_K1, TS_CONFIG, lexical_lists  # noqa: E402
from bot.memory.query import tsquery_expression  # noqa: E402
from bot.memory.rows import SPOKEN  # noqa: E402
from bot.memory.types import MemoryScope  # noqa: E402

TABLE = "probe_message_terms"
BUILD = [
    f"DROP TABLE IF EXISTS {TABLE}",
    f"CREATE TABLE {TABLE} AS SELECT m.user_id, m.conversation_id, l.lexeme, "
    "m.id AS message_id, length(m.search_words)::smallint AS len "
    "FROM messages m, unnest(m.search_words) AS l "
    f"WHERE m.deleted_at IS NULL AND m.kind IN {SPOKEN}",
    f"CREATE INDEX {TABLE}_scope ON {TABLE} (user_id, conversation_id, lexeme) "
    "INCLUDE (message_id, len)",
]
# Each posting's IDF from its word's row count (a window over the index order, so
# no sort), summed per message and normalised by its length as FTS5's bm25() does.
POSTINGS_BM25 = text(
    f"WITH p AS MATERIALIZED (SELECT t.message_id, t.len, "
    f"count(*) OVER (PARTITION BY t.lexeme) AS df FROM {TABLE} t "
    "WHERE t.user_id = :uid AND t.conversation_id = :cid "
    f"AND t.lexeme = ANY (tsvector_to_array(to_tsvector('{TS_CONFIG}', :q)))) "
    "SELECT message_id FROM p GROUP BY message_id, len ORDER BY "
    "sum(ln(1::float8 + (CAST(:docs AS float8) - df + 0.5::float8) / (df + 0.5::float8))) "
    f"/ (1 + {BM25_K1}::float8 * ({1 - BM25_B}::float8 + {BM25_B}::float8 * len "
    "/ CAST(:mean_len AS float8))) DESC, message_id DESC LIMIT :n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", required=True, help="a memory_scale.py database")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/pg_postings_probe.json")
    args = parser.parse_args()
    if args.queries < 1:
        parser.error("--queries must be at least 1")
    rng = random.Random(7)  # memory_scale.py's seed: the same questions
    words, _ = vocabulary(rng)
    qs = questions(rng, args.queries, words)
    engine = create_engine(args.database_url)
    with engine.connect() as conn:
        uid, cid, docs = conn.execute(
            text(
                "SELECT user_id, conversation_id, count(*) FROM messages "
                "GROUP BY 1, 2 ORDER BY 3 DESC LIMIT 1"
            )
        ).one()
    result: dict[str, Any] = {"scope_rows": int(docs)}
    try:  # the table goes again whatever fails, the build included
        with engine.connect() as conn:
            started = time.perf_counter()
            for statement in BUILD:
                conn.execute(text(statement))
            conn.commit()
            result["build_s"] = round(time.perf_counter() - started, 2)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"VACUUM ANALYZE {TABLE}"))  # index-only scans need the map
        with engine.connect() as conn:
            result |= _compare(conn, MemoryScope(uid, cid), qs)
            size = conn.execute(text(f"SELECT pg_total_relation_size('{TABLE}')")).scalar()
            result["table_mb"] = round(int(size or 0) / 2**20, 1)
    finally:
        with engine.connect() as conn:
            conn.execute(text(f"DROP TABLE IF EXISTS {TABLE}"))
            conn.commit()
        engine.dispose()
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


def _compare(conn: Any, scope: MemoryScope, qs: list[str]) -> dict[str, Any]:
    sizes: dict[str, tuple[int, float]] = {}
    lexical_lists(conn, scope, ["message"], "warm", [], [], 100, sizes)  # counts the scope
    docs, mean_len = sizes["message"]
    committed: list[float] = []
    postings: list[float] = []
    kept: list[float] = []
    for q in qs:
        tsq = tsquery_expression(q)
        if tsq is None:
            continue
        t = time.perf_counter()
        lists = lexical_lists(conn, scope, ["message"], tsq, [], [], 100, sizes)
        committed.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        exact = conn.execute(
            POSTINGS_BM25,
            {"uid": scope.user_id, "cid": scope.conversation_id, "q": tsq.replace(" | ", " "),
             "docs": docs, "mean_len": mean_len, "n": 100},
        ).scalars().all()  # fmt: skip
        postings.append((time.perf_counter() - t) * 1000)
        top = [i for _, i in lists[0][:10]] if lists else []
        if top:
            kept.append(len(set(top) & set(exact[:10])) / len(top))
        conn.rollback()

    def summary(xs: list[float]) -> dict[str, float]:
        return {f"p{q}_ms": round(percentile(xs, q), 2) for q in (50, 90, 99)}

    return {
        "queries": len(committed),
        "committed_statement": summary(committed),
        "postings_exact_bm25": summary(postings),
        "committed_top10_in_exact_top10": round(sum(kept) / max(len(kept), 1), 3),
    }


if __name__ == "__main__":
    main()
