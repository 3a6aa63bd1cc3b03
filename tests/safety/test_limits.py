"""Limits per person and channel, moderators' mutes, bans and exemptions, the audit:
a real app on a real SQLite file, the clock injected as each message's time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.commands import CommandContext, parse_moderation
from bot.inbox import Inbox, InboxEvent, InboxWorker, RawEvent
from bot.llm.base import ChatRequest
from bot.llm.mock import MockBackend
from bot.messages import Actor, Incoming, Scope
from bot.safety.limits import LimitStore, Standing, Window
from tests.safety.conftest import rows

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
ONE_PER_MINUTE = {"messages_per_minute": 1}


def msg(text: str, at: datetime, user: str = "101", persona: str = "tester", **kw: Any) -> Incoming:
    scope = Scope(platform="test", channel=f"dm-{user}", user=user, persona=persona, **kw)
    actor = Actor(platform="test", id=user, display_name="Ann")
    return Incoming(scope=scope, actor=actor, text=text, received_at=at)


def group(text: str, at: datetime, user: str) -> Incoming:
    scope = Scope(platform="test", space="g", channel="c", user=user, persona="tester")
    actor = Actor(platform="test", id=user, display_name=user)
    return Incoming(scope=scope, actor=actor, text=text, received_at=at)


def moderator(user: str = "mod", *, is_moderator: bool = True) -> CommandContext:
    scope = Scope(platform="test", channel="modchat", user=user, persona="tester")
    return CommandContext(
        scope=scope, actor=Actor(platform="test", id=user), is_moderator=is_moderator
    )


async def answered(app: Any, incoming: Incoming) -> list[str]:
    return [o.text for o in await app.engine.handle(incoming)]


# -- messages per minute --------------------------------------------------------------


async def test_messages_per_minute_then_one_in_persona_notice_then_silence(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    backend = MockBackend()
    limits = {"messages_per_minute": 3, "message": "Paws need a rest!"}
    app = await make_app(backend, disclose_first_contact=False, limits=limits)
    for i in range(3):
        assert await answered(app, msg(f"m{i}", T0 + timedelta(seconds=i))) == [f"You said: m{i}"]
    assert await answered(app, msg("m3", T0 + timedelta(seconds=3))) == ["Paws need a rest!"]
    assert await answered(app, msg("m4", T0 + timedelta(seconds=4))) == []  # told once
    assert len(backend.requests) == 3
    # Sixty seconds after the first answered one, there is room again.
    assert await answered(app, msg("m5", T0 + timedelta(seconds=60))) == ["You said: m5"]
    events = rows(tmp_path, "select check_name, verdict, reason from safety_events")
    assert events == [("limits", "limited", "over messages per minute")] * 2
    # The silenced message is stored, not lost, and settled.
    assert rows(tmp_path, "select status from messages where text='m4'") == [("ignored",)]


async def test_the_limit_is_per_person_and_per_persona(make_app: Callable[..., Any]) -> None:
    app = await make_app(
        MockBackend(), disclose_first_contact=False, limits={"messages_per_minute": 1}
    )
    assert await answered(app, msg("a", T0, user="ann")) == ["You said: a"]
    assert await answered(app, msg("b", T0, user="bob")) == ["You said: b"]
    assert len(await answered(app, msg("c", T0, user="ann"))) == 1  # the notice
    assert await answered(app, msg("d", T0, user="ann")) == []


async def test_a_persona_limit_message_wins(make_app: Callable[..., Any], tmp_path: Path) -> None:
    (tmp_path / "personas").mkdir(exist_ok=True)
    (tmp_path / "personas" / "bis.yaml").write_text(
        "version: 1\nid: bis\nname: Biscuit\nsystem_prompt: You are a dog.\n"
        "safety:\n  limit_message: '*yawns* Nap time. Later?'\n",
        encoding="utf-8",
    )
    app = await make_app(
        MockBackend(), disclose_first_contact=False, limits={"messages_per_minute": 1}
    )
    await answered(app, msg("a", T0, persona="bis"))
    assert await answered(app, msg("b", T0, persona="bis")) == ["*yawns* Nap time. Later?"]


async def test_a_channel_limit_counts_everyone_in_it(make_app: Callable[..., Any]) -> None:
    limits = {"channel_messages_per_minute": 2}
    app = await make_app(MockBackend(), disclose_first_contact=False, limits=limits)
    assert len(await answered(app, group("@tess a", T0, "ann"))) == 1
    assert len(await answered(app, group("@tess b", T0, "bob"))) == 1
    [notice] = await answered(app, group("@tess c", T0, "cid"))
    assert notice == app.settings.safety.limits.message


# -- tokens per day -------------------------------------------------------------------


async def test_tokens_per_day_from_the_stored_replies(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    backend = MockBackend(lambda request: "word " * 40)
    app = await make_app(backend, disclose_first_contact=False, limits={"tokens_per_day": 100})
    # A reply is stamped with the wall clock when it is stored, so the turns here are
    # at the wall clock's time too (a fixed date would put the reply on another day
    # than its turn), and the next day is counted from when the reply was spent.
    start = datetime.now(UTC)
    assert len(await answered(app, msg("hello", start))) == 1
    spent_by = datetime.now(UTC)
    used = rows(
        tmp_path, "select prompt_tokens + completion_tokens from messages where direction='out'"
    )
    assert used[0][0] >= 100  # one turn spends the day's budget
    [notice] = await answered(app, msg("more", start))
    assert notice == app.settings.safety.limits.message
    assert await answered(app, msg("and more", start)) == []
    assert len(backend.requests) == 1
    # The next UTC day starts a new budget.
    [reply] = await answered(app, msg("morning", spent_by + timedelta(days=1)))
    assert reply.startswith("word")
    events = rows(tmp_path, "select reason, details from safety_events")
    assert events[0][0] == "over tokens per day" and '"used"' in events[0][1]


# -- mutes, bans, exemptions and the audit ---------------------------------------------


async def test_ban_and_unban_through_the_command_with_an_audit(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    backend = MockBackend()
    app = await make_app(backend, disclose_first_contact=False)
    answer = await app.commands.run("ban", "101 spamming links", moderator())
    assert answer.startswith("Done, ban: 101 for tester")
    assert await answered(app, msg("hi", T0)) == []
    assert backend.requests == []  # the model is never asked
    assert rows(tmp_path, "select status from messages where text='hi'") == [("ignored",)]
    assert rows(tmp_path, "select check_name, verdict, reason from safety_events") == [
        ("limits", "banned", "spamming links")
    ]
    await app.commands.run("unban", "<@101>", moderator())
    assert await answered(app, msg("hi again", T0)) == ["You said: hi again"]
    audit = rows(
        tmp_path,
        "select moderator_id, action, target_user_id, persona_id, before, after, reason "
        "from moderation_actions order by id",
    )
    assert [a[:4] for a in audit] == [
        ("mod", "ban", "101", "tester"),
        ("mod", "unban", "101", "tester"),
    ]
    assert '"banned": false' in audit[0][4] and '"banned": true' in audit[0][5]
    assert audit[0][6] == "spamming links"
    shown = await app.commands.run("audit", "<@101>", moderator())
    assert shown.startswith("Moderator actions, newest first:")
    assert "mod: unban 101 (tester)" in shown and "mod: ban 101 (tester): spamming links" in shown
    assert await app.commands.run("audit", "", moderator("eve", is_moderator=False)) == (
        "Only moderators can /audit."
    )
    assert await app.commands.run(
        "audit", "5", moderator()
    ) == "No moderator actions recorded for 5."
    store = LimitStore(app.db)
    [latest, first] = await store.audit("test", "101")
    assert (latest.action, first.action) == ("unban", "ban") and first.after["banned"] is True


async def test_a_command_run_again_for_its_event_after_a_crash_acts_and_audits_once(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    # The reply of a command is stored with its event's done mark; a process that dies
    # between the command's own commit and that one runs the command again on restart
    # (here: the first handling fails after the command, and the event is replayed).
    app = await make_app(MockBackend(), disclose_first_contact=False)
    inbox = Inbox(app.db)
    answers: list[str] = []

    async def handle(event: InboxEvent) -> None:
        answers.append(await app.commands.run("mute", "101 30m flooding", moderator()))
        if len(answers) == 1:
            raise RuntimeError("the process died before the reply was stored")

    worker = InboxWorker(inbox, "test", handle, poll_s=0.01)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await inbox.accept("test", [RawEvent("cmd-1", "{}", chat="modchat")])
        worker.wake()
        while len(answers) < 1 or (await inbox.counts("test")).get("failed", 0) < 1:
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.1)  # a later minute on the clock would move a new mute's end
        assert await inbox.replay(failed=True, platform="test")
        worker.wake()
        while (await inbox.counts("test")).get("done", 0) < 1:
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await running
    assert len(answers) == 2 and answers[0] == answers[1], answers  # the same end
    assert rows(tmp_path, "select action, target_user_id from moderation_actions") == [
        ("mute", "101")
    ]
    # Another event is another action, audited as such.
    assert (await app.commands.run("mute", "101 30m", moderator())).startswith("Done, mute")
    assert len(rows(tmp_path, "select id from moderation_actions")) == 2


async def test_a_mute_for_one_persona_or_for_all(make_app: Callable[..., Any]) -> None:
    app = await make_app(MockBackend(), disclose_first_contact=False)
    store = LimitStore(app.db)
    await store.apply("mute", platform="test", target="101", persona="tester", moderator="m")
    assert (await store.standing("test", "101", "tester")).muted
    assert not (await store.standing("test", "101", "other")).muted
    await store.apply("mute", platform="test", target="102", persona="*", moderator="m")
    assert (await store.standing("test", "102", "other")).muted
    assert not (await store.standing("otherplatform", "102", "other")).muted
    assert await answered(app, msg("hi", T0, user="101")) == []
    await app.commands.run("unmute", "101", moderator())
    assert len(await answered(app, msg("hi", T0, user="101"))) == 1


async def test_a_timed_mute_ends_by_itself(make_app: Callable[..., Any]) -> None:
    app = await make_app(MockBackend(), disclose_first_contact=False)
    store = LimitStore(app.db)
    await store.apply(
        "mute",
        platform="test",
        target="101",
        persona="*",
        moderator="m",
        until=T0 + timedelta(hours=1),
    )
    assert await answered(app, msg("during", T0 + timedelta(minutes=59))) == []
    assert len(await answered(app, msg("after", T0 + timedelta(minutes=61)))) == 1


async def test_an_exempt_person_skips_the_limits(make_app: Callable[..., Any]) -> None:
    app = await make_app(
        MockBackend(), disclose_first_contact=False, limits={"messages_per_minute": 1}
    )
    await app.commands.run("exempt", "101", moderator())
    for i in range(5):
        assert await answered(app, msg(f"m{i}", T0)) == [f"You said: m{i}"]
    # An exemption is no shield against a ban.
    await app.commands.run("ban", "101 all", moderator())
    assert await answered(app, msg("m9", T0)) == []


async def test_only_moderators_run_moderation_commands(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    app = await make_app(MockBackend(), disclose_first_contact=False)
    for action in ("mute", "unmute", "ban", "unban", "exempt", "unexempt"):
        answer = await app.commands.run(action, "101", moderator("eve", is_moderator=False))
        assert answer == f"Only moderators can /{action}."
    assert rows(tmp_path, "select count(*) from moderation_actions") == [(0,)]
    assert rows(tmp_path, "select count(*) from person_limits") == [(0,)]


@pytest.mark.parametrize(
    ("action", "args", "expected"),
    [
        ("mute", "123", ("123", "tester", None, None)),
        ("mute", "<@123> all 2h being rude", ("123", "*", timedelta(hours=2), "being rude")),
        ("mute", "<@!123> 30m", ("123", "tester", timedelta(minutes=30), None)),
        ("ban", "123 everywhere spam", ("123", "*", None, "spam")),
        ("ban", "123 2h", ("123", "tester", None, "2h")),  # a duration is a mute's only
        ("unban", "123", ("123", "tester", None, None)),
    ],
)
def test_moderation_arguments(action: str, args: str, expected: tuple[Any, ...]) -> None:
    assert parse_moderation(action, args, "tester") == expected


@pytest.mark.parametrize(
    "args",
    [
        "",
        "   ",
        "@ann",
        "ann",
        "<@abc>",
        "12345678901234567890123456789012345",
        "\x00\x1b[2J",
        "123 all 99999d",
    ],
)
def test_hostile_moderation_arguments_get_the_usage(args: str) -> None:
    answer = parse_moderation("mute", args, "tester")
    assert isinstance(answer, str) and ("Say /mute" in answer or "too long" in answer)
    assert "\x1b" not in answer and "\x00" not in answer


def test_a_reason_is_cleaned_and_bounded() -> None:
    parsed = parse_moderation("ban", "1 " + "x\x1b[31m" * 400, "tester")
    assert not isinstance(parsed, str)
    reason = parsed[3]
    assert reason is not None and len(reason) <= 512 and "\x1b" not in reason


# -- the pieces -----------------------------------------------------------------------


def test_a_window_counts_only_its_period_and_bounds_its_keys() -> None:
    window = Window(2, timedelta(seconds=60), max_keys=3)
    window.take("a", T0)
    window.take("a", T0 + timedelta(seconds=1))
    assert window.full("a", T0 + timedelta(seconds=59))
    assert not window.full("a", T0 + timedelta(seconds=60))
    for key in "bcdef":
        window.take(key, T0)
    assert len(window._events) <= 3


def test_standings_merge_persona_and_all() -> None:
    a = Standing(muted=True, muted_until=T0)
    b = Standing(muted=True, muted_until=None, exempt=True)
    merged = a.merged(b)
    assert merged.muted and merged.muted_until is None and merged.exempt
    assert Standing(banned=True).merged(Standing()).banned
    assert not Standing(muted=True, muted_until=T0).muted_at(T0)


# -- a burst from one person ----------------------------------------------------------


async def test_a_flood_from_one_person_is_answered_as_one_turn_that_sees_it_all(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    first_started = asyncio.Event()
    go_on = asyncio.Event()

    async def slow_first(request: ChatRequest) -> str:
        if not first_started.is_set():
            first_started.set()
            await go_on.wait()  # the persona is still writing its first reply
        return f"answered {len(request.messages)} messages"

    backend = MockBackend(slow_first)
    app = await make_app(backend, disclose_first_contact=False)
    first = asyncio.create_task(app.engine.handle(msg("m0", T0)))
    await first_started.wait()
    flood = [
        asyncio.create_task(app.engine.handle(msg(f"m{i}", T0 + timedelta(seconds=i / 2))))
        for i in range(1, 10)
    ]
    while len(rows(tmp_path, "select id from messages where direction='in'")) < 10:
        await asyncio.sleep(0.01)
    go_on.set()
    results = [await first, *[await t for t in flood]]
    # Two generations, not ten: the first (already being written) and the newest.
    assert len(backend.requests) == 2
    assert [len(r) for r in results] == [1] + [0] * 8 + [1]
    seen = "\n".join(m.content for m in backend.requests[1].messages)
    assert all(f"m{i}" in seen for i in range(10))
    statuses = rows(tmp_path, "select text, status from messages where direction='in' order by id")
    assert [s for _, s in statuses] == ["answered"] + ["ignored"] * 8 + ["answered"]
    assert app.safety.stage.counters[("burst", "coalesced")] == 8
    assert len(app.engine._bursts) == 0  # nothing left behind


async def test_a_burst_of_two_people_answers_each(make_app: Callable[..., Any]) -> None:
    gate = asyncio.Event()

    async def held(request: ChatRequest) -> str:
        await gate.wait()
        return "ok"

    backend = MockBackend(held)
    app = await make_app(backend, disclose_first_contact=False)
    tasks = [
        asyncio.create_task(app.engine.handle(group(f"@tess {u}{i}", T0, u)))
        for i in range(3)
        for u in ("ann", "bob")
    ]
    await asyncio.sleep(0.3)
    gate.set()
    results = [await t for t in tasks]
    # ann0 went first; then the newest of each person answers for the rest.
    assert sum(len(r) for r in results) == 3
    assert len(backend.requests) == 3
