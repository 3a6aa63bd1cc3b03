"""Fine-tune export of 1,000,000 stored messages: time and peak memory.

A temporary SQLite database (migrated like production, with the memory part's FTS
triggers dropped: they only slow down filling it) gets 1,000,000 messages by bulk
inserts: DM and group conversations of 20 messages, some with personal data to
scrub, some deleted, flagged, regenerated, rated 👍/👎, and people who opted out
and back in. Then `export_datasets` runs in a child process, so its peak RSS is its
own and not the generator's.

Prints, and writes to bench/results/export.json: rows, seconds, rows/s, peak RSS,
records per format and the filter counts.

    python bench/export.py [--messages 1000000] [--keep DIR]

Target on the 2-core reference machine: at most 60 s for 1,000,000 messages.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
PER_CONVERSATION = 20
T0 = datetime(2026, 1, 1, tzinfo=UTC)

_WORDS = [
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
    "work",
    "exam",
    "train",
    "coffee",
    "music",
    "movie",
    "book",
    "dream",
    "holiday",
    "cat",
    "garden",
    "snack",
    "nap",
    "weekend",
    "city",
    "river",
]
_PII = (
    "you can mail me at jo.doe{n}@example.com",
    "call me on +49 151 2345{n:04d}",
    "my number is 0151 2345{n:04d} ok?",
    "我的手机号是1380013{n:04d}",
    "see https://example.com/p?token=abc{n}&page=2",
    "ask @friend_{n} about it",
    "or write to jo{n} at gmail dot com",
    "my cell is 212.555.{n:04d}",
    "iban de89370400440532013000 please",
    "I live at {n} Evergreen Terrace",
    "my password is hunter{n}",
    "my server is 10.0.0.7",
)


def _text(rng: random.Random, n: int) -> str:
    words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 14)))
    if rng.random() < 0.05:
        words += ", " + rng.choice(_PII).format(n=n % 10000)
    if rng.random() < 0.15:
        words += f" at {rng.randint(0, 23)}:{rng.randint(0, 59):02d}"
    return words.capitalize() + rng.choice((".", "!", "?", " :)"))


def _ts(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def generate(path: Path, messages: int, seed: int = 7) -> dict[str, int]:
    """Fill a migrated database at `path` with `messages` messages; returns counts."""
    from bot.db import create_db_engine, upgrade

    engine = create_db_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    rng = random.Random(seed)
    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous=OFF")
    for (name,) in db.execute(
        "SELECT name FROM sqlite_master WHERE type='trigger' AND tbl_name='messages'"
    ).fetchall():
        db.execute(f'DROP TRIGGER "{name}"')
    source = (REPO / "personas" / "biscuit.yaml").read_text(encoding="utf-8")
    persona_hash = hashlib.sha256(source.encode()).hexdigest()
    db.execute(
        "INSERT INTO persona_versions (persona_id, content_hash, path, source, loaded_at) "
        "VALUES (?, ?, ?, ?, ?)",
        ("biscuit", persona_hash, "personas/biscuit.yaml", source, _ts(T0)),
    )
    users = max(10, messages // 500)
    zones = ("Europe/Berlin", "America/New_York", "Asia/Shanghai", None)
    db.executemany(
        "INSERT INTO users (id, platform, platform_user_id, display_name, is_bot, created_at, "
        "last_seen_at, opted_out, timezone) VALUES (?, 'telegram', ?, ?, 0, ?, ?, ?, ?)",
        (
            (u, str(10_000 + u), f"Person{u}", _ts(T0), _ts(T0), int(u % 97 == 0), zones[u % 4])
            for u in range(1, users + 1)
        ),
    )
    # Every 50th person opted out in March and back in in April.
    db.executemany(
        "INSERT INTO consent_events (user_id, opted_in, at) VALUES (?, ?, ?)",
        [
            row
            for u in range(50, users + 1, 50)
            for row in ((u, 0, _ts(T0 + timedelta(days=60))), (u, 1, _ts(T0 + timedelta(days=90))))
        ],
    )
    conversations = messages // PER_CONVERSATION
    db.executemany(
        "INSERT INTO conversations (id, key, platform, space, channel, persona_id, is_direct, "
        "created_at, last_message_at) VALUES (?, ?, 'telegram', NULL, ?, 'biscuit', ?, ?, ?)",
        (
            (c, f"telegram/-/{c}/-/biscuit", str(c), int(c % 10 != 0), _ts(T0), _ts(T0))
            for c in range(1, conversations + 1)
        ),
    )
    counts = {"messages": 0, "feedback": 0}
    message_id = 0
    batch: list[tuple[object, ...]] = []
    feedback: list[tuple[object, ...]] = []
    insert_message = (
        "INSERT INTO messages (id, conversation_id, user_id, direction, kind, status, text, "
        "truncated, reply_to_id, persona_id, persona_hash, backend, model, latency_ms, "
        "created_at, deleted_at, flagged_at) "
        "VALUES (?, ?, ?, ?, 'message', ?, ?, 0, ?, 'biscuit', ?, ?, ?, ?, ?, ?, ?)"
    )
    span = 300 * 24 * 3600
    for c in range(1, conversations + 1):
        user = rng.randint(1, users)
        at = T0 + timedelta(seconds=rng.randint(0, span))
        for _ in range(PER_CONVERSATION // 2):
            if c % 10 == 0:  # group: someone else may speak
                user = rng.randint(1, users)
            at += timedelta(seconds=rng.randint(20, 900))
            message_id += 1
            asked = message_id
            deleted = _ts(at) if rng.random() < 0.005 else None
            batch.append(
                (
                    asked,
                    c,
                    user,
                    "in",
                    "answered",
                    _text(rng, asked),
                    None,
                    None,
                    None,
                    None,
                    None,
                    _ts(at),
                    deleted,
                    None,
                )
            )
            roll = rng.random()
            if roll < 0.005 and len(batch) < 10**9:  # regenerated: an earlier reply first
                message_id += 1
                batch.append(
                    (
                        message_id,
                        c,
                        user,
                        "out",
                        "delivered",
                        _text(rng, message_id),
                        asked,
                        persona_hash,
                        "openai",
                        "biscuit-lora",
                        900.0,
                        _ts(at + timedelta(seconds=1)),
                        None,
                        None,
                    )
                )
            message_id += 1
            flagged = _ts(at) if rng.random() < 0.005 else None
            batch.append(
                (
                    message_id,
                    c,
                    user,
                    "out",
                    "delivered",
                    _text(rng, message_id),
                    asked,
                    persona_hash,
                    "openai",
                    "biscuit-lora",
                    850.0,
                    _ts(at + timedelta(seconds=2)),
                    None,
                    flagged,
                )
            )
            if rng.random() < 0.02:
                emoji = "👍" if rng.random() < 0.6 else "👎"
                feedback.append((message_id, user, emoji, 1, _ts(at + timedelta(seconds=30))))
        if len(batch) >= 50_000:
            db.executemany(insert_message, batch)
            counts["messages"] += len(batch)
            batch.clear()
        if message_id >= messages:
            break
    db.executemany(insert_message, batch)
    counts["messages"] += len(batch)
    db.executemany(
        "INSERT INTO feedback (message_id, user_id, emoji, added, at) VALUES (?, ?, ?, ?, ?)",
        feedback,
    )
    counts["feedback"] = len(feedback)
    counts["users"] = users
    counts["conversations"] = conversations
    db.commit()
    db.execute("ANALYZE")
    db.close()
    return counts


def run_export(db: Path, out: Path) -> dict[str, object]:
    """Export `db` to `out` in this process; timing and peak RSS of this process."""
    from bot.config import load_settings
    from bot.export import export_datasets

    os.environ.setdefault("BOT_EXPORT__HMAC_KEY", "bench-key-" + "x" * 32)
    settings = load_settings(None, {"database": {"url": f"sqlite:///{db}"}})
    started = time.perf_counter()
    manifest = export_datasets(settings, datetime(2027, 1, 1, tzinfo=UTC), out=out, force=True)
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    data = manifest.data
    return {
        "seconds": round(seconds, 2),
        # CPU time of the whole process (both threads, imports included): the work
        # itself, whatever else the machine's cores are busy with.
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "messages_read": sum(p["messages_read"] for p in data["personas"].values()),
        "messages_exported": sum(p["messages_exported"] for p in data["personas"].values()),
        "files": {k: v["records"] for k, v in data["files"].items()},
        "output_mib": round(sum(v["bytes"] for v in data["files"].values()) / 2**20, 1),
        "filters": {k: v for k, v in data["filters"].items() if v},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="generate into (or reuse) this directory")
    parser.add_argument("--child", nargs=2, metavar=("DB", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_export(Path(args.child[0]), Path(args.child[1]))))
        return

    with tempfile.TemporaryDirectory(prefix="bench-export-") as scratch:
        where = args.keep or Path(scratch)
        where.mkdir(parents=True, exist_ok=True)
        db = where / "ledger.db"
        counts: dict[str, int] = {}
        generate_s = 0.0
        if not db.exists():
            started = time.perf_counter()
            counts = generate(db, args.messages)
            generate_s = time.perf_counter() - started
            print(f"generated {counts} in {generate_s:.1f} s", flush=True)
        child = subprocess.run(
            [sys.executable, __file__, "--child", str(db), str(where / "out")],
            check=True,
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        result = json.loads(child.stdout.strip().splitlines()[-1])
    rows = int(result["messages_read"])
    report = {
        "benchmark": "export",
        "messages": args.messages,
        "generated": counts,
        "generate_s": round(generate_s, 1),
        **result,
        "rows_per_s": round(rows / float(result["seconds"])),
        "target_s": 60,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m_after": round(os.getloadavg()[0], 2),
        },
    }
    print(json.dumps(report, indent=2, ensure_ascii=False))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "export.json").write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )


if __name__ == "__main__":
    main()
