"""Channel state in the database (bot/groups/store.py), on SQLite and PostgreSQL:
the same rules as the in-process state, kept across a restart, one budget and one
chain for two workers deciding at once, and hostile keys and rows."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.db import Database
from bot.groups.decide import ChannelView, Decision, MessageFacts, Present, decide
from bot.groups.policy import SpeakPolicy
from bot.groups.state import ChannelStates, GroupState
from bot.groups.store import MAX_KEY, GroupStore, channel_key

TESS = Present("tess", ("Tess",), SpeakPolicy(answer_bots=True))
OTTO = Present("otto", ("Otto",), SpeakPolicy(mode="always", cooldown_s=30))
PRESENT = [TESS, OTTO]
PERSON = MessageFacts("Tess, hi")  # addressed: Tess speaks (never cooled down)
CHATTER = MessageFacts("nice weather")  # nobody addressed: Otto may, within his cooldown
BOT = MessageFacts("Tess, beep", author_is_bot=True)


def chooser(facts: MessageFacts, now: float) -> Callable[[ChannelView], Decision]:
    return lambda view: decide(facts, PRESENT, view, random.Random(0), now)


async def step(
    state: ChannelStates, facts: MessageFacts, now: float, key: str = "discord/c1/-", rpm: int = 3
) -> tuple[ChannelView, Decision]:
    return await state.decide(
        key,
        now,
        replies_per_minute=rpm,
        max_bot_chain=2,
        facts=facts,
        choose=chooser(facts, now),
    )


@pytest.fixture
async def open_db(database_url: str) -> AsyncIterator[Callable[[], Database]]:
    opened: list[Database] = []

    def factory() -> Database:
        db = Database.open(database_url)
        opened.append(db)
        return db

    yield factory
    for db in opened:
        await db.aclose()


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def states(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[], ChannelStates]]:
    """Both keepers, for the rules they share (the database one on both dialects)."""
    if request.param == "memory":
        yield GroupState
        return
    url = (
        f"sqlite:///{tmp_path}/groups.db"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    db = Database.open(url)
    yield lambda: GroupStore(db)
    await db.aclose()


async def test_the_budget_holds_for_a_minute(states: Callable[[], ChannelStates]) -> None:
    state = states()
    spoke = []
    for i in range(5):
        _, decision = await step(state, PERSON, 1000.0 + 10 * i)
        spoke.append(decision.speakers)
    assert spoke[:3] == [("tess",)] * 3 and spoke[3:] == [(), ()]
    # The first reply's minute is over (the database counts to the second: a reply
    # counts 60 to 61 s, so the times here are whole seconds apart).
    view, decision = await step(state, PERSON, 1065.0)
    assert view.replies_last_minute == 2 and decision.speakers == ("tess",)


async def test_the_bot_chain_counts_and_a_person_resets_it(
    states: Callable[[], ChannelStates],
) -> None:
    state = states()
    _, first = await step(state, BOT, 10.0)  # bot 1, our reply 2
    view, second = await step(state, BOT, 11.0)  # a third would pass max_bot_chain = 2
    assert first.speakers == ("tess",) and view.bot_chain == 2 and second.speakers == ()
    view, third = await step(state, PERSON, 12.0)
    assert view.bot_chain == 3 and third.speakers == ("tess",)
    view, _ = await step(state, CHATTER, 13.0)
    assert view.bot_chain == 1  # the person reset it; our reply to them counted


async def test_cooldowns_of_unprompted_replies(states: Callable[[], ChannelStates]) -> None:
    state = states()
    _, one = await step(state, CHATTER, 100.0)
    _, two = await step(state, CHATTER, 110.0)
    view, three = await step(state, CHATTER, 131.0)
    assert one.speakers == ("otto",) and two.speakers == () and three.speakers == ("otto",)
    assert view.last_unprompted == {"otto": 100.0}
    reasons = {v.persona: v.reason for v in two.verdicts}
    assert reasons["otto"] == "cooldown"


async def test_the_state_survives_a_restart(open_db: Callable[[], Database]) -> None:
    first = open_db()
    for i in range(3):
        await step(GroupStore(first), PERSON, 500.0 + i)
    await step(GroupStore(first), CHATTER, 503.0)
    await first.aclose()
    again = GroupStore(open_db())  # a new process: new engine, same database
    view, decision = await step(again, PERSON, 504.0)
    assert view.replies_last_minute == 3 and decision.speakers == ()
    assert view.last_unprompted == {} and view.bot_chain == 0
    view, _ = await step(again, BOT, 505.0)
    assert view.bot_chain == 0


async def test_two_workers_at_once_share_one_budget(open_db: Callable[[], Database]) -> None:
    # Two databases objects: two engines and pools, as two `bot run` processes have.
    one, two = GroupStore(open_db()), GroupStore(open_db())
    rpm = 7
    results = await asyncio.gather(
        *(step(one if i % 2 else two, PERSON, 2000.0 + i / 100, rpm=rpm) for i in range(40))
    )
    spoke = sum(len(decision.speakers) for _, decision in results)
    assert spoke == rpm
    views = sorted(view.replies_last_minute for view, _ in results)
    assert views[:rpm] == list(range(rpm))  # every decision saw the ones before it


async def test_a_second_process_sees_the_first_ones_state(
    database_url: str, open_db: Callable[[], Database], tmp_path: Path
) -> None:
    store = GroupStore(open_db())
    for i in range(2):
        await step(store, PERSON, 3000.0 + i)
    script = textwrap.dedent(
        """
        import asyncio, json, random, sys
        from bot.db import Database
        from bot.groups.decide import decide
        from tests.groups.test_store import PERSON, PRESENT
        from bot.groups.store import GroupStore

        async def main():
            db = Database.open(sys.argv[1])
            store = GroupStore(db)
            out = []
            for i in range(3):
                now = 3002.0 + i
                view, d = await store.decide(
                    "discord/c1/-", now, replies_per_minute=3, max_bot_chain=2,
                    facts=PERSON,
                    choose=lambda v: decide(PERSON, PRESENT, v, random.Random(0), now))
                out.append([view.replies_last_minute, list(d.speakers)])
            await db.aclose()
            print(json.dumps(out))

        asyncio.run(main())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, database_url],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == [[2, ["tess"]], [3, []], [3, []]]
    view, _ = await step(store, PERSON, 3005.0)
    assert view.replies_last_minute == 3


