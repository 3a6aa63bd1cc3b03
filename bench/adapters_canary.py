"""What adapter serving costs: the routing of each reply, and a canary comparison.

Routing: `in_canary` per call, and `AdapterRouter.adapter_for` per reply with the
registry cached (what the engine pays on every turn). Comparison: `compare_canary`
over a ledger of N replies of one persona (half by the canary), a third of them
with a 👍 or 👎, in a real SQLite file.

Prints, and writes to bench/results/adapters_canary.json.

    python bench/adapters_canary.py [--replies 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert

from bot.db import Database
from bot.models import Conversation, Feedback, Message, User
from bot.train.canary import AdapterRouter, compare_canary, in_canary
from bot.train.registry import AdapterRegistry

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def _fill(conn: Connection, replies: int) -> None:
    users: Any = User.__table__  # type: ignore[attr-defined]
    convs: Any = Conversation.__table__  # type: ignore[attr-defined]
    msgs: Any = Message.__table__  # type: ignore[attr-defined]
    feedback: Any = Feedback.__table__  # type: ignore[attr-defined]
    conn.execute(insert(users).values(id=1, platform="b", platform_user_id="u",
                                      created_at=T0, last_seen_at=T0))  # fmt: skip
    conn.execute(insert(convs).values(id=1, key="b:dm:u", platform="b", channel="dm",
                                      persona_id="sam", is_direct=True, created_at=T0,
                                      last_message_at=T0))  # fmt: skip
    at = T0 + timedelta(hours=1)
    rows: list[dict[str, Any]] = []
    votes: list[dict[str, Any]] = []
    for i in range(replies):
        asked, reply = 2 * i + 1, 2 * i + 2
        base = {"conversation_id": 1, "text": "x", "persona_id": "sam", "created_at": at}
        rows.append({**base, "id": asked, "direction": "in", "status": "answered",
                     "user_id": 1, "model": None, "reply_to_id": None})  # fmt: skip
        rows.append({**base, "id": reply, "direction": "out", "status": "delivered",
                     "user_id": None, "model": "sam-v2" if i % 2 else "sam-v1",
                     "reply_to_id": asked})  # fmt: skip
        if i % 3 == 0:
            emoji = "👎" if i % 5 == 0 else "👍"
            votes.append({"message_id": reply, "user_id": 1, "emoji": emoji, "added": True,
                          "at": at})  # fmt: skip
    conn.execute(insert(msgs), rows)
    conn.execute(insert(feedback), votes)


async def main(replies: int) -> dict[str, Any]:
    calls = 200_000
    started = time.perf_counter()
    routed = sum(in_canary(f"telegram:dm:{i}", "sam-v2", 0.1) for i in range(calls))
    in_canary_us = (time.perf_counter() - started) / calls * 1e6

    with tempfile.TemporaryDirectory() as tmp:
        db = Database.open(f"sqlite:///{Path(tmp) / 'bench.db'}")
        try:
            registry = AdapterRegistry(db)
            for name, share in (("sam-v1", 1.0), ("sam-v2", 0.5)):
                await registry.register(
                    name=name, persona_id="sam", path="/x", sha256="0" * 64,
                    base_model="tiny", rank=4, report={}, canary_share=share, now=T0,
                )  # fmt: skip
            router = AdapterRouter(registry, refresh_s=3600)
            await router.adapter_for("sam", "warm", None)
            n = 50_000
            started = time.perf_counter()
            for i in range(n):
                await router.adapter_for("sam", f"telegram:dm:{i}", None)
            route_us = (time.perf_counter() - started) / n * 1e6

            await db.run(lambda conn: _fill(conn, replies))
            canary = await registry.get("sam-v2")
            assert canary is not None
            times = []
            for _ in range(3):
                started = time.perf_counter()
                verdict = await compare_canary(db, canary, margin=0.05, min_feedback=30)
                times.append(time.perf_counter() - started)
        finally:
            await db.aclose()
    return {
        "machine": platform.platform(),
        "in_canary_us": round(in_canary_us, 3),
        "in_canary_share_at_0.1": round(routed / calls, 4),
        "router_adapter_for_us": round(route_us, 3),
        "compare_replies": replies,
        "compare_s_best": round(min(times), 4),
        "compare_verdict": verdict.reason,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=20_000)
    args = parser.parse_args()
    out = asyncio.run(main(args.replies))
    print(json.dumps(out, indent=2, ensure_ascii=False))
    path = Path(__file__).parent / "results" / "adapters_canary.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
