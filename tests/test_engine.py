"""The engine end to end over a real SQLite file, with scripted backends."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.app import App, open_app
from bot.config import Settings, load_settings
from bot.errors import BackendUnavailable
from bot.llm.base import ChatRequest, Completion, StreamChunk
from bot.llm.mock import MockBackend
from bot.messages import Actor, Attachment, Incoming, Scope

PERSONA = """\
version: 1
id: tester
name: Tess
description: A test persona.
language: en
system_prompt: |
  You are Tess, talking with {{ user.display_name }} on {{ platform }}.
greeting: Hi {{ user.display_name }}!
sampling:
  temperature: 0.5
  max_tokens: 64
  seed: 7
  stop: ["###"]
  extra: {min_p: 0.1}
model:
  adapter: tess-lora
safety:
  ai_disclosure: I am an AI.
  decline_topics: [medical advice]
"""


def make_settings(tmp_path: Path, **engine: Any) -> Settings:
    personas = tmp_path / "personas"
    personas.mkdir(exist_ok=True)
    if not (personas / "tester.yaml").exists():
        (personas / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    return load_settings(
        None,
        {
            "database": {"url": f"sqlite:///{tmp_path}/bot.db"},
            "personas": {"dirs": [str(personas)], "default": "tester", "watch": False},
            "engine": engine,
            "llm": {"max_concurrency": 4},
        },
    )


@pytest.fixture
async def make_app(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    opened: list[Any] = []

    async def factory(backend: Any, **engine: Any) -> App:
        cm = open_app(make_settings(tmp_path, **engine), backend=backend, watch=False)
        app = await cm.__aenter__()
        opened.append(cm)
        return app

    yield factory
    for cm in reversed(opened):
        await cm.__aexit__(None, None, None)


def dm(text: str, user: str = "u1", name: str = "Ann", **kw: Any) -> Incoming:
    scope = Scope(platform="test", channel=f"dm-{user}", user=user, persona="tester")
    return Incoming(
        scope=scope, actor=Actor(platform="test", id=user, display_name=name), text=text, **kw
    )


def in_channel(text: str, user: str, name: str) -> Incoming:
    scope = Scope(platform="test", space="guild", channel="general", user=user, persona="tester")
    return Incoming(
        scope=scope, actor=Actor(platform="test", id=user, display_name=name), text=text
    )


def rows(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "bot.db") as conn:
        return conn.execute(sql).fetchall()


async def test_round_trip_stores_both_directions_with_provenance(
    make_app: Any, tmp_path: Path
) -> None:
    backend = MockBackend(lambda req: "Tess: Hello Ann, nice to meet you.")
    app = await make_app(backend)
    [out] = await app.engine.handle(dm("hello", platform_message_id="m1"))
    assert out.text == "Hello Ann, nice to meet you."  # echoed role label stripped
    loaded = app.personas.get("tester")
    assert out.persona_hash == loaded.content_hash
    stored = rows(
        tmp_path,
        "select direction, status, text, persona_hash, backend, model, latency_ms, prompt_tokens, "
        "completion_tokens from messages order by id",
    )
    assert stored[0][:3] == ("in", "answered", "hello")
    direction, status, text, phash, be, model, latency, ptok, ctok = stored[1]
    assert (direction, status, text, phash, be) == (
        "out",
        "generated",
        out.text,
        loaded.content_hash,
        "mock",
    )
    assert model == "tess-lora"  # the persona's LoRA adapter was asked for
    assert latency is not None and latency >= 0 and ptok > 0 and ctok > 0
    assert rows(tmp_path, "select persona_id, content_hash from persona_versions") == [
        ("tester", loaded.content_hash)
    ]


async def test_request_carries_persona_prompt_sampling_and_history(make_app: Any) -> None:
    backend = MockBackend(lambda req: "ok " + str(len(req.messages)))
    app = await make_app(backend)
    await app.engine.handle(dm("first"))
    await app.engine.handle(dm("second"))
    request = backend.requests[-1]
    system = request.messages[0]
    assert system.role == "system"
    assert "You are Tess, talking with Ann on test." in system.content
    assert "medical advice" in system.content
    assert [m.content for m in request.messages[1:]] == ["first", "ok 2", "second"]
    assert request.sampling.temperature == 0.5 and request.sampling.max_tokens == 64
    assert request.sampling.stop == ("###",) and request.sampling.extra == {"min_p": 0.1}
    assert request.adapter == "tess-lora"


async def test_incoming_is_committed_before_generation_starts(
    make_app: Any, tmp_path: Path
) -> None:
    seen: list[Any] = []

    def handler(req: ChatRequest) -> str:
        seen.extend(rows(tmp_path, "select direction, status, text from messages"))
        return "answer"

    app = await make_app(MockBackend(handler))
    await app.engine.handle(dm("remember me"))
    # Committed, and marked as being answered, before the model is asked.
    assert seen == [("in", "answering", "remember me")]


async def test_one_conversation_in_order_others_concurrently(make_app: Any) -> None:
    release = asyncio.Event()
    started: list[str] = []

    async def handler(req: ChatRequest) -> str:
        last = req.messages[-1].content
        started.append(last)
        if last == "a1":
            await release.wait()
        return f"re:{last}"

    app = await make_app(MockBackend(handler))
    a1 = asyncio.create_task(app.engine.handle(dm("a1", user="a")))
    await asyncio.sleep(0.05)
    a2 = asyncio.create_task(app.engine.handle(dm("a2", user="a")))
    b1 = asyncio.create_task(app.engine.handle(dm("b1", user="b")))
    await asyncio.wait_for(b1, 5)  # another conversation is not held up by a1
    await asyncio.sleep(0.05)
    assert "a2" not in started  # a2 waits for a1's answer
    release.set()
    assert (await a1)[0].text == "re:a1" and (await a2)[0].text == "re:a2"
    assert started.index("a1") < started.index("a2")


async def test_history_for_a_queued_message_includes_the_earlier_reply(make_app: Any) -> None:
    release = asyncio.Event()
    backend = MockBackend(lambda req: "reply")

    async def handler(req: ChatRequest) -> str:
        if req.messages[-1].content == "one":
            await release.wait()
        return f"re:{req.messages[-1].content}"

    backend = MockBackend(handler)
    app = await make_app(backend)
    t1 = asyncio.create_task(app.engine.handle(dm("one")))
    await asyncio.sleep(0.05)
    t2 = asyncio.create_task(app.engine.handle(dm("two")))
    await asyncio.sleep(0.05)
    release.set()
    await t1
    await t2
    assert [m.content for m in backend.requests[-1].messages[1:]] == ["one", "re:one", "two"]


async def test_global_concurrency_limit(make_app: Any) -> None:
    active = 0
    peak = 0

    async def handler(req: ChatRequest) -> str:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)
        active -= 1
        return "ok"

    app = await make_app(MockBackend(handler))  # llm.max_concurrency = 4
    await asyncio.gather(*(app.engine.handle(dm("hi", user=f"p{i}")) for i in range(12)))
    assert peak == 4


class FailingBackend(MockBackend):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def complete(self, request: ChatRequest) -> Completion:
        raise self.error


async def test_backend_down_gives_apology_and_records_failure(
    make_app: Any, tmp_path: Path
) -> None:
    app = await make_app(FailingBackend(BackendUnavailable("connection refused to 127.0.0.1:9")))
    [out] = await app.engine.handle(dm("are you there?"))
    assert out.is_error and out.text == app.settings.engine.apology
    assert rows(tmp_path, "select stage, error_type, reason from failures") == [
        ("generate", "BackendUnavailable", "connection refused to 127.0.0.1:9")
    ]
    assert rows(tmp_path, "select direction, status, kind from messages order by id") == [
        ("in", "failed", "message"),
        ("out", "generated", "apology"),
    ]
    # The process keeps going: the next turn works once the backend is back.
    app.backends._fixed = MockBackend(lambda req: "back again")
    [out] = await app.engine.handle(dm("now?"))
    assert out.text == "back again"
    history = [m.content for m in app.backends._fixed.requests[-1].messages[1:]]
    assert history == ["are you there?", "now?"]  # the apology is not shown to the model


async def test_backend_timeout_is_recorded(make_app: Any, tmp_path: Path) -> None:
    async def slow(req: ChatRequest) -> str:
        await asyncio.sleep(5)
        return "late"

    app = await make_app(MockBackend(slow), reply_timeout_s=0.1)
    [out] = await app.engine.handle(dm("quick?"))
    assert out.is_error
    assert rows(tmp_path, "select stage, reason from failures") == [
        ("generate", "no reply within 0.1 s")
    ]


async def test_empty_completion_is_retried_then_apologised(make_app: Any, tmp_path: Path) -> None:
    answers = iter(["", "  Tess:  ", "finally"])
    app = await make_app(MockBackend(lambda req: next(answers)))
    [out] = await app.engine.handle(dm("hi"))
    assert out.is_error
    assert rows(tmp_path, "select error_type from failures") == [("EmptyCompletion",)]
    [out] = await app.engine.handle(dm("hi again"))
    assert out.text == "finally"


class BrokenStream(MockBackend):
    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:  # type: ignore[override]
        yield StreamChunk(delta="I was saying")
        raise BackendUnavailable("stream ended without [DONE]")


async def test_stream_that_stops_midway_is_a_failure_not_a_reply(
    make_app: Any, tmp_path: Path
) -> None:
    app = await make_app(BrokenStream())
    shown: list[str] = []

    async def on_delta(piece: str) -> None:
        shown.append(piece)

    [out] = await app.engine.handle(dm("tell me a story"), on_delta=on_delta)
    assert out.is_error
    assert rows(tmp_path, "select reason from failures") == [("stream ended without [DONE]",)]
    assert rows(
        tmp_path, "select count(*) from messages where kind = 'message' and direction = 'out'"
    ) == [(0,)]


async def test_streaming_deltas_join_to_the_stored_reply(make_app: Any, tmp_path: Path) -> None:
    app = await make_app(MockBackend(lambda req: "Tess: one two three four five six seven eight"))
    shown: list[str] = []

    async def on_delta(piece: str) -> None:
        shown.append(piece)

    [out] = await app.engine.handle(dm("count"), on_delta=on_delta)
    assert "".join(shown) == out.text == "one two three four five six seven eight"
    assert len(shown) > 1


async def test_empty_message_is_not_accepted(make_app: Any, tmp_path: Path) -> None:
    backend = MockBackend()
    app = await make_app(backend)
    assert await app.engine.handle(dm("")) == []
    assert await app.engine.handle(dm("  \x00 \n")) == []
    assert rows(tmp_path, "select count(*) from messages") == [(0,)]
    assert backend.requests == []


async def test_attachment_only_message_is_described_as_text(make_app: Any) -> None:
    backend = MockBackend()
    app = await make_app(backend)
    msg = dm("", attachments=(Attachment(kind="image", filename="cat.png", description="a cat"),))
    [out] = await app.engine.handle(msg)
    assert backend.requests[-1].messages[-1].content == "[image cat.png: a cat]"
    assert not out.is_error


async def test_huge_message_is_stored_whole_and_truncated_for_the_model(
    make_app: Any, tmp_path: Path
) -> None:
    backend = MockBackend()
    app = await make_app(backend, max_input_chars=1000)
    text = "lorem ipsum " * 9000  # ~100 KB
    [out] = await app.engine.handle(dm(text))
    assert not out.is_error
    sent = backend.requests[-1].messages[-1].content
    assert len(sent) < 1200 and "characters long; only the first" in sent
    [(stored_len, truncated)] = rows(
        tmp_path, "select length(text), truncated from messages where direction='in'"
    )
    assert stored_len == len(text.strip()) and truncated == 1


async def test_control_characters_nul_and_surrogates_are_cleaned(
    make_app: Any, tmp_path: Path
) -> None:
    backend = MockBackend()
    app = await make_app(backend)
    [out] = await app.engine.handle(dm("he\x00llo\x07 \ud83d world 你好"))
    assert not out.is_error
    [(text,)] = rows(tmp_path, "select text from messages where direction='in'")
    assert text == "hello \ufffd world 你好"


async def test_not_addressed_message_is_stored_as_context_only(
    make_app: Any, tmp_path: Path
) -> None:
    backend = MockBackend()
    app = await make_app(backend)
    scope = Scope(platform="test", space="guild", channel="general", user="u2", persona="tester")
    msg = Incoming(
        scope=scope,
        actor=Actor(platform="test", id="u2", display_name="Bo"),
        text="chatter",
        addressed_to_bot=False,
    )
    assert await app.engine.handle(msg) == []
    assert rows(tmp_path, "select status from messages") == [("ignored",)]
    await app.engine.handle(in_channel("hey Tess", "u3", "Cy"))
    assert [m.content for m in backend.requests[-1].messages[1:]] == ["Bo: chatter", "Cy: hey Tess"]


async def test_redelivered_platform_message_is_answered_once(make_app: Any, tmp_path: Path) -> None:
    backend = MockBackend()
    app = await make_app(backend)
    assert len(await app.engine.handle(dm("once", platform_message_id="42"))) == 1
    assert await app.engine.handle(dm("once", platform_message_id="42")) == []
    assert len(backend.requests) == 1


async def test_unknown_persona_is_recorded_and_apologised(make_app: Any, tmp_path: Path) -> None:
    app = await make_app(MockBackend())
    scope = Scope(platform="test", channel="x", user="u", persona="nobody")
    [out] = await app.engine.handle(
        Incoming(scope=scope, actor=Actor(platform="test", id="u"), text="hi")
    )
    assert out.is_error
    assert rows(tmp_path, "select stage, error_type from failures") == [
        ("persona", "PersonaNotFound")
    ]


async def test_greeting_is_rendered_and_stored(make_app: Any, tmp_path: Path) -> None:
    app = await make_app(MockBackend())
    scope = Scope(platform="test", channel="dm-g", user="g", persona="tester")
    out = await app.engine.greeting(scope, "Gus")
    assert out is not None and out.text == "Hi Gus!"
    assert rows(tmp_path, "select direction, kind, text from messages") == [
        ("out", "greeting", "Hi Gus!")
    ]


async def test_reply_records_the_persona_version_that_produced_it(
    make_app: Any, tmp_path: Path
) -> None:
    app = await make_app(MockBackend(lambda req: "v"))
    first = app.personas.get("tester").content_hash
    await app.engine.handle(dm("before"))
    path = tmp_path / "personas" / "tester.yaml"
    path.write_text(PERSONA.replace("name: Tess", "name: Tessa"), encoding="utf-8")
    await app.personas.reload(path)
    second = app.personas.get("tester").content_hash
    assert second != first
    await app.engine.handle(dm("after"))
    assert rows(
        tmp_path, "select persona_hash from messages where direction='out' order by id"
    ) == [
        (first,),
        (second,),
    ]
    assert {h for (h,) in rows(tmp_path, "select content_hash from persona_versions")} == {
        first,
        second,
    }


async def test_drain_waits_for_in_flight_turns(make_app: Any) -> None:
    release = asyncio.Event()

    async def handler(req: ChatRequest) -> str:
        await release.wait()
        return "done"

    app = await make_app(MockBackend(handler))
    turn = asyncio.create_task(app.engine.handle(dm("slow")))
    await asyncio.sleep(0.05)
    drain = asyncio.create_task(app.engine.drain(grace_s=5))
    await asyncio.sleep(0.05)
    assert not drain.done()
    release.set()
    assert await drain is True
    assert (await turn)[0].text == "done"


async def test_hot_reload_through_the_app_keeps_serving_and_records_versions(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path)
    path = tmp_path / "personas" / "tester.yaml"
    async with open_app(settings, backend=MockBackend(lambda req: "ok"), watch=True) as app:
        first = app.personas.get("tester").content_hash
        await asyncio.sleep(0.3)  # let the watcher start
        path.write_text(PERSONA.replace("name: Tess", "name: Tessa"), encoding="utf-8")
        for _ in range(200):
            if app.personas.get("tester").content_hash != first:
                break
            await asyncio.sleep(0.05)
        second = app.personas.get("tester").content_hash
        assert second != first and app.personas.get("tester").persona.name == "Tessa"
        attempts = app.personas.reload_count
        path.write_text("id: [broken", encoding="utf-8")  # an invalid edit
        for _ in range(200):
            if app.personas.reload_count > attempts:
                break
            await asyncio.sleep(0.05)
        assert app.personas.reload_count > attempts
        assert app.personas.get("tester").content_hash == second  # last good version serves
        [out] = await app.engine.handle(dm("still there?"))
        assert out.persona_hash == second and not out.is_error
    hashes = {h for (h,) in rows(tmp_path, "select content_hash from persona_versions")}
    assert hashes == {first, second}


class ScriptedMemory:
    def __init__(self, text: str = "", fail: bool = False) -> None:
        self.text, self.fail = text, fail
        self.recalls: list[Any] = []
        self.observed: list[Any] = []

    async def recall(self, request: Any) -> str:
        self.recalls.append(request)
        if self.fail:
            raise RuntimeError("index unavailable")
        return self.text

    async def observe(self, turn: Any) -> None:
        await asyncio.sleep(0.01)
        self.observed.append(turn)


async def test_memory_seam_recall_goes_after_static_prompt_and_turns_are_observed(
    make_app: Any, tmp_path: Path
) -> None:
    backend = MockBackend(lambda req: "Rex, of course!")
    app = await make_app(backend)
    memory = ScriptedMemory("What you remember about Ann:\n- 2026-11-01: Ann's dog is called Rex.")
    app.engine.memory = memory
    await app.engine.handle(dm("what is my dog called?"))
    system = backend.requests[-1].messages[0].content
    assert system.endswith("- 2026-11-01: Ann's dog is called Rex.")
    assert system.index("You are Tess") < system.index("What you remember")
    [request] = memory.recalls
    assert request.query == "what is my dog called?" and request.scope.user == "u1"
    assert await app.engine.drain(grace_s=5)
    [turn] = memory.observed
    assert (turn.incoming_text, turn.reply_text) == ("what is my dog called?", "Rex, of course!")


async def test_failing_recall_still_answers_and_records_why(make_app: Any, tmp_path: Path) -> None:
    app = await make_app(MockBackend(lambda req: "hello"))
    app.engine.memory = ScriptedMemory(fail=True)
    [out] = await app.engine.handle(dm("hi"))
    assert out.text == "hello" and not out.is_error
    assert rows(tmp_path, "select stage, reason from failures") == [("recall", "index unavailable")]


async def test_proactive_turn_is_its_own_kind_with_history_and_no_fake_user_message(
    make_app: Any, tmp_path: Path
) -> None:
    backend = MockBackend(lambda req: "Tess: Good morning, Ann! Ready for the exam?")
    app = await make_app(backend)
    await app.engine.handle(dm("I have an exam on Friday"))
    scope = dm("x").scope
    out = await app.engine.proactive(scope, instruction="Say good morning.", display_name="Ann")
    assert out is not None and out.kind == "proactive"
    assert out.text == "Good morning, Ann! Ready for the exam?"
    request = backend.requests[-1]
    assert request.messages[-1].role == "assistant"  # history ends it; nothing faked
    assert "Now you write first" in request.messages[0].content
    assert "Say good morning." in request.messages[0].content
    assert rows(tmp_path, "select direction, kind, reply_to_id from messages order by id")[-1] == (
        "out",
        "proactive",
        None,
    )
    await app.engine.handle(dm("yes!"))
    assert [m.content for m in backend.requests[-1].messages[1:]] == [
        "I have an exam on Friday",
        "Good morning, Ann! Ready for the exam?",
        "Good morning, Ann! Ready for the exam?",
        "yes!",
    ]


async def test_failed_proactive_turn_sends_nothing_and_records_why(
    make_app: Any, tmp_path: Path
) -> None:
    app = await make_app(FailingBackend(BackendUnavailable("down")))
    out = await app.engine.proactive(dm("x").scope, instruction="Check in.", display_name="Ann")
    assert out is None
    assert rows(tmp_path, "select stage, reason from failures") == [("proactive", "down")]
    assert rows(tmp_path, "select count(*) from messages") == [(0,)]


# -- order and states across restarts (issue #15) ---------------------------------------


def guild(text: str, user: str, *, addressed: bool = True, pid: str | None = None) -> Incoming:
    scope = Scope(platform="test", space="guild", channel="general", user=user, persona="tester")
    return Incoming(
        scope=scope,
        actor=Actor(platform="test", id=user, display_name=user),
        text=text,
        addressed_to_bot=addressed,
        platform_message_id=pid,
    )


@pytest.mark.parametrize(
    "between",
    [
        ["chatter"],  # one unaddressed message between
        ["chatter", "more chatter", "even more"],
        ["dup"],  # a redelivery of the first message between
    ],
)
async def test_a_burst_in_a_channel_is_answered_in_order_whatever_is_mixed_in(
    make_app: Any, between: list[str]
) -> None:
    """Unaddressed messages (and redeliveries) between two of one person's messages
    must not let the later one be answered first: they end their turn without a
    reply, but the chain of the conversation's turns stays unbroken."""
    release = asyncio.Event()
    started: list[str] = []

    async def handler(req: ChatRequest) -> str:
        last = req.messages[-1].content
        started.append(last)
        if last.endswith("first"):
            await release.wait()
        return f"re:{last}"

    app = await make_app(MockBackend(handler))
    tasks = [asyncio.create_task(app.engine.handle(guild("first", "ann", pid="1")))]
    await asyncio.sleep(0.05)
    for n, text in enumerate(between):
        if text == "dup":
            tasks.append(asyncio.create_task(app.engine.handle(guild("first", "ann", pid="1"))))
        else:
            tasks.append(
                asyncio.create_task(
                    app.engine.handle(guild(text, "bob", addressed=False, pid=f"x{n}"))
                )
            )
        await asyncio.sleep(0.02)
    tasks.append(asyncio.create_task(app.engine.handle(guild("second", "ann", pid="2"))))
    await asyncio.sleep(0.2)
    assert not any(s.endswith("second") for s in started), started  # waits for "first"
    release.set()
    results = await asyncio.gather(*tasks)
    replies = [o.text.rsplit(" ", 1)[-1] for r in results for o in r]
    assert replies == ["first", "second"]
    assert [s.rsplit(" ", 1)[-1] for s in started] == ["first", "second"]


