"""Canary routing and the comparison that decides whether a canary stays.

Routing is sticky without storing anything: a conversation goes to the canary when
`hash(adapter name, conversation key)` falls below its share. The same conversation
therefore always gets the same adapter for a given share; raising the share only
adds conversations, lowering it only removes some; a new canary draws a fresh sample.

Feedback is read from the ledger: every reply records the adapter that wrote it
(`messages.model`). A reply is *rated* when it got a 👍, a 👎, or was regenerated
(a later reply answered the same message); it is *bad* when it got a 👎 or was
regenerated. The canary's bad share among its rated replies is compared with the
rest of the persona's replies over the same period, with a Newcombe (Wilson score)
interval for the difference. The canary is rolled back automatically when that
interval lies wholly above zero and the difference is at least the configured
margin, once both sides have `min_feedback` rated replies.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from statistics import NormalDist

import structlog
from sqlalchemy import Connection, Table, case, func, select

from bot.db import Database
from bot.errors import UsageError
from bot.models import Direction, Feedback, Message
from bot.train.registry import ActivePair, AdapterRecord, AdapterRegistry

__all__ = [
    "AdapterRouter",
    "ArmCounts",
    "CanaryVerdict",
    "check_canaries",
    "compare_canary",
    "diff_interval",
    "in_canary",
    "wilson_interval",
]

log = structlog.get_logger("bot.train.canary")

_messages: Table = Message.__table__  # type: ignore[attr-defined]
_feedback: Table = Feedback.__table__  # type: ignore[attr-defined]
_UP, _DOWN = "👍", "👎"


def in_canary(conversation_key: str, adapter: str, share: float) -> bool:
    """Whether the conversation goes to the canary `adapter` at `share` (0..1).

    Exact at the ends: share 0 routes nothing, share 1 everything."""
    digest = hashlib.sha256(f"{adapter}\x00{conversation_key}".encode()).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
    return point < share


class AdapterRouter:
    """Picks the adapter for each conversation from the registry.

    The registry is read at most every `refresh_s` seconds (a reply does not wait on
    the database each time); if reading fails, the last known routing stays and the
    failure is logged, so an adapter problem never fails a reply.
    """

    def __init__(
        self,
        registry: AdapterRegistry,
        *,
        refresh_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.refresh_s = refresh_s
        self._clock = clock
        self._pairs: dict[str, ActivePair] = {}
        self._read_at: float | None = None

    def invalidate(self) -> None:
        """Read the registry again on the next reply (after a deploy, rollback...)."""
        self._read_at = None

    async def pairs(self) -> dict[str, ActivePair]:
        """Each persona's serving adapter and canary, at most `refresh_s` old."""
        now = self._clock()
        if self._read_at is None or now - self._read_at >= self.refresh_s:
            # Marked read first: the turns that arrive during the read use the last
            # routing instead of all reading the registry at once.
            self._read_at = now
            try:
                self._pairs = await self.registry.active()
            except Exception as exc:  # a broken read must not fail the reply
                log.warning("adapters.read_failed", error=str(exc))
        return self._pairs

    async def adapter_for(
        self, persona_id: str, conversation_key: str, default: str | None
    ) -> str | None:
        """The adapter that answers this conversation: the canary for its share of
        conversations, else the serving adapter, else `default` (the persona's own)."""
        pair = (await self.pairs()).get(persona_id)
        if pair is None:
            return default
        if pair.canary is not None and in_canary(
            conversation_key, pair.canary.name, pair.canary.canary_share
        ):
            return pair.canary.name
        return pair.serving.name if pair.serving is not None else default


# -- intervals ------------------------------------------------------------------------


