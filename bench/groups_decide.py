"""What deciding who answers a group message costs (bot/groups/decide.py), with no
database: four personas present (names, nicknames, keywords, one talkative), the
channel state kept by `GroupState`, over ordinary chat lines and hostile ones
(a 64 KB line of near-miss names).

Prints, and writes to bench/results/groups_decide.json: microseconds per ordinary
message (p50, p99, mean) and per hostile message.

    python bench/groups_decide.py [--messages 20000]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

from bot.groups.decide import MessageFacts, Present, decide
from bot.groups.policy import SpeakPolicy
from bot.groups.state import GroupState

PRESENT = [
    Present("tess", ("Tess", "Tessie"), SpeakPolicy(keywords=("cats", "kittens"))),
    Present("otto", ("Otto",), SpeakPolicy(mode="talkative", talkativeness=0.2, cooldown_s=30)),
    Present("yu", ("小雨",), SpeakPolicy(keywords=("天气",))),
    Present("bisc", ("Biscuit", "Bisc"), SpeakPolicy(mode="always", cooldown_s=120)),
]
ORDINARY = [
    "hey, how was your day?",
    "Otto, what do you think about this?",
    "I had pizza for dinner and it was amazing",
    "今天天气真好，我们去公园吧",
    "cats are better than dogs, fight me",
    "Tess and Biscuit: movie tonight?",
    "lol",
    "can someone help me plan my trip to Kyoto next month?",
]
HOSTILE = ("Tes Ott Biscui Tessa Ottoman 小 " * 2400)[:65536]


def run(messages: int) -> dict[str, object]:
    rng = random.Random(0)
    state = GroupState()
    times: list[float] = []
    for i in range(messages):
        facts = MessageFacts(ORDINARY[i % len(ORDINARY)], platform_addressed=i % 9 == 0)
        key = f"c{i % 50}"
        started = time.perf_counter()
        view = state.view(key, float(i), replies_per_minute=20, max_bot_chain=3)
        decision = decide(facts, PRESENT, view, rng, float(i))
        state.record(key, facts, decision, float(i))
        times.append((time.perf_counter() - started) * 1e6)
    times.sort()
    hostile: list[float] = []
    for _ in range(50):
        started = time.perf_counter()
        decide(MessageFacts(HOSTILE), PRESENT, state.view("h", 0, replies_per_minute=20,
               max_bot_chain=3), rng, 0.0)  # fmt: skip
        hostile.append((time.perf_counter() - started) * 1e6)
    return {
        "messages": messages,
        "personas": len(PRESENT),
        "ordinary_us": {
            "p50": round(times[len(times) // 2], 1),
            "p99": round(times[int(len(times) * 0.99)], 1),
            "mean": round(statistics.fmean(times), 1),
        },
        "hostile_64k_us": {
            "p50": round(statistics.median(hostile), 1),
            "max": round(max(hostile), 1),
        },
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    result = run(parser.parse_args().messages)
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results" / "groups_decide.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