async def test_a_message_older_than_the_limit_is_expired_with_one_away_notice(
    make_app: Any, tmp_path: Path
) -> None:
    import datetime as dt

    (tmp_path / "personas").mkdir(exist_ok=True)
    (tmp_path / "personas" / "tester.yaml").write_text(
        PERSONA.replace("safety:\n", "safety:\n  away_message: Sorry, I was away.\n"),
        encoding="utf-8",
    )
    backend = MockBackend(lambda req: "late answer")
    app = await make_app(backend)
    now = dt.datetime.now(dt.UTC)
    old = now - dt.timedelta(hours=2)
    limit = now - dt.timedelta(minutes=15)
    first = await app.engine.handle(dm("hello?", received_at=old), expire_before=limit)
    second = await app.engine.handle(dm("anyone?", received_at=old), expire_before=limit)
    assert [o.text for o in first] == ["Sorry, I was away."]
    assert second == []  # at most one notice per person
    assert backend.requests == []  # never answered late
    fresh = await app.engine.handle(dm("there you are", received_at=now), expire_before=limit)
    assert [o.text for o in fresh] == ["late answer"]
    # The model sees what the person saw: their expired messages and the notice.
    seen = [m.content for m in backend.requests[-1].messages[1:]]
    assert seen == ["hello?", "Sorry, I was away.", "anyone?", "there you are"]
    assert rows(tmp_path, "select text, status from messages where direction = 'in'") == [
        ("hello?", "expired"),
        ("anyone?", "expired"),
        ("there you are", "answered"),
    ]
    reasons = rows(tmp_path, "select stage, reason from failures")
    assert len(reasons) == 2 and all(stage == "expired" for stage, _ in reasons)
    assert "staleness limit" in reasons[0][1]


async def test_resume_answers_a_stored_message_once(make_app: Any, tmp_path: Path) -> None:
    backend = MockBackend(lambda req: f"re:{req.messages[-1].content}")
    app = await make_app(backend)
    stored = await app.ledger.record_incoming(dm("are you there?"), "are you there?")
    (unfinished,) = await app.ledger.unfinished("test")
    assert unfinished.status == "received" and unfinished.message_id == stored.message_id
    first, second = await asyncio.gather(
        app.engine.resume(unfinished), app.engine.resume(unfinished)
    )
    assert [o.text for o in first + second] == ["re:are you there?"]  # generated once
    assert len(backend.requests) == 1
    assert await app.ledger.unfinished("test") != []  # the reply waits in the outbox
    (reply,) = await app.ledger.unfinished("test")
    assert (reply.direction, reply.status, reply.kind) == ("out", "generated", "message")
    assert await app.engine.resume(unfinished) == []