def _z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence!r}: between 0 and 1")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a proportion `successes / n` ((0, 1) for n = 0)."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"{successes} of {n}: need 0 <= successes <= n")
    if n == 0:
        return 0.0, 1.0
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def diff_interval(
    x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Newcombe's hybrid score interval for `x1/n1 - x2/n2` (his method 10): good
    coverage at small counts and proportions near 0 or 1, where Wald's fails."""
    l1, u1 = wilson_interval(x1, n1, confidence)
    l2, u2 = wilson_interval(x2, n2, confidence)
    p1 = x1 / n1 if n1 else 0.5
    p2 = x2 / n2 if n2 else 0.5
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return max(-1.0, low), min(1.0, high)


# -- the comparison -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArmCounts:
    """Replies of one side of the comparison and the feedback they got."""

    replies: int = 0
    ups: int = 0
    downs: int = 0
    regenerated: int = 0
    rated: int = 0  # replies with a 👍, a 👎 or a regeneration
    bad: int = 0  # replies with a 👎 or a regeneration

    @property
    def bad_share(self) -> float | None:
        return self.bad / self.rated if self.rated else None


@dataclass(frozen=True, slots=True)
class CanaryVerdict:
    """The canary against the rest of the persona's replies since the canary began."""

    canary: str
    persona_id: str
    canary_counts: ArmCounts
    current_counts: ArmCounts
    #: The interval for (canary bad share − current bad share); None: too little feedback.
    interval: tuple[float, float] | None
    rollback: bool
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {
            "canary": self.canary,
            "persona": self.persona_id,
            "canary_counts": _counts(self.canary_counts),
            "current_counts": _counts(self.current_counts),
            "interval": list(self.interval) if self.interval else None,
            "rollback": self.rollback,
            "reason": self.reason,
        }


def _counts(c: ArmCounts) -> dict[str, int]:
    return {
        "replies": c.replies,
        "ups": c.ups,
        "downs": c.downs,
        "regenerated": c.regenerated,
        "rated": c.rated,
        "bad": c.bad,
    }


def _arm_counts(
    conn: Connection, persona_id: str, since: datetime, canary: str
) -> tuple[ArmCounts, ArmCounts]:
    # One grouped query: each helper below is grouped once (not run per reply), so
    # the cost grows with the period's replies and reactions, not their product.
    out = Direction.OUT.value
    # A reaction counts as it stands now: the newest event per (message, person, emoji).
    # Only reactions since the canary began can be on its period's replies.
    newest = (
        select(func.max(_feedback.c.id).label("id"))
        .where(_feedback.c.at >= since)
        .group_by(_feedback.c.message_id, _feedback.c.user_id, _feedback.c.emoji)
        .subquery("newest")
    )
    f = _feedback.alias("f")
    votes = (
        select(
            f.c.message_id,
            func.max(case((f.c.emoji.like(_UP + "%"), 1), else_=0)).label("up"),
            func.max(case((f.c.emoji.like(_DOWN + "%"), 1), else_=0)).label("down"),
        )
        .join(newest, newest.c.id == f.c.id)
        .where(f.c.added.is_(True))
        .group_by(f.c.message_id)
        .subquery("votes")
    )
    # The last reply to each message: any earlier reply to it was regenerated.
    r = _messages.alias("r")
    last = (
        select(r.c.reply_to_id, func.max(r.c.id).label("last_id"))
        .where(r.c.direction == out, r.c.reply_to_id.is_not(None), r.c.created_at >= since)
        .group_by(r.c.reply_to_id)
        .subquery("last")
    )
    m = _messages.alias("m")
    up = func.coalesce(votes.c.up, 0)
    down = func.coalesce(votes.c.down, 0)
    regen = case((m.c.id < last.c.last_id, 1), else_=0)
    side = case((m.c.model == canary, 1), else_=0).label("is_canary")
    rows = conn.execute(
        select(
            side,
            func.count(),
            func.sum(up),
            func.sum(down),
            func.sum(regen),
            func.sum(case(((up + down + regen) > 0, 1), else_=0)),
            func.sum(case(((down + regen) > 0, 1), else_=0)),
        )
        .select_from(
            m.outerjoin(votes, votes.c.message_id == m.c.id).outerjoin(
                last, last.c.reply_to_id == m.c.reply_to_id
            )
        )
        .where(m.c.persona_id == persona_id, m.c.direction == out, m.c.created_at >= since)
        .group_by(side)
    )
    sides = {1: ArmCounts(), 0: ArmCounts()}
    for row in rows:
        sides[int(row[0])] = ArmCounts(*(int(v or 0) for v in row[1:]))
    return sides[1], sides[0]


async def compare_canary(
    db: Database,
    canary: AdapterRecord,
    *,
    margin: float,
    min_feedback: int,
    confidence: float = 0.95,
) -> CanaryVerdict:
    """Compare `canary`'s feedback with the rest of its persona's replies since it
    began, and say whether it should be rolled back (see the module docstring)."""
    since = canary.created_at
    mine, rest = await db.read(lambda c: _arm_counts(c, canary.persona_id, since, canary.name))
    if mine.rated < min_feedback or rest.rated < min_feedback:
        reason = (
            f"too little feedback to compare: canary {mine.rated}, current {rest.rated} "
            f"rated replies (need {min_feedback} each)"
        )
        return CanaryVerdict(canary.name, canary.persona_id, mine, rest, None, False, reason)
    low, high = diff_interval(mine.bad, mine.rated, rest.bad, rest.rated, confidence)
    diff = mine.bad / mine.rated - rest.bad / rest.rated
    worse = low > 0.0 and diff >= margin
    reason = (
        f"bad share canary {mine.bad}/{mine.rated} vs current {rest.bad}/{rest.rated}: "
        f"difference {diff:+.3f}, {confidence:.0%} interval [{low:+.3f}, {high:+.3f}], "
        f"margin {margin:g}: " + ("worse, rolled back" if worse else "not worse")
    )
    return CanaryVerdict(canary.name, canary.persona_id, mine, rest, (low, high), worse, reason)


async def check_canaries(
    registry: AdapterRegistry,
    *,
    margin: float,
    min_feedback: int,
    confidence: float = 0.95,
    now: datetime | None = None,
) -> list[CanaryVerdict]:
    """Compare every canary; roll back each one that is worse. The verdicts."""
    verdicts = []
    for pair in (await registry.active()).values():
        if pair.canary is None:
            continue
        verdict = await compare_canary(
            registry.db,
            pair.canary,
            margin=margin,
            min_feedback=min_feedback,
            confidence=confidence,
        )
        if verdict.rollback:
            try:
                await registry.rollback(
                    pair.canary.persona_id,
                    reason=f"automatic rollback: {verdict.reason}",
                    only=pair.canary.name,
                    now=now or datetime.now(UTC),
                )
            except UsageError as exc:  # promoted or replaced since it was read
                log.info("adapters.rollback_skipped", canary=pair.canary.name, reason=str(exc))
                continue
            log.warning("adapters.canary_rolled_back", **verdict.as_dict())
        verdicts.append(verdict)
    return verdicts
