"""Mature personas: silent outside age-restricted places, an age question where the
platform has no such flag, the answer recorded in the people store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.llm.mock import MockBackend
from bot.messages import Actor, Incoming, Scope
from bot.personas import parse_persona
from bot.safety.rating import read_age_answer
from tests.safety.conftest import rows

MATURE = """\
version: 1
id: noir
name: Noir
system_prompt: You are Noir, a hard-boiled detective for grown-ups.
safety:
  content_rating: mature
  age_gate_message: "Noir's stories are for adults. Are you 18 or older?"
"""


def write_mature(tmp_path: Path) -> None:
    (tmp_path / "personas").mkdir(exist_ok=True)
    (tmp_path / "personas" / "noir.yaml").write_text(MATURE, encoding="utf-8")


def dm(text: str, user: str = "7", platform: str = "telegram", persona: str = "noir") -> Incoming:
    scope = Scope(platform=platform, channel=f"dm-{user}", user=user, persona=persona)
    return Incoming(scope=scope, actor=Actor(platform=platform, id=user), text=text)


def channel(text: str, restricted: bool | None, persona: str = "noir") -> Incoming:
    scope = Scope(platform="discord", space="g", channel="c", user="7", persona=persona)
    return Incoming(
        scope=scope, actor=Actor(platform="discord", id="7"), text=text, age_restricted=restricted
    )


def test_content_rating_is_part_of_the_persona_schema() -> None:
    loaded = parse_persona(MATURE.encode(), Path("noir.yaml"))
    assert loaded.persona.safety.content_rating == "mature"
    from bot.personas import PersonaFileError

    with pytest.raises(PersonaFileError):
        parse_persona(MATURE.replace("mature", "x-rated").encode(), Path("noir.yaml"))


async def test_a_mature_persona_asks_first_and_records_the_answer(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    write_mature(tmp_path)
    backend = MockBackend()
    app = await make_app(backend, disclose_first_contact=False)
    [ask] = await app.engine.handle(dm("hello"))
    assert ask.text == "Noir's stories are for adults. Are you 18 or older?"
    assert ask.safety == "age_gate" and backend.requests == []
    [again] = await app.engine.handle(dm("what is this?"))  # not an answer: asked again
    assert again.safety == "age_gate"
    [reply] = await app.engine.handle(dm("Yes!"))
    assert reply.text == "You said: Yes!" and reply.safety is None  # the model answers now
    assert "confirmed they are an adult" in backend.requests[0].messages[0].content
    assert rows(tmp_path, "select age_answer from users where platform_user_id='7'") == [
        ("adult",)
    ]
    [later] = await app.engine.handle(dm("tell me a story"))
    assert later.safety is None and len(backend.requests) == 2
    events = rows(tmp_path, "select verdict from safety_events where check_name='rating'")
    assert events == [("age_gate",), ("age_gate",), ("age_confirmed",)]


async def test_a_minor_is_told_once_and_then_meets_silence(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    write_mature(tmp_path)
    backend = MockBackend()
    app = await make_app(backend, disclose_first_contact=False)
    await app.engine.handle(dm("hi", user="8"))
    [told] = await app.engine.handle(dm("I'm 15", user="8"))
    assert "adults only" in told.text and told.safety == "age_gate"
    assert await app.engine.handle(dm("yes I'm 18 now", user="8")) == []
    assert await app.engine.handle(dm("please", user="8")) == []
    assert backend.requests == []
    assert rows(tmp_path, "select age_answer from users where platform_user_id='8'") == [
        ("minor",)
    ]


async def test_a_general_persona_never_asks(make_app: Callable[..., Any]) -> None:
    app = await make_app(MockBackend(), disclose_first_contact=False)
    [out] = await app.engine.handle(dm("hello", persona="tester"))
    assert out.safety is None


async def test_discords_age_restricted_flag_is_respected(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    write_mature(tmp_path)
    backend = MockBackend()
    app = await make_app(backend, disclose_first_contact=False)
    # Not age-restricted: silent, and why is recorded.
    assert await app.engine.handle(channel("@noir hi", restricted=False)) == []
    assert rows(tmp_path, "select verdict, reason from safety_events") == [
        ("age_restricted", "a mature persona in a channel that is not age-restricted")
    ]
    # Age-restricted: it speaks, without an age question (Discord checked the age).
    [out] = await app.engine.handle(channel("@noir hi", restricted=True))
    assert out.text.endswith("@noir hi") and out.safety is None
    # A safe persona speaks in the ordinary channel.
    [safe] = await app.engine.handle(channel("@tess hi", restricted=False, persona="tester"))
    assert safe.safety is None


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("yes", "adult"),
        ("YES!!", "adult"),
        ("Ja.", "adult"),
        ("sí", "adult"),
        ("是的", "adult"),
        ("はい", "adult"),
        ("ｙｅｓ", "adult"),
        ("I'm 25", "adult"),
        ("18", "adult"),
        ("no", "minor"),
        ("Nein", "minor"),
        ("不是", "minor"),
        ("いいえ", "minor"),
        ("17", "minor"),
        ("i am 12", "minor"),
        ("", None),
        ("what?", None),
        ("yes and no", None),
        ("my cat is 3 and I have 2 dogs", None),
        ("999", None),
        ("y" * 10_000, None),
    ],
)
def test_answers_to_the_age_question(text: str, answer: str | None) -> None:
    assert read_age_answer(text) == answer
