"""The classifier layer against the fake OpenAI server: scripted verdicts, garbage and
silence, through the real openai client and the app as configured."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.errors import BotError
from bot.llm.mock import MockBackend
from bot.llm.openai_backend import OpenAIBackend
from bot.safety.classifier import ClassifierError, LlamaGuardClassifier, StructuredClassifier
from tests.fakes.openai_server import FakeOpenAIServer, Reply
from tests.safety.conftest import dm, rows

UNCERTAIN = "I can't take it anymore, everything is too much"


def chat() -> MockBackend:
    return MockBackend(lambda r: "I'm here with you.")


def classifier_config(server: FakeOpenAIServer, **extra: Any) -> dict[str, Any]:
    return {
        "classifier": "structured",
        "classifier_base_url": server.base_url,
        "classifier_model": "tiny",
        "disclose_first_contact": False,
        **extra,
    }


async def test_structured_classifier_finds_a_crisis_the_patterns_only_worried_about(
    make_app: Callable[..., Any], fake_openai: FakeOpenAIServer, tmp_path: Path
) -> None:
    fake_openai.script(Reply(text='{"kind": "self_harm", "confidence": 0.93}'))
    backend = chat()
    app = await make_app(backend, **classifier_config(fake_openai))
    [out] = await app.engine.handle(dm(UNCERTAIN))
    assert out.safety == "crisis" and backend.requests == []
    [request] = fake_openai.requests
    assert request["response_format"]["type"] == "json_schema"
    assert request["response_format"]["json_schema"]["schema"]["required"] == ["kind"]
    assert UNCERTAIN in request["messages"][-1]["content"]
    [(details,)] = rows(tmp_path, "select details from safety_events where check_name='crisis'")
    assert json.loads(details)["layer"] == "structured"


async def test_a_pattern_crisis_does_not_wait_for_the_classifier(
    make_app: Callable[..., Any], fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.script(Reply(text='{"kind": "none"}'))
    app = await make_app(chat(), **classifier_config(fake_openai))
    [out] = await app.engine.handle(dm("I want to kill myself"))
    assert out.safety == "crisis"
    assert fake_openai.requests == []  # the patterns decided; a classifier cannot undo it


async def test_classifier_saying_none_lets_the_turn_go_on(
    make_app: Callable[..., Any], fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.script(Reply(text='{"kind": "none", "confidence": 0.99}'))
    backend = chat()
    app = await make_app(backend, **classifier_config(fake_openai))
    [out] = await app.engine.handle(dm(UNCERTAIN))
    assert out.safety is None and out.text == "I'm here with you."
    assert len(fake_openai.requests) == 1 and len(backend.requests) == 1


@pytest.mark.parametrize(
    "reply",
    [
        Reply(text="I think this person is sad"),  # not JSON
        Reply(text='{"kind": "maybe"}'),  # outside the schema
        Reply(text='["self_harm"]'),
        Reply(text='{"kind": "self_harm", "confidence": "high"}'),
        Reply.http_error(500),
        Reply.hang(10),  # past the classifier's timeout
    ],
    ids=["prose", "bad-kind", "array", "bad-confidence", "http-500", "silent"],
)
async def test_a_failing_classifier_leaves_the_patterns_verdict_and_is_recorded(
    make_app: Callable[..., Any], fake_openai: FakeOpenAIServer, tmp_path: Path, reply: Reply
) -> None:
    fake_openai.default = reply
    backend = chat()
    app = await make_app(backend, **classifier_config(fake_openai, classifier_timeout_s=1.0))
    [out] = await app.engine.handle(dm(UNCERTAIN))
    assert out.safety is None and len(backend.requests) == 1  # the turn went on
    [(check, verdict, reason)] = rows(
        tmp_path, "select check_name, verdict, reason from safety_events"
    )
    assert (check, verdict) == ("crisis_classifier", "error") and "classifier" in reason
    # A pattern crisis is still a crisis with the classifier down.
    [crisis] = await app.engine.handle(dm("I want to die", user="u2"))
    assert crisis.safety == "crisis"


async def test_classify_always_asks_about_messages_the_patterns_let_through(
    make_app: Callable[..., Any], fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.script(Reply(text='{"kind": "danger"}'))
    app = await make_app(chat(), **classifier_config(fake_openai, classify="always"))
    [out] = await app.engine.handle(dm("there is a man outside with a bat again"))
    assert out.safety == "crisis" and len(fake_openai.requests) == 1


async def test_llama_guard_verdicts(fake_openai: FakeOpenAIServer) -> None:
    backend = OpenAIBackend(fake_openai.base_url, "tiny", max_retries=0)
    guard = LlamaGuardClassifier(backend, model="tiny")
    try:
        fake_openai.script(
            Reply(text="unsafe\nS11"),
            Reply(text="safe"),
            Reply(text="unsafe\nS1,S9"),
            Reply(text="I cannot help with that."),
        )
        assert (await guard.classify("x")).kind == "self_harm"
        assert (await guard.classify("x")).kind == "none"
        assert (await guard.classify("x")).kind == "none"  # not a self-harm category
        with pytest.raises(ClassifierError):
            await guard.classify("x")
        assert fake_openai.requests[0]["messages"] == [{"role": "user", "content": "x"}]
    finally:
        await backend.aclose()


async def test_structured_classifier_bounds_what_it_sends(fake_openai: FakeOpenAIServer) -> None:
    backend = OpenAIBackend(fake_openai.base_url, "tiny", max_retries=0)
    classifier = StructuredClassifier(backend, model="tiny", max_chars=1000)
    try:
        fake_openai.script(Reply(text='```json\n{"kind": "none"}\n```'))
        result = await classifier.classify("y" * 1_000_000)
        assert result.kind == "none"
        assert len(fake_openai.requests[0]["messages"][-1]["content"]) <= 1001
    finally:
        await backend.aclose()


def test_classifier_parse_rejects_garbage_with_a_clear_error() -> None:
    classifier = StructuredClassifier(MockBackend())
    for raw in ("", "null", "{", '{"kind": 3}', '{"kind": "none", "confidence": true}'):
        with pytest.raises(ClassifierError) as err:
            classifier.parse(raw)
        assert isinstance(err.value, BotError)
    assert classifier.parse('{"kind": "self_harm", "confidence": 0.2}').kind == "none"
