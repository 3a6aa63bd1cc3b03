"""What the safety stage's text checks cost per message, with no model.

Runs the crisis phrases (all five languages) and the disclosure-question and
human-claim checks over a mix of ordinary chat messages (short, as people write them)
and a few hostile shapes of one megabyte each.

Prints, and writes to bench/results/safety_scan.json: microseconds per ordinary
message (p50, p99, mean) for each check, and milliseconds per hostile megabyte.

    python bench/safety_scan.py [--messages 20000]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from bot.safety.crisis import CrisisDetector
from bot.safety.disclosure import asks_if_human, claims_human

ORDINARY = [
    "hey, how was your day?",
    "I had pizza for dinner and it was amazing",
    "this homework is killing me lol",
    "can you help me plan my trip to Kyoto next month?",
    "今天天气真好，我们去公园吧",
    "Ich habe heute Fußball gespielt und wir haben gewonnen!",
    "¿Qué película me recomiendas para esta noche?",
    "明日は試験があるので、早く寝ます。",
    "I don't know, I'm just tired of school sometimes",
    "are you free to talk tonight?",
]
HOSTILE = {
    "letters": "a" * 1_000_000,
    "words": "kill " * 200_000,
    "spaced": "k i l l " * 125_000,
    "zero-width": "\u200b" * 1_000_000,
    "cjk": "想" * 1_000_000,
}


def per_message_us(check: object, messages: list[str]) -> dict[str, float]:
    times = []
    for text in messages:
        started = time.perf_counter()
        check(text)  # type: ignore[operator]
        times.append((time.perf_counter() - started) * 1e6)
    times.sort()
    return {
        "p50_us": round(statistics.median(times), 1),
        "p99_us": round(times[int(len(times) * 0.99)], 1),
        "mean_us": round(statistics.fmean(times), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    detector = CrisisDetector()
    messages = [ORDINARY[i % len(ORDINARY)] + f" {i}" for i in range(args.messages)]
    result: dict[str, object] = {
        "python": platform.python_version(),
        "messages": args.messages,
        "crisis": per_message_us(detector.detect, messages),
        "disclosure_question": per_message_us(asks_if_human, messages),
        "human_claim": per_message_us(claims_human, messages),
    }
    hostile: dict[str, float] = {}
    for name, text in HOSTILE.items():
        started = time.perf_counter()
        detector.detect(text)
        asks_if_human(text)
        claims_human(text)
        hostile[name] = round((time.perf_counter() - started) * 1000, 1)
    result["hostile_megabyte_ms"] = hostile
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results" / "safety_scan.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
