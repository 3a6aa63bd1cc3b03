"""Lorebook cost per turn: a large book against long messages.

A book of N entries (plain words, phrases, CJK keys, regex keys, secondary keys, some
constant, some at depth) evaluated against a new message and four history messages of
4,000 characters each, with recursion on. Reports the median and p99 milliseconds of
`LoreBook.evaluate` and the load time of the book (validation, regex checks, compile).

Prints, and writes to bench/results/lore.json.

    .venv/bin/python bench/lore.py [--entries 1000] [--turns 200]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from bot.llm import ApproxTokenCounter
from bot.personas.lorebook import Lore, LoreBook, LoreScan

_rng = random.Random(1)
#: A vocabulary of distinct made-up words (no word inside another, as in real books).
WORDS = sorted({"".join(_rng.choices("bcdfghjklmnprstvz", k=7)) for _ in range(5000)})
CJK = ["灯塔", "海鸥", "考试", "猫", "ねこ", "東京", "学校", "图书馆"]


def make_lore(n: int, rng: random.Random) -> Lore:
    entries = []
    for i in range(n):
        kind = i % 5
        keys = [rng.choice(WORDS), f"{rng.choice(WORDS)} {rng.choice(WORDS)}"]
        if kind == 1:
            keys.append(rng.choice(CJK) + str(i % 10))
        if kind == 2:
            keys.append(f"/{rng.choice(WORDS)}[0-9]?x+/i")
        entry = {"name": f"e{i}", "keys": keys, "text": f"Entry {i} mentions {rng.choice(WORDS)}."}
        if kind == 3:
            entry |= {"secondary_keys": [rng.choice(WORDS)], "selective_logic": "and_any"}
        if kind == 4 and i % 50 == 4:
            entry |= {"constant": True}
        if i % 7 == 0:
            entry |= {"position": "at_depth", "depth": i % 5}
        entries.append(entry)
    return Lore.model_validate(
        {"budget_tokens": 800, "recursive": True, "max_recursion": 3, "entries": entries}
    )


def text(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    while sum(map(len, out)) < chars:
        out.append(rng.choice(WORDS) if rng.random() < 0.02 else rng.choice(["the", "a", "猫"]))
    return " ".join(out)[:chars]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=200)
    args = parser.parse_args()
    rng = random.Random(7)
    started = time.perf_counter()
    lore = make_lore(args.entries, rng)
    book = LoreBook(lore)
    load_ms = (time.perf_counter() - started) * 1000
    tokens = ApproxTokenCounter()
    times: list[float] = []
    fired: list[int] = []
    for _ in range(args.turns):
        messages = [text(rng, 4000) for _ in range(5)]
        t = time.perf_counter()
        result = book.evaluate(LoreScan(messages, chat_length=10), tokens)
        times.append((time.perf_counter() - t) * 1000)
        fired.append(len(result.fired) + len(result.left_out))
    times.sort()
    report = {
        "entries": args.entries,
        "turns": args.turns,
        "message_chars": 4000,
        "messages_scanned": 5,
        "load_ms": round(load_ms, 1),
        "evaluate_ms_median": round(statistics.median(times), 2),
        "evaluate_ms_p99": round(times[int(len(times) * 0.99) - 1], 2),
        "fired_median": statistics.median(fired),
    }
    print(json.dumps(report, indent=2))
    out = Path(__file__).parent / "results" / "lore.json"
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