async def test_long_and_strange_keys_are_kept_apart(open_db: Callable[[], Database]) -> None:
    store = GroupStore(open_db())
    long_a = "telegram/" + "x" * 600 + "/a"
    long_b = "telegram/" + "x" * 600 + "/b"
    assert len(channel_key(long_a)) == MAX_KEY and channel_key(long_a) != channel_key(long_b)
    odd = "discord/'; DROP TABLE group_channels; --/汉字\U0001f431/-"
    nul, lone = "discord/a\x00b/-", "discord/a\ud800b/-"
    assert channel_key(nul) != channel_key("discord/ab/-") != channel_key(lone)
    for key in (nul, lone):
        await step(store, PERSON, 9.0, key=key)
    for key in (long_a, odd):
        for i in range(3):
            await step(store, PERSON, 10.0 + i, key=key)
    view, _ = await step(store, PERSON, 14.0, key=long_b)
    assert view.replies_last_minute == 0
    view, _ = await step(store, PERSON, 14.0, key=odd)
    assert view.replies_last_minute == 3


async def test_a_mangled_row_is_a_fresh_channel(open_db: Callable[[], Database]) -> None:
    db = open_db()
    store = GroupStore(db)
    await step(store, PERSON, 10.0)

    def mangle(conn: object) -> None:
        conn.execute(  # type: ignore[attr-defined]
            text("UPDATE group_channels SET replies = :r, unprompted = :u, bot_chain = 1"),
            {"r": "{not json", "u": json.dumps(["a", "list"])},
        )

    await db.run(mangle)
    view, decision = await step(store, PERSON, 11.0)
    assert view.replies_last_minute == 0 and view.last_unprompted == {}
    assert decision.speakers == ("tess",)
    assert view.bot_chain == 1

    def bad_chain(conn: object) -> None:
        conn.execute(text("UPDATE group_channels SET replies = '[1, 2]'"))  # type: ignore[attr-defined]
        if "sqlite" in str(conn.engine.url):  # type: ignore[attr-defined]
            # SQLite keeps what it is given in an INTEGER column; PostgreSQL refuses it.
            conn.execute(text("UPDATE group_channels SET bot_chain = 'many'"))  # type: ignore[attr-defined]

    await db.run(bad_chain)
    view, decision = await step(store, PERSON, 12.0)
    assert view.replies_last_minute == 0 and decision.speakers == ("tess",)


class _Always(random.Random):
    def random(self) -> float:
        return 0.0


async def test_idle_channels_are_deleted_after_a_day(open_db: Callable[[], Database]) -> None:
    db = open_db()
    await step(GroupStore(db), PERSON, 1000.0, key="old")
    await step(GroupStore(db), PERSON, 80_000.0, key="recent")
    await step(GroupStore(db, rng=_Always()), PERSON, 1000.0 + 86_400 + 61, key="now")

    def keys(conn: object) -> list[str]:
        rows = conn.execute(text("SELECT channel_key FROM group_channels"))  # type: ignore[attr-defined]
        return sorted(r[0] for r in rows)

    assert await db.run(keys) == ["now", "recent"]


async def test_the_config_can_keep_the_state_in_the_process(
    open_db: Callable[[], Database],
) -> None:
    from bot.groups.policy import GroupSettings
    from bot.groups.router import GroupRouter

    store = GroupStore(open_db())
    kept = GroupRouter(GroupSettings(), {}, None, state=store)  # type: ignore[arg-type]
    here = GroupRouter(
        GroupSettings.model_validate({"state": "process"}),
        {},
        None,  # type: ignore[arg-type]
        state=store,
    )
    assert kept.state is store and isinstance(here.state, GroupState)
    with pytest.raises(ValueError, match="state"):
        GroupSettings.model_validate({"state": "redis"})


async def test_without_the_table_the_router_decides_in_the_process(
    open_db: Callable[[], Database],
) -> None:
    from structlog.testing import capture_logs

    from bot.groups.policy import GroupSettings
    from bot.groups.router import GroupRouter
    from tests.groups.test_router import PERSONAS, _Authors, message

    db = open_db()
    r = GroupRouter(GroupSettings(), PERSONAS, _Authors(), state=GroupStore(db), clock=lambda: 5.0)
    assert [c.addressed_to_bot for c in await r.route(message("Tess, hi"))] == [True]

    def drop(conn: object) -> None:
        conn.execute(text("DROP TABLE group_channels"))  # type: ignore[attr-defined]

    await db.run(drop)
    with capture_logs() as logs:
        copies = await r.route(message("Tess, again"))
    assert [c.addressed_to_bot for c in copies] == [True]
    assert any(e["event"] == "group.state_unavailable" for e in logs)
