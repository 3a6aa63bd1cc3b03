"""The safety stage in real turns: a real app, a real SQLite file, a scripted backend."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.console import ConsoleAdapter
from bot.llm.base import ChatRequest
from bot.llm.mock import MockBackend
from bot.messages import Outgoing
from tests.safety.conftest import dm, rows


def scripted(*answers: str) -> MockBackend:
    """A backend that says `answers` in turn (the last one from then on)."""
    said = list(answers)

    def handler(request: ChatRequest) -> str:
        return said.pop(0) if len(said) > 1 else said[0]

    return MockBackend(handler)


async def test_a_crisis_gets_the_fixed_reply_and_the_model_is_not_asked(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    backend = scripted("A cheerful in-character answer!")
    app = await make_app(backend)
    [out] = await app.engine.handle(dm("honestly I just want to kill myself"))
    assert out.safety == "crisis" and "988" in out.text and "AI" in out.text
    assert backend.requests == []  # the model's words never replace it
    assert rows(tmp_path, "select direction, kind, status from messages order by id") == [
        ("in", "message", "answered"),
        ("out", "crisis", "generated"),
    ]
    [event] = rows(
        tmp_path,
        "select check_name, verdict, user_id, persona_id, pause_until, alert_status, details"
        " from safety_events",
    )
    assert event[:4] == ("crisis", "crisis", 1, "tester") and event[4] is not None
    assert event[5] == "queued"  # no alert channel configured: the queue has it
    details = json.loads(event[6])
    assert details["layer"] == "pattern" and details["language"] == "en"
    assert app.safety is not None
    [queued] = await app.safety.store.queue()
    assert queued.platform_user_id == "u1" and queued.details["kind"] == "self_harm"
    assert await app.safety.store.review(queued.id, "mod-1")
    assert await app.safety.store.queue() == []
    assert app.safety.stage.counters[("crisis", "crisis")] == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("死にたい", "いのちの電話"),
        ("我不想活了", "12356"),
        ("Ich will mich umbringen", "0800 111 0 111"),
        ("Quiero morir", "024"),
        ("my dad keeps hitting me", "emergency"),
    ],
)
async def test_the_crisis_reply_is_in_the_language_found_with_its_resources(
    make_app: Callable[..., Any], text: str, expected: str
) -> None:
    app = await make_app(scripted("model"))
    [out] = await app.engine.handle(dm(text))
    assert out.safety == "crisis" and expected in out.text


async def test_configured_resources_per_language_and_region_win(
    make_app: Callable[..., Any],
) -> None:
    app = await make_app(
        scripted("model"),
        crisis_resources={"de-AT": "Ruf Rat auf Draht an: 147.", "default": "Call 112."},
        region="AT",
    )
    [de] = await app.engine.handle(dm("ich will nicht mehr leben", user="a"))
    assert "147" in de.text and "0800" not in de.text
    [en] = await app.engine.handle(dm("I want to die", user="b"))
    assert "988" in en.text  # English has its own built-in resources
    [ja] = await app.engine.handle(dm("消えたい", user="c"))
    assert "いのちの電話" in ja.text


@pytest.mark.parametrize(
    "text",
    ["this homework is killing me", "笑死我了", "esta tarea me está matando", "死ぬほど笑った"],
)
async def test_hyperbole_is_answered_by_the_model(make_app: Callable[..., Any], text: str) -> None:
    backend = scripted("Ha, hang in there!")
    app = await make_app(backend, disclose_first_contact=False)
    [out] = await app.engine.handle(dm(text))
    assert out.text == "Ha, hang in there!" and out.safety is None
    assert len(backend.requests) == 1


async def test_first_contact_starts_with_the_disclosure_once_per_person_and_persona(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    app = await make_app(scripted("Hello!"))
    [first] = await app.engine.handle(dm("hi"))
    assert first.text == "I am an AI.\n\nHello!"
    [second] = await app.engine.handle(dm("how are you?"))
    assert second.text == "Hello!"
    [other] = await app.engine.handle(dm("hi", user="u2"))
    assert other.text.startswith("I am an AI.")
    # Stored as sent (the outbox resends what the ledger holds).
    assert rows(tmp_path, "select text from messages where direction='out' order by id")[0] == (
        "I am an AI.\n\nHello!",
    )
    assert rows(tmp_path, "select count(*) from safety_events where verdict='first_contact'") == [
        (2,)
    ]
    # Durable: a restarted app (a new store on the same file) does not disclose again.
    again = await make_app(scripted("Back again!"))
    [later] = await again.engine.handle(dm("hello again"))
    assert later.text == "Back again!"


@pytest.mark.parametrize(
    "question",
    [
        "Are you a real person?",
        "你是真人吗？",
        "Bist du ein Mensch?",
        "¿Eres humano?",
        "あなたは人間ですか？",
    ],
)
async def test_a_disclosure_question_is_answered_with_the_personas_text(
    make_app: Callable[..., Any], tmp_path: Path, question: str
) -> None:
    backend = scripted("Here's a joke.")
    app = await make_app(backend)
    [out] = await app.engine.handle(dm(question))
    assert out.text == "I am an AI." and out.safety == "disclosure"
    assert backend.requests == []
    assert rows(tmp_path, "select kind from messages where direction='out'") == [("disclosure",)]
    # That was the first contact's disclosure too: the next reply is the model's alone.
    [next_reply] = await app.engine.handle(dm("ok, tell me a joke"))
    assert next_reply.text == "Here's a joke."


async def test_a_reply_claiming_to_be_human_is_regenerated_once(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    backend = scripted("Don't worry, I'm a real person, not a bot.", "Let's talk about music!")
    app = await make_app(backend, disclose_first_contact=False)
    [out] = await app.engine.handle(dm("tell me something"))
    assert out.text == "Let's talk about music!" and out.safety is None
    assert len(backend.requests) == 2
    assert rows(tmp_path, "select check_name, verdict from safety_events") == [
        ("human_claim", "blocked")
    ]


async def test_a_model_that_keeps_claiming_to_be_human_is_replaced_by_the_disclosure(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    backend = scripted("Ich bin ein Mensch, keine Sorge.")
    app = await make_app(backend, disclose_first_contact=False)
    [out] = await app.engine.handle(dm("erzähl mir was"))
    assert out.text == "I am an AI." and out.safety == "blocked"
    assert len(backend.requests) == 2
    assert rows(tmp_path, "select text from messages where direction='out'") == [("I am an AI.",)]
    assert rows(tmp_path, "select count(*) from safety_events where verdict='blocked'") == [(2,)]


async def test_streaming_never_shows_a_claim_to_be_human(make_app: Callable[..., Any]) -> None:
    claim = "Well hello there, my dear friend. Honestly I'm a real person, you know, truly."
    app = await make_app(scripted(claim), disclose_first_contact=False)
    shown: list[str] = []

    async def on_delta(piece: str) -> None:
        shown.append(piece)

    [out] = await app.engine.handle(dm("hey"), on_delta=on_delta)
    assert "real person" not in "".join(shown)
    assert out.text == "I am an AI."
    # A clean reply still streams in pieces, and they join to the stored text.
    clean = "one two three four five six seven eight nine ten eleven twelve thirteen"
    app2 = await make_app(scripted(clean), disclose_first_contact=False)
    shown.clear()
    [ok] = await app2.engine.handle(dm("hey", user="u9"), on_delta=on_delta)
    assert "".join(shown) == ok.text == clean and len(shown) > 1


class Failing:
    platform = "console"

    async def send(self, outgoing: Outgoing, *, first_part: int = 0) -> list[str | None]:
        raise RuntimeError("the moderators' channel is gone")


async def test_moderators_are_alerted_in_the_configured_channel(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    app = await make_app(scripted("model"), alert_platform="console", alert_channel="mods")
    assert app.safety is not None
    # Raised before the adapter runs: pending, and sent once it is attached.
    await app.engine.handle(dm("I want to end my life", user="early"))
    assert rows(tmp_path, "select alert_status from safety_events") == [("pending",)]
    screen = io.StringIO()
    console = ConsoleAdapter(
        app.services, persona="tester", stdout=screen, stdin=io.StringIO(), interactive=False
    )
    app.safety.alerts.attach(console)
    await app.safety.alerts.drain()
    await app.engine.handle(dm("I want to kill myself", user="u7"))
    await app.safety.alerts.drain()
    lines = screen.getvalue().splitlines()
    assert len(lines) == 2 and all(line.startswith("[safety] Possible crisis") for line in lines)
    assert "test user u7" in lines[1] and "kill myself" not in lines[1].split("(")[0]
    assert rows(tmp_path, "select alert_status from safety_events order by id") == [
        ("sent",),
        ("sent",),
    ]
    # A channel that fails: recorded with its reason, the crisis reply still went out.
    app.safety.alerts.attach(Failing())
    [out] = await app.engine.handle(dm("I want to die", user="u8"))
    await app.safety.alerts.drain()
    assert out.safety == "crisis"
    assert rows(tmp_path, "select alert_status, alert_reason from safety_events order by id")[
        -1
    ] == ("failed", "RuntimeError: the moderators' channel is gone")
