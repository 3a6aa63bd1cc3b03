"""Hybrid ranking, written once for every backend: reciprocal rank fusion of the
ranked lists a backend returns, the neighbour-turn share, the recency, importance,
time-range and speaker multipliers; and packing the hits into the prompt.

Backends only produce ranked id lists (and read the candidates back in scope);
everything that decides the order of what a person is reminded of lives here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from datetime import datetime
from typing import Any, TypeVar, cast

from bot.llm.base import TokenCounter
from bot.memory.timeparse import TimeRange
from bot.memory.types import MemoryHit, SearchWeights

__all__ = ["both", "fuse", "pack_memories", "score", "spread_to_neighbours"]

A = TypeVar("A")
B = TypeVar("B")

#: A candidate: (kind, id).
Key = tuple[str, int]


async def both(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Both results, awaited concurrently; a failure is raised once both are done
    (so neither is left running unobserved)."""
    a, b = await asyncio.gather(first, second, return_exceptions=True)
    for outcome in (a, b):
        if isinstance(outcome, BaseException):
            raise outcome
    return cast(A, a), cast(B, b)


def fuse(lists: Sequence[tuple[Sequence[Key], float]], rrf_k: float) -> dict[Key, float]:
    """Reciprocal rank fusion of (ranked list, weight) pairs."""
    fused: dict[Key, float] = {}
    for ranked, weight in lists:
        for rank, key in enumerate(ranked):
            fused[key] = fused.get(key, 0.0) + weight / (rrf_k + rank + 1)
    return fused


def spread_to_neighbours(
    fused: dict[Key, float], details: dict[Key, dict[str, Any]], share: float
) -> None:
    """A message inherits part of the score of the message before and after it among
    the candidates (a question and its answer belong together). Only ids already in
    scope and among the candidates take part, so nothing new can enter."""
    ids = sorted(i for kd, i in fused if kd == "message" and ("message", i) in details)
    base = {i: fused[("message", i)] for i in ids}
    for pos, i in enumerate(ids):
        around = []
        if pos > 0 and ids[pos - 1] >= i - 1:
            around.append(base[ids[pos - 1]])
        if pos + 1 < len(ids) and ids[pos + 1] <= i + 1:
            around.append(base[ids[pos + 1]])
        if around:
            fused[("message", i)] += share * max(around)


def score(
    fused: dict[Key, float],
    details: dict[Key, dict[str, Any]],
    weights: SearchWeights,
    *,
    now: datetime,
    period: TimeRange | None,
    named: set[str],
    excluded: set[int],
    k: int,
) -> list[MemoryHit]:
    """The `k` best candidates, best first. Only keys found in `details` (read back
    in scope) can be returned: a candidate missing there is deleted or not ours."""
    if weights.neighbour > 0:
        spread_to_neighbours(fused, details, weights.neighbour)
    hits: list[MemoryHit] = []
    for key, base in fused.items():
        row = details.get(key)
        if row is None or (key[0] == "message" and key[1] in excluded):
            continue  # deleted since it was indexed, out of scope, or already shown
        at = row["at"]
        age_days = max(0.0, (now - at).total_seconds() / 86400)
        recency = 0.5 ** (age_days / weights.half_life_days)
        factor = 1 + weights.recency * recency + weights.importance * row["importance"]
        if period is not None and period.contains(at):
            factor += weights.time_boost
        if row["name"] and row["name"] in named:
            factor += weights.speaker
        hits.append(
            MemoryHit(
                kind=key[0],  # type: ignore[arg-type]
                id=key[1],
                text=row["text"],
                score=base * factor,
                at=at,
                speaker=row["speaker"],
                source_ids=row["sources"],
            )
        )
    hits.sort(key=lambda h: (-h.score, -h.id))
    return hits[:k]


def _date(at: datetime) -> str:
    return at.strftime("%Y-%m-%d")


def pack_memories(
    hits: Sequence[MemoryHit],
    summaries: Sequence[MemoryHit],
    budget_tokens: int,
    tokens: TokenCounter,
) -> str:
    """Memory text for the system message: facts, then summaries, then recalled
    messages, each dated, most relevant first within each part; what does not fit
    in `budget_tokens` is left out (least relevant first)."""
    if budget_tokens <= 0:
        return ""
    sections: list[tuple[str, list[str]]] = [
        ("Things you know about this person:", [
            f"- ({_date(h.at)}) {h.text}" for h in hits if h.kind == "fact"
        ]),
        ("Earlier conversations, summarised:", [
            f"- ({_date(h.at)}) {h.text}" for h in summaries
        ]),
        ("Things said before that may matter now:", [
            f"- ({_date(h.at)}) {h.speaker or 'someone'}: {h.text}"
            for h in hits if h.kind == "message"
        ]),
    ]  # fmt: skip
    out: list[str] = []
    used = 0
    for header, lines in sections:
        if not lines:
            continue
        cost = tokens.count_text(header) + 1
        taken = []
        for line in lines:
            line_cost = tokens.count_text(line) + 1
            if used + cost + line_cost > budget_tokens:
                break
            taken.append(line)
            cost += line_cost
        if taken:
            out.append(header)
            out.extend(taken)
            used += cost
    return "\n".join(out)
