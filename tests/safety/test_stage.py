"""The stage itself: broken checks and sinks, silence, and the stream guard's promise
(whatever the chunking, what is shown is a prefix the checks passed)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.llm.base import Completion
from bot.llm.mock import MockBackend
from bot.messages import TurnKind
from bot.personas import LoadedPersona, load_persona
from bot.safety import InputContext, InputHit, OutputContext, SafetyEvent, SafetyStage
from bot.safety.disclosure import HumanClaimCheck
from tests.safety.conftest import dm, rows
from tests.test_engine import PERSONA


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> LoadedPersona:
    path = tmp_path_factory.mktemp("p") / "tester.yaml"
    path.write_text(PERSONA, encoding="utf-8")
    return load_persona(path)


def input_ctx(loaded: LoadedPersona, text: str) -> InputContext:
    return InputContext(
        dm(text), text, 1, 1, 1, loaded, first_in_conversation=True, now=datetime.now(UTC)
    )


class Broken:
    name = "broken"

    async def check(self, ctx: Any, text: str = "") -> Any:
        raise RuntimeError("a bug in a check")


class BrokenSink:
    async def record(self, event: SafetyEvent) -> None:
        raise OSError("disk full")


class Notice:
    name = "notice"

    async def check(self, ctx: InputContext) -> InputHit:
        return InputHit("notice", "notice", "always", notice="A note.", guidance="Be kind.")


async def test_a_broken_check_is_counted_and_the_others_still_run(loaded: LoadedPersona) -> None:
    from bot.safety.crisis import CrisisCheck

    stage = SafetyStage(input_checks=[Broken(), CrisisCheck()], output_checks=[Broken()])
    verdict = await stage.before_turn(input_ctx(loaded, "I want to die"))
    assert verdict.kind == "crisis" and verdict.reply
    out = OutputContext(dm("x").scope, loaded, TurnKind.MESSAGE, 1)
    assert (await stage.after_generation(out, "hello")).ok
    assert stage.counters[("broken", "error")] == 2


async def test_a_failing_sink_does_not_stop_the_crisis_reply(loaded: LoadedPersona) -> None:
    from bot.safety.crisis import CrisisCheck

    stage = SafetyStage(input_checks=[CrisisCheck()], sink=BrokenSink())
    verdict = await stage.before_turn(input_ctx(loaded, "quiero morir"))
    assert verdict.kind == "crisis" and "024" in (verdict.reply or "")
    assert stage.counters[("record", "error")] == 1


async def test_notices_and_guidance_join_a_turn_that_goes_on(loaded: LoadedPersona) -> None:
    stage = SafetyStage(input_checks=[Notice(), Notice()])
    verdict = await stage.before_turn(input_ctx(loaded, "hi"))
    assert not verdict.answers and verdict.notices == ("A note.", "A note.")
    assert verdict.guidance == "Be kind.\nBe kind."


class Silence:
    name = "silence"

    async def check(self, ctx: InputContext) -> InputHit:
        return InputHit("silence", "muted", "muted by a moderator", reply="")


async def test_an_empty_fixed_reply_is_silence_and_the_message_is_settled(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    backend = MockBackend(lambda r: "model")
    app = await make_app(backend)
    app.engine.safety.input_checks.insert(0, Silence())
    assert await app.engine.handle(dm("hello?")) == []
    assert backend.requests == []
    assert rows(tmp_path, "select direction, status from messages") == [("in", "ignored")]
    assert await app.engine.ledger.unfinished("test") == []  # recovery leaves it alone
    assert rows(tmp_path, "select check_name, verdict, reason from safety_events") == [
        ("silence", "muted", "muted by a moderator")
    ]


def chunked(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(points) if b > a]


CLAIMS = [
    "Sure! Honestly I'm a real person, you know, just like you are.",
    "我不是机器人，我们继续聊吧，今天过得怎么样？",
    "Na klar, ich bin ein Mensch und kein Programm, versprochen.",
]


@settings(max_examples=60, deadline=None)
@given(
    text=st.sampled_from(CLAIMS),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=30),
)
async def test_streamed_text_never_shows_a_blocked_phrase_whatever_the_chunks(
    loaded: LoadedPersona, text: str, cuts: list[int]
) -> None:
    stage = SafetyStage(output_checks=[HumanClaimCheck()])
    shown: list[str] = []

    async def on_delta(piece: str) -> None:
        shown.append(piece)

    async def generate(delta: Any) -> tuple[str, Completion]:
        if delta is not None:
            for piece in chunked(text, cuts):
                await delta(piece)
        return text, Completion(text=text, model="m")

    ctx = OutputContext(dm("x").scope, loaded, TurnKind.MESSAGE, 1)
    final, _, verdict = await stage.moderate(ctx, generate, on_delta)
    assert not verdict.ok and final == "I am an AI."
    assert await HumanClaimCheck().check(ctx, "".join(shown)) is None


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=30))
async def test_a_clean_stream_is_shown_whole_and_screened_sparingly_for_expensive_checks(
    loaded: LoadedPersona, cuts: list[int]
) -> None:
    text = "All good here. " * 20
    calls = 0

    class Expensive:
        name = "model"
        expensive = True

        async def check(self, ctx: OutputContext, t: str) -> str | None:
            nonlocal calls
            calls += 1
            return None

    stage = SafetyStage(output_checks=[Expensive()])
    shown: list[str] = []

    async def on_delta(piece: str) -> None:
        shown.append(piece)

    async def generate(delta: Any) -> tuple[str, Completion]:
        for piece in chunked(text, cuts) if delta is not None else []:
            await delta(piece)
        return text, Completion(text=text, model="m")

    ctx = OutputContext(dm("x").scope, loaded, TurnKind.MESSAGE, 1)
    final, _, verdict = await stage.moderate(ctx, generate, on_delta)
    assert verdict.ok and final == text and "".join(shown) == text
    assert calls <= len(text) // 80 + 2  # not one HTTP call per word
