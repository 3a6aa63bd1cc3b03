"""What the output checks cost per reply, with no model.

Runs the declined-topic, blocklist (a 500-term channel list and a 200-term persona
list) and personal-data checks, with the human-claim check beside them, on ordinary
replies of about 2000 characters: once on the whole reply (not streamed), and as the
stream guard screens it while it arrives in word-sized pieces.

Prints, and writes to bench/results/safety_output.json: milliseconds per reply, whole
and streamed, for the human-claim check alone and for all local checks.

    python bench/safety_output.py [--replies 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from pathlib import Path

from bot.messages import Scope, TurnKind
from bot.personas import parse_persona
from bot.safety.disclosure import HumanClaimCheck
from bot.safety.moderation import BlocklistCheck, DeclinedTopicCheck, PersonalDataCheck
from bot.safety.stage import OutputCheck, OutputContext, SafetyStage
from bot.safety.stream import StreamGuard

RESULTS = Path(__file__).parent / "results"
PERSONA = (
    "version: 1\nid: t\nname: T\nsystem_prompt: x\nsafety:\n"
    "  decline_topics: [medical advice, politics, 考试作弊]\n"
    "  blocklist: [" + ", ".join(f"pword{i}" for i in range(200)) + "]\n"
)
REPLY = (
    "That sounds like a lovely plan, and I think we could meet at 12:30 near the old "
    "station. Bring the map you drew last week, and maybe some snacks for the road! "
) * 13


def contexts(n: int) -> list[OutputContext]:
    loaded = parse_persona(PERSONA.encode(), Path("t.yaml"))
    scope = Scope(platform="discord", space="g", channel="c", user="u", persona="t")
    return [
        OutputContext(scope, loaded, TurnKind.MESSAGE, 1, message_id=i, incoming_text="hi!")
        for i in range(n)
    ]


async def measure(checks: list[OutputCheck], n: int) -> dict[str, float]:
    stage = SafetyStage(output_checks=checks)
    whole, streamed = [], []
    for ctx in contexts(n):
        started = time.perf_counter()
        await stage.after_generation(ctx, REPLY)
        whole.append((time.perf_counter() - started) * 1000)
    for ctx in contexts(n):

        async def show(piece: str) -> None:
            return None

        guard = StreamGuard(stage, ctx, show)
        started = time.perf_counter()
        for word in REPLY.split(" "):
            await guard.feed(word + " ")
        await stage.after_generation(ctx, REPLY)
        await guard.flush()
        streamed.append((time.perf_counter() - started) * 1000)
    return {
        "whole_ms_p50": round(statistics.median(whole), 2),
        "streamed_ms_p50": round(statistics.median(streamed), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replies", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS / "safety_output.json")
    args = parser.parse_args()
    channel = {"*": [f"cword{i}" for i in range(500)]}
    runs: dict[str, list[OutputCheck]] = {
        "human_claim": [HumanClaimCheck()],
        "all_local": [
            HumanClaimCheck(),
            DeclinedTopicCheck(),
            BlocklistCheck(channel),
            PersonalDataCheck(),
        ],
    }
    result: dict[str, object] = {
        "python": platform.python_version(),
        "reply_chars": len(REPLY),
        "pieces": len(REPLY.split(" ")),
    }
    for name, checks in runs.items():
        result[name] = asyncio.run(measure(checks, args.replies))
        print(f"{name}: {result[name]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
