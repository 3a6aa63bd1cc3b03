"""Canary routing (sticky, the share honoured, exact at 0 and 1), the intervals on
published counts, and the feedback comparison with its automatic rollback, over
replies and reactions stored in a real SQLite ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, insert

from bot.db import Database
from bot.models import Conversation, Feedback, Message, User
from bot.train.canary import (
    AdapterRouter,
    check_canaries,
    compare_canary,
    diff_interval,
    in_canary,
    wilson_interval,
)
from bot.train.registry import AdapterRegistry, AdapterStatus

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
keys = st.text(min_size=0, max_size=80)
shares = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


# -- routing ------------------------------------------------------------------------


@given(keys, st.text(min_size=1, max_size=20), shares)
def test_routing_is_sticky(key: str, adapter: str, share: float) -> None:
    assert in_canary(key, adapter, share) == in_canary(key, adapter, share)


@given(keys, st.text(min_size=1, max_size=20))
def test_share_zero_routes_nothing_and_one_routes_everything(key: str, adapter: str) -> None:
    assert not in_canary(key, adapter, 0.0)
    assert in_canary(key, adapter, 1.0)


@given(keys, shares, shares)
def test_raising_the_share_only_adds_conversations(key: str, a: float, b: float) -> None:
    low, high = sorted((a, b))
    if in_canary(key, "sam-v2", low):
        assert in_canary(key, "sam-v2", high)


@settings(max_examples=20, deadline=None)
@given(st.sampled_from([0.01, 0.1, 0.25, 0.5, 0.9]), st.text(min_size=1, max_size=12))
def test_the_routed_share_is_close_to_p(share: float, adapter: str) -> None:
    n = 4000
    routed = sum(in_canary(f"telegram:dm:{i}", adapter, share) for i in range(n))
    # Binomial: 4 standard deviations is a bound a correct hash never fails in practice.
    sd = (share * (1 - share) / n) ** 0.5
    assert abs(routed / n - share) <= 4 * sd + 1e-9


def test_a_new_canary_draws_a_different_sample() -> None:
    first = {i for i in range(2000) if in_canary(f"c{i}", "sam-v2", 0.5)}
    second = {i for i in range(2000) if in_canary(f"c{i}", "sam-v3", 0.5)}
    assert 0.35 < len(first & second) / len(first) < 0.65


# -- intervals on published counts (Newcombe 1998, Stat Med 17:857 and 17:873) ------


@pytest.mark.parametrize(
    ("x", "n", "low", "high"),
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611),
     (1, 29, 0.0061, 0.1718)],
)  # fmt: skip
def test_wilson_interval(x: int, n: int, low: float, high: float) -> None:
    got = wilson_interval(x, n)
    assert got == pytest.approx((low, high), abs=6e-5)


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2", "low", "high"),
    [(56, 70, 48, 80, 0.0524, 0.3339), (9, 10, 3, 10, 0.1705, 0.8090),
     (6, 7, 2, 7, 0.0582, 0.8062), (5, 56, 0, 29, -0.0381, 0.1926),
     (0, 10, 0, 20, -0.1611, 0.2775), (10, 10, 0, 20, 0.6791, 1.0)],
)  # fmt: skip
def test_newcombe_difference_interval(
    x1: int, n1: int, x2: int, n2: int, low: float, high: float
) -> None:
    assert diff_interval(x1, n1, x2, n2) == pytest.approx((low, high), abs=6e-5)


@given(st.integers(0, 500), st.integers(0, 500), st.integers(1, 500), st.integers(1, 500))
def test_the_difference_interval_holds_the_estimate(a: int, b: int, n1: int, n2: int) -> None:
    x1, x2 = min(a, n1), min(b, n2)
    low, high = diff_interval(x1, n1, x2, n2)
    assert -1.0 <= low <= x1 / n1 - x2 / n2 <= high <= 1.0
    wider = diff_interval(x1, n1, x2, n2, confidence=0.99)
    assert wider[0] <= low + 1e-12 and wider[1] >= high - 1e-12


def test_bad_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(5, 3)
    with pytest.raises(ValueError, match="confidence"):
        wilson_interval(1, 3, confidence=1.0)


# -- the comparison over a real ledger ----------------------------------------------


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database.open(f"sqlite:///{tmp_path}/bot.db")
    yield database
    await database.aclose()


class Ledger:
    """Writes conversations, replies and reactions straight into the real tables."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.n = 0

    async def setup(self) -> None:
        def work(conn: Connection) -> None:
            users: Any = User.__table__  # type: ignore[attr-defined]
            conn.execute(
                insert(users).values(
                    id=1, platform="test", platform_user_id="u", created_at=T0, last_seen_at=T0
                )
            )
            conn.execute(
                insert(Conversation.__table__).values(  # type: ignore[attr-defined]
                    id=1, key="test:dm:u", platform="test", channel="dm", persona_id="sam",
                    is_direct=True, created_at=T0, last_message_at=T0,
                )
            )  # fmt: skip

        await self.db.run(work)

    async def replies(
        self, model: str, count: int, *, up: int = 0, down: int = 0, regenerated: int = 0,
        at: datetime = T0 + timedelta(hours=1), persona: str = "sam",
    ) -> None:  # fmt: skip
        """`count` replies by `model`: the first `up` get a 👍, the next `down` a 👎,
        the next `regenerated` a later reply to the same message (by `model` too)."""

        def work(conn: Connection) -> None:
            msgs: Any = Message.__table__  # type: ignore[attr-defined]
            for i in range(count):
                self.n += 1
                asked = conn.execute(
                    insert(msgs).values(
                        conversation_id=1, user_id=1, direction="in", status="answered",
                        text="hi", persona_id=persona, created_at=at,
                    )
                ).inserted_primary_key[0]  # type: ignore[index]  # fmt: skip
                reply = dict(
                    conversation_id=1, direction="out", status="delivered", text="r",
                    persona_id=persona, model=model, reply_to_id=asked, created_at=at,
                )  # fmt: skip
                rid = conn.execute(insert(msgs).values(**reply)).inserted_primary_key[0]  # type: ignore[index]
                emoji = "👍" if i < up else "👎" if i < up + down else None
                if emoji:
                    conn.execute(
                        insert(Feedback.__table__).values(  # type: ignore[attr-defined]
                            message_id=rid, user_id=1, emoji=emoji, added=True, at=at
                        )
                    )
                elif i < up + down + regenerated:
                    conn.execute(insert(msgs).values(**reply))

        await self.db.run(work)


