"""What a forget costs at scale: `SQLiteMemory.forget` of one message (delete, FTS5
optimize of both message indexes, neighbour vector dropped, WAL truncated) in a
database of 10k and 100k messages, built as `memory_scale.py` builds it.

The FTS5 optimize is what makes a forget complete (a plain delete leaves the
terms in older segments), and it rewrites the message indexes: its cost grows
with the table, and the writer is busy meanwhile (turns wait).

    python bench/memory_forget.py [--sizes 10000,100000] [--forgets 3]

Prints, and writes bench/results/memory_forget.json.
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

from memory_scale import build, checkpoint, vocabulary

from bot.db import Database
from bot.memory.store import SQLiteMemory

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


async def one_size(size: int, forgets: int, workdir: Path) -> dict[str, Any]:
    rng = random.Random(size)
    words, weights = vocabulary(rng)
    path = workdir / f"forget-{size}.db"
    db = Database.open(f"sqlite:///{path}")
    scope = await build(db, size, rng, words, weights)
    await asyncio.to_thread(checkpoint, path)
    memory = SQLiteMemory(db)  # no model: the cost measured is the database's
    ids = await db.read(
        lambda c: [
            int(r[0])
            for r in c.exec_driver_sql(
                "SELECT id FROM messages WHERE user_id = ? AND direction = 'in' "
                "ORDER BY id DESC LIMIT ?",
                (scope.user_id, forgets * 10),
            )
        ]
    )
    times = []
    for item in ids[::10][:forgets]:
        start = time.perf_counter()
        await memory.forget(scope.user_id, f"m{item}")
        times.append((time.perf_counter() - start) * 1000)
    await memory.aclose()
    await db.aclose()
    size_mb = path.stat().st_size / 1e6
    return {"messages": size, "forget_ms": [round(t, 1) for t in times], "db_mb": round(size_mb, 1)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"machine": platform.machine(), "python": platform.python_version()}
    with tempfile.TemporaryDirectory() as tmp:
        out["sizes"] = [
            await one_size(int(s), args.forgets, Path(tmp)) for s in args.sizes.split(",")
        ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--forgets", type=int, default=3)
    result = asyncio.run(main_async(parser.parse_args()))
    for row in result["sizes"]:
        print(f"{row['messages']:>9,} messages ({row['db_mb']} MB): forget {row['forget_ms']} ms")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "memory_forget.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
