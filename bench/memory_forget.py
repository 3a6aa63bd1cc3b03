"""What a forget costs at scale: `SQLiteMemory.forget` of one message (delete, FTS5
optimize of both message indexes, neighbour vector dropped, WAL truncated) in a
database of 10k and 100k messages, built as `memory_scale.py` builds it.

The FTS5 optimize is what makes a forget complete (a plain delete leaves the
terms in older segments), and it rewrites the message indexes: its cost grows
with the table, and the writer is busy meanwhile (turns wait).

    python bench/memory_forget.py [--sizes 10000,100000] [--forgets 3]
        [--database-url postgresql+psycopg://…|pgserver]

On PostgreSQL (`--database-url`, wiped; see bench/memory_db.py) a forget is the
delete, then `VACUUM (FULL, ANALYZE)` of each table it touched and the WAL
switches (`bot/memory/pg_search.py`); the seconds of each step are reported.

Prints, and writes bench/results/memory_forget.json (memory_forget_postgres.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory_scale import build, build_pg_indexes, checkpoint, drop_pg_indexes, vocabulary
from sqlalchemy import text
from structlog.testing import capture_logs

from bench.memory_db import fresh_url, postgres_for
from bot.db import Database
from bot.memory.store import SQLiteMemory

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


async def one_size(
    size: int, forgets: int, workdir: Path, pg_url: str | None = None
) -> dict[str, Any]:
    rng = random.Random(size)
    words, weights = vocabulary(rng)
    path = workdir / f"forget-{size}.db"
    url = await asyncio.to_thread(fresh_url, pg_url, str(workdir), f"forget-{size}")
    db = Database.open(url)
    if pg_url is not None:
        await drop_pg_indexes(db)
    scope = await build(db, size, rng, words, weights)
    if pg_url is not None:
        await asyncio.to_thread(build_pg_indexes, url)
    else:
        await asyncio.to_thread(checkpoint, path)
    memory = SQLiteMemory(db)  # no model: the cost measured is the database's
    ids = await db.read(
        lambda c: [
            int(r[0])
            for r in c.execute(
                text(
                    "SELECT id FROM messages WHERE user_id = :uid AND direction = 'in' "
                    "ORDER BY id DESC LIMIT :n"
                ),
                {"uid": scope.user_id, "n": forgets * 10},
            )
        ]
    )
    times = []
    steps: list[dict[str, Any]] = []
    for item in ids[::10][:forgets]:
        start = time.perf_counter()
        with capture_logs() as logs:
            await memory.forget(scope.user_id, f"m{item}")
        times.append((time.perf_counter() - start) * 1000)
        steps += [
            {k: v for k, v in e.items() if k not in ("event", "log_level")}
            for e in logs
            if e["event"] == "memory.forget_scrubbed"
        ]
    size_mb = await db.read(
        lambda c: (
            c.execute(text("SELECT pg_database_size(current_database())")).scalar() / 1e6
            if c.dialect.name == "postgresql"
            else path.stat().st_size / 1e6
        )
    )
    await memory.aclose()
    await db.aclose()
    row: dict[str, Any] = {
        "messages": size,
        "forget_ms": [round(t, 1) for t in times],
        "db_mb": round(size_mb, 1),
    }
    if steps:
        row["scrub_s"] = steps
    return row


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "database": "postgresql" if args.database_url else "sqlite",
    }
    with tempfile.TemporaryDirectory() as tmp, postgres_for(args.database_url, tmp) as url:
        out["sizes"] = [
            await one_size(int(s), args.forgets, Path(tmp), url) for s in args.sizes.split(",")
        ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--forgets", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (wiped!), or pgserver")
    args = parser.parse_args()
    result = asyncio.run(main_async(args))
    for row in result["sizes"]:
        print(f"{row['messages']:>9,} messages ({row['db_mb']} MB): forget {row['forget_ms']} ms")
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "memory_forget_postgres.json" if args.database_url else "memory_forget.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