async def _canary(registry: AdapterRegistry, share: float = 0.5) -> None:
    await registry.register(
        name="sam-v1", persona_id="sam", path="/a/v1", sha256="1" * 64, base_model="tiny",
        rank=4, report={}, canary_share=1.0, now=T0 - timedelta(days=7),
    )  # fmt: skip
    await registry.register(
        name="sam-v2", persona_id="sam", path="/a/v2", sha256="2" * 64, base_model="tiny",
        rank=4, report={}, canary_share=share, now=T0,
    )  # fmt: skip


async def test_the_comparison_counts_votes_and_regenerations(db: Database) -> None:
    ledger, registry = Ledger(db), AdapterRegistry(db)
    await ledger.setup()
    await _canary(registry)
    await ledger.replies("sam-v2", 10, up=2, down=3, regenerated=1)
    await ledger.replies("sam-v1", 12, up=5, down=1)
    await ledger.replies("sam-v1", 50, down=50, at=T0 - timedelta(days=1))  # before the canary
    canary = await registry.get("sam-v2")
    assert canary is not None
    verdict = await compare_canary(db, canary, margin=0.05, min_feedback=3)
    c, r = verdict.canary_counts, verdict.current_counts
    # A regenerated reply and the reply that replaced it are both the canary's.
    assert (c.replies, c.ups, c.downs, c.regenerated, c.rated, c.bad) == (11, 2, 3, 1, 6, 4)
    assert (r.replies, r.ups, r.downs, r.regenerated, r.rated, r.bad) == (12, 5, 1, 0, 6, 1)
    assert verdict.interval == pytest.approx(diff_interval(4, 6, 1, 6))
    assert not verdict.rollback  # 4/6 vs 1/6 on so few: the interval still holds zero
    assert "interval" in verdict.reason


async def test_a_removed_thumbs_down_does_not_count(db: Database) -> None:
    ledger, registry = Ledger(db), AdapterRegistry(db)
    await ledger.setup()
    await _canary(registry)
    await ledger.replies("sam-v2", 1, down=1)

    def take_back(conn: Connection) -> None:
        conn.execute(
            insert(Feedback.__table__).values(  # type: ignore[attr-defined]
                message_id=ledger.n * 2, user_id=1, emoji="👎", added=False, at=T0
            )
        )

    await db.run(take_back)
    canary = await registry.get("sam-v2")
    assert canary is not None
    verdict = await compare_canary(db, canary, margin=0.0, min_feedback=1)
    assert verdict.canary_counts.downs == 0


async def test_too_little_feedback_decides_nothing(db: Database) -> None:
    ledger, registry = Ledger(db), AdapterRegistry(db)
    await ledger.setup()
    await _canary(registry)
    await ledger.replies("sam-v2", 40, down=29)
    await ledger.replies("sam-v1", 40, up=40)
    verdicts = await check_canaries(registry, margin=0.05, min_feedback=30)
    assert [v.rollback for v in verdicts] == [False]
    assert verdicts[0].interval is None and "too little feedback" in verdicts[0].reason
    assert (await registry.get("sam-v2")).status is AdapterStatus.CANARY  # type: ignore[union-attr]


async def test_a_worse_canary_is_rolled_back_and_its_conversations_return(db: Database) -> None:
    ledger, registry = Ledger(db), AdapterRegistry(db)
    await ledger.setup()
    await _canary(registry, share=1.0 - 1e-9)
    ticks = iter(range(1000))
    router = AdapterRouter(registry, refresh_s=10, clock=lambda: float(next(ticks)))
    assert await router.adapter_for("sam", "test:dm:u", None) == "sam-v2"
    await ledger.replies("sam-v2", 40, up=10, down=20, regenerated=10)  # 30 of 40 bad
    await ledger.replies("sam-v1", 40, up=34, down=6)  # 6 of 40 bad
    later = T0 + timedelta(days=1)
    [verdict] = await check_canaries(registry, margin=0.05, min_feedback=30, now=later)
    assert verdict.rollback and verdict.interval is not None and verdict.interval[0] > 0.05
    rolled = await registry.get("sam-v2")
    assert rolled is not None and rolled.status is AdapterStatus.ROLLED_BACK
    assert rolled.retired_at == later and "automatic rollback" in (rolled.reason or "")
    # The router re-reads after refresh_s (ticks of the injected clock), or at once.
    assert await router.adapter_for("sam", "test:dm:u", None) == "sam-v2"
    router.invalidate()
    assert await router.adapter_for("sam", "test:dm:u", None) == "sam-v1"


async def test_a_better_canary_stays(db: Database) -> None:
    ledger, registry = Ledger(db), AdapterRegistry(db)
    await ledger.setup()
    await _canary(registry)
    await ledger.replies("sam-v2", 40, up=38, down=2)
    await ledger.replies("sam-v1", 40, up=20, down=20)
    [verdict] = await check_canaries(registry, margin=0.05, min_feedback=30)
    assert not verdict.rollback and verdict.interval is not None and verdict.interval[1] < 0
    assert (await registry.get("sam-v2")).status is AdapterStatus.CANARY  # type: ignore[union-attr]


async def test_the_router_falls_back_to_the_persona_and_survives_a_broken_read(
    db: Database,
) -> None:
    registry = AdapterRegistry(db)
    router = AdapterRouter(registry, refresh_s=0)
    assert await router.adapter_for("sam", "k", "own-lora") == "own-lora"
    await _canary(registry, share=0.0)
    assert await router.adapter_for("sam", "k", "own-lora") == "sam-v1"  # serving beats own
    await db.aclose()  # every read now fails: the last routing stays
    assert await router.adapter_for("sam", "k", "own-lora") == "sam-v1"


async def test_turns_arriving_together_read_the_registry_once(db: Database) -> None:
    import asyncio

    registry = AdapterRegistry(db)
    await _canary(registry, share=1.0 - 1e-9)
    reads = 0
    real = registry.active

    async def counted() -> Any:
        nonlocal reads
        reads += 1
        return await real()

    registry.active = counted  # type: ignore[method-assign]
    router = AdapterRouter(registry, refresh_s=60, clock=lambda: 0.0)
    await router.adapter_for("sam", "first", None)
    router.invalidate()
    chosen = await asyncio.gather(*(router.adapter_for("sam", f"k{i}", None) for i in range(20)))
    assert reads == 2
    assert chosen[0] == "sam-v2"  # the first one waited for the fresh read
