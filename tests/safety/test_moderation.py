"""Output moderation: declined topics, blocklists, other people's personal data and a
moderation endpoint, as checks and in real turns (scripted backend, real SQLite)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.export.scrub import Scrubber
from bot.llm.base import ChatRequest
from bot.llm.mock import MockBackend
from bot.messages import Scope, TurnKind
from bot.personas import parse_persona
from bot.safety.moderation import (
    BlocklistCheck,
    DeclinedTopicCheck,
    GuardModelCheck,
    ModerationEndpoint,
    PersonalDataCheck,
    TermMatcher,
    personal_data,
)
from bot.safety.stage import OutputContext
from tests.fakes.openai_server import FakeOpenAIServer, Moderation
from tests.safety.conftest import dm, rows

PERSONA = """\
version: 1
id: tester
name: Tess
system_prompt: You are Tess.
safety:
  ai_disclosure: I am an AI.
  decline_topics: [medical diagnoses, 考试作弊]
  decline_message: Let's talk about something else!
  blocklist: [frobnicate, Scheiße, ばか]
"""


def ctx(incoming: str | None = "hi", *, channel: str = "c1", space: str | None = None) -> Any:
    loaded = parse_persona(PERSONA.encode(), Path("tester.yaml"))
    scope = Scope(platform="discord", space=space, channel=channel, user="u1", persona="tester")
    return OutputContext(scope, loaded, TurnKind.MESSAGE, 1, incoming_text=incoming)


def scripted(*answers: str) -> MockBackend:
    said = list(answers)

    def handler(request: ChatRequest) -> str:
        return said.pop(0) if len(said) > 1 else said[0]

    return MockBackend(handler)


# -- blocklists: the tricks people (and models) use --------------------------------

HIDDEN = [
    # (the reply, the term found)
    ("you FROBNICATE it", "frobnicate"),
    ("fr\u200bobn\u200dicate", "frobnicate"),  # zero-width inside
    ("ｆｒｏｂｎｉｃａｔｅ", "frobnicate"),  # full width (NFKC)
    ("f r o b n i c a t e", "frobnicate"),  # spaced out
    ("f.r.o.b.n.i.c.a.t.e", "frobnicate"),  # dotted apart
    ("fr0bn1cate", "frobnicate"),  # leetspeak
    ("frooobnicate", "frobnicate"),  # stretched
    ("frobnicáte", "frobnicate"),  # an accent
    ("So eine SCHEISSE", "Scheiße"),  # German ß written ss, upper case
    ("so eine scheiße!", "Scheiße"),
    ("この ば か!", "ばか"),  # Japanese, spaced
    ("ば\u200bか", "ばか"),
]
CLEAN = [
    "frobnicated is not a word I use",  # whole words only in spaced scripts
    "a classic scheme",
    "バカンス",  # katakana is another word
    "nothing to see here",
]


@pytest.mark.parametrize(("reply", "term"), HIDDEN)
async def test_a_persona_blocklist_term_is_found_however_it_is_disguised(
    reply: str, term: str
) -> None:
    reason = await BlocklistCheck().check(ctx(), reply)
    assert reason == f"persona blocklist: {term}"


@pytest.mark.parametrize("reply", CLEAN)
async def test_words_that_only_contain_a_term_pass(reply: str) -> None:
    assert await BlocklistCheck().check(ctx(), reply) is None


async def test_channel_blocklists_apply_by_place() -> None:
    lists = {"*": ["globalword"], "discord:g1": ["guildword"], "discord:c2": ["x y"]}
    check = BlocklistCheck(lists)
    assert await check.check(ctx(), "a GlobalWord") == "blocklist *: globalword"
    assert await check.check(ctx(space="g1"), "guild-word? no: guildword") is not None
    assert await check.check(ctx(space="g2"), "guildword") is None  # another server
    assert await check.check(ctx(channel="c2"), "X   y") == "blocklist discord:c2: x y"
    assert await check.check(ctx(channel="c3"), "x y") is None


@pytest.mark.parametrize(
    ("terms", "reply"),
    [
        (["违禁词"], "这是违 禁 词吗"),  # Chinese, spaced
        (["palabrota"], "¡PALABROTA!"),  # Spanish
        (["schimpfwort"], "Schimpf-Wort"),  # split by a hyphen
        (["bad phrase"], "bad\u00a0\u00a0phrase"),  # no-break spaces
        (["плохо"], "ПЛОХО"),  # Cyrillic case
    ],
)
async def test_blocklists_in_other_languages(terms: list[str], reply: str) -> None:
    assert await BlocklistCheck({"*": terms}).check(ctx(), reply) is not None


@settings(max_examples=60, deadline=None)
@given(
    prefix=st.text(max_size=30),
    suffix=st.text(max_size=30),
    junk=st.lists(st.sampled_from(["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]), max_size=4),
)
def test_invisible_characters_anywhere_never_hide_a_term(
    prefix: str, suffix: str, junk: list[str]
) -> None:
    word = "frobnicate"
    hidden = "".join(c + (junk[i % len(junk)] if junk else "") for i, c in enumerate(word))
    matcher = TermMatcher(["frobnicate"])
    assert matcher.find(f"{prefix} {hidden} {suffix}") == "frobnicate"


def test_a_hostile_reply_is_checked_in_bounded_time() -> None:
    matcher = TermMatcher([f"term{i}" for i in range(2000)])
    hostile = ("a " * 200_000) + "t.e.r.m" * 10_000
    started = time.process_time()
    matcher.find(hostile)
    assert time.process_time() - started < 5.0


def test_a_blocklist_past_its_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="at most"):
        TermMatcher(f"w{i}" for i in range(20_001))


# -- declined topics ----------------------------------------------------------------


async def test_a_declined_topic_blocks_but_the_decline_message_does_not() -> None:
    check = DeclinedTopicCheck()
    assert await check.check(ctx(), "Here are some Medical  Diagnoses for you") == (
        "declined topic: medical diagnoses"
    )
    assert await check.check(ctx(), "我教你考试作弊") == "declined topic: 考试作弊"
    assert await check.check(ctx(), "Let's talk about something else!") is None
    assert await check.check(ctx(), "I love medical dramas") is None


async def test_a_model_that_names_a_declined_topic_is_regenerated_then_deflected(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    # The test persona (tests/test_engine.py) declines "medical advice".
    backend = scripted("Sure, here is some MEDICAL advice for you.")
    app = await make_app(backend, disclose_first_contact=False)
    [out] = await app.engine.handle(dm("my knee hurts"))
    assert len(backend.requests) == 2  # generated, blocked, regenerated once, blocked
    loaded = app.personas.get("tester")
    assert out.safety == "blocked" and out.text == loaded.persona.safety.decline_message
    assert rows(tmp_path, "select check_name, verdict, reason from safety_events") == [
        ("declined_topic", "blocked", "declined topic: medical advice")
    ] * 2
    assert app.safety.stage.counters[("declined_topic", "blocked")] == 2


async def test_a_regenerated_reply_that_passes_is_sent(make_app: Callable[..., Any]) -> None:
    backend = scripted("Try this medical advice.", "Let's rest that knee and talk music.")
    app = await make_app(backend, disclose_first_contact=False)
    [out] = await app.engine.handle(dm("my knee hurts"))
    assert out.text == "Let's rest that knee and talk music." and out.safety is None


# -- personal data ------------------------------------------------------------------

LEAKS = [
    "Sure, Bob's number is +49 151 23456789.",
    "Write to ann.lee@example.com, she'll know.",
    "Her card is 4111 1111 1111 1111",
    "IBAN DE89 3704 0044 0532 0130 00",
    "the token is ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "He lives at 221B Baker Street, London NW1 6XE",
    "ann dot lee at example dot com",
]


@pytest.mark.parametrize("reply", LEAKS)
async def test_a_reply_leaking_someone_elses_data_is_blocked(reply: str) -> None:
    reason = await PersonalDataCheck().check(ctx("what do you know?"), reply)
    assert reason is not None and reason.startswith("personal data of someone else")
    # The reason names the kind only, never the value.
    assert "example.com" not in reason and "151" not in reason


async def test_the_persons_own_data_just_typed_is_theirs() -> None:
    check = PersonalDataCheck()
    mine = "my number is +49 151 23456789 and my mail is ME@Example.com, remember it"
    assert await check.check(ctx(mine), "Got it: +49 151 23456789 and me@example.com.") is None
    # Written another way, still theirs (digits and case compared, not the spelling).
    assert await check.check(ctx(mine), "Noted: +49 (151) 234-56789") is None
    # Someone else's beside it is not.
    assert await check.check(ctx(mine), "Also, Bob is bob@example.org") is not None
    # A proactive turn answers no message: nothing in it is the person's own.
    assert await check.check(ctx(None), "Call +49 151 23456789") is not None


async def test_mentions_times_and_prices_are_not_personal_data() -> None:
    reply = "See you at 12:30 on 2026-12-01, <@123456789>! It costs $19.99, room 42."
    assert await PersonalDataCheck().check(ctx(), reply) is None


def test_personal_data_values_come_from_the_text() -> None:
    text = "a +49 151 23456789 b x@y.org c"
    assert personal_data(Scrubber(), text) == [("PHONE", "+49 151 23456789"), ("EMAIL", "x@y.org")]
    assert personal_data(Scrubber(), "nothing here") == []


async def test_a_leak_in_a_real_turn_is_replaced_and_never_streamed(
    make_app: Callable[..., Any], tmp_path: Path
) -> None:
    leak = "Well, let me think about it. Her number is +49 151 23456789, call her."
    app = await make_app(scripted(leak), disclose_first_contact=False)
    shown: list[str] = []

    async def on_delta(piece: str) -> None:
        shown.append(piece)

    [out] = await app.engine.handle(dm("what's Sue's number?"), on_delta=on_delta)
    assert "23456789" not in "".join(shown) and "23456789" not in out.text
    assert out.safety == "blocked"
    stored = rows(tmp_path, "select text from messages where direction='out'")
    assert all("23456789" not in t for (t,) in stored)
    reasons = rows(tmp_path, "select check_name, reason from safety_events")
    assert ("personal_data", "personal data of someone else: phone") in reasons
    assert all("23456789" not in r for _, r in reasons)


# -- the moderation endpoint --------------------------------------------------------


async def test_a_flagged_reply_is_blocked_with_its_categories() -> None:
    async with FakeOpenAIServer() as server:
        check = ModerationEndpoint(server.base_url, model="omni-moderation-latest")
        server.script_moderation(Moderation(flagged=True, categories=("harassment",)))
        assert await check.check(ctx(), "you are awful") == "moderation: harassment"
        assert await check.check(ctx(), "nice weather") is None
        assert server.moderation_requests[0] == {
            "input": "you are awful",
            "model": "omni-moderation-latest",
        }
        # The same text again (the stream guard's last prefix, then the final check)
        # is answered from memory, not asked twice.
        assert await check.check(ctx(), "you are awful") == "moderation: harassment"
        assert len(server.moderation_requests) == 2
        await check.aclose()


async def test_only_configured_categories_block() -> None:
    async with FakeOpenAIServer() as server:
        check = ModerationEndpoint(server.base_url, categories=["self-harm"])
        server.script_moderation(
            Moderation(flagged=True, categories=("harassment",)),
            Moderation(flagged=True, categories=("self-harm", "violence")),
        )
        assert await check.check(ctx(), "one") is None
        assert await check.check(ctx(), "two") == "moderation: self-harm"
        await check.aclose()


@pytest.mark.parametrize(
    "answer",
    [
        Moderation(delay_s=5.0),  # past the timeout
        Moderation(status=500),
        Moderation(raw=b"<html>nope</html>"),
        Moderation(raw=b'{"results": []}'),
        Moderation(raw=b'{"results": [{"flagged": "yes"}]}'),
        Moderation(raw=b"\xff\xfe garbage"),
        Moderation(raw=b"[" * 300_000),  # past the body bound
    ],
)
async def test_a_failing_endpoint_fails_open_or_closed_as_configured(answer: Moderation) -> None:
    async with FakeOpenAIServer() as server:
        opened = ModerationEndpoint(server.base_url, timeout_s=0.3, fail="open")
        closed = ModerationEndpoint(server.base_url, timeout_s=0.3, fail="closed")
        server.script_moderation(answer, answer)
        started = time.monotonic()
        assert await opened.check(ctx(), "hello") is None
        reason = await closed.check(ctx(), "hello")
        assert reason is not None and reason.startswith("moderation unavailable")
        assert time.monotonic() - started < 4.0  # bounded by the timeout, not the server
        assert opened.failures == closed.failures == 1
        await opened.aclose()
        await closed.aclose()


async def test_an_unreachable_endpoint_is_a_failure_not_a_crash() -> None:
    check = ModerationEndpoint("http://127.0.0.1:9/v1", timeout_s=0.5, fail="closed")
    reason = await check.check(ctx(), "hello")
    assert reason is not None and "unavailable" in reason
    await check.aclose()


async def test_the_endpoint_in_a_real_turn(make_app: Callable[..., Any], tmp_path: Path) -> None:
    async with FakeOpenAIServer() as server:
        moderation = {"model": "openai", "base_url": server.base_url, "fail": "closed"}
        backend = scripted("first answer", "second answer")
        app = await make_app(backend, disclose_first_contact=False, moderation=moderation)
        server.script_moderation(Moderation(flagged=True, categories=("violence",)))
        [out] = await app.engine.handle(dm("hello"))
        assert out.text == "second answer" and out.safety is None
        inputs = [r["input"] for r in server.moderation_requests]
        assert inputs == ["first answer", "second answer"]
        assert rows(tmp_path, "select check_name, reason from safety_events") == [
            ("moderation", "moderation: violence")
        ]
        assert app.safety.stage.counters[("moderation", "blocked")] == 1


# -- a safety model on vLLM (Llama Guard), through the chat API ----------------------


async def test_a_guard_model_reads_safe_and_unsafe() -> None:
    answers = iter(["safe", "unsafe\nS10", "unsafe\nS2", "I cannot answer that"])
    backend = MockBackend(lambda request: next(answers))
    check = GuardModelCheck(backend, categories=[10], fail="closed")
    assert await check.check(ctx("hey"), "fine reply") is None
    assert await check.check(ctx("hey"), "hateful reply") == "moderation: unsafe S10"
    assert await check.check(ctx("hey"), "other reply") is None  # S2 is not configured
    reason = await check.check(ctx("hey"), "odd reply")
    assert reason is not None and "unavailable" in reason
    # The exchange is what the guard model reads: the person's message and the reply.
    roles = [m.role for m in backend.requests[0].messages]
    assert roles == ["user", "assistant"]


async def test_a_hanging_guard_model_is_bounded() -> None:
    async def hang(request: ChatRequest) -> str:
        await asyncio.sleep(30)
        return "safe"

    check = GuardModelCheck(MockBackend(hang), timeout_s=0.2, fail="open")
    started = time.monotonic()
    assert await check.check(ctx(), "text") is None
    assert time.monotonic() - started < 2.0 and check.failures == 1


def test_httpx_is_what_talks_to_the_endpoint() -> None:
    # The check takes a client, so a deployment can pass its own (proxies, TLS).
    client = httpx.AsyncClient()
    check = ModerationEndpoint("http://127.0.0.1:1/v1", client=client)
    assert check.client is client
    asyncio.run(client.aclose())


async def test_growing_prefixes_are_checked_again_only_near_their_end() -> None:
    # The stream guard screens ever longer prefixes; what passed is not scanned
    # again from the start, yet a term or a number split by the cut is still found.
    check, pii = BlocklistCheck(), PersonalDataCheck()
    c = ctx("hello")
    text = "word " * 400
    for end in range(5, len(text), 5):
        assert await check.check(c, text[:end]) is None
        assert await pii.check(c, text[:end]) is None
    tail = text + "and then f r o b n i c a t e"
    assert await check.check(c, tail) == "persona blocklist: frobnicate"
    assert await pii.check(c, text + "call +49 151 23456789") is not None
    # A text that does not extend what passed is checked whole.
    assert await check.check(c, "frobnicate " + text) is not None


def test_a_blocklist_term_past_its_length_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 200 characters"):
        TermMatcher(["x" * 201])


@pytest.mark.parametrize(
    "moderation",
    [
        {"blocklists": {"*": ["x" * 201]}},
        {"blocklists": {"*": [f"w{i}" for i in range(20_001)]}},
        {"blocklists": {"*": "not a list"}},
        {"model": "perspective"},
        {"fail": "sometimes"},
        {"timeout_s": 0},
        {"timeout_s": 10_000},
    ],
)
def test_hostile_moderation_config_is_a_config_error(moderation: dict[str, Any]) -> None:
    from bot.config import load_settings
    from bot.errors import ConfigError

    with pytest.raises(ConfigError, match=r"safety\.moderation"):
        load_settings(None, {"safety": {"moderation": moderation}})


def test_a_persona_blocklist_term_is_bounded_by_the_schema() -> None:
    from bot.personas import PersonaFileError

    long = PERSONA.replace("blocklist: [frobnicate", "blocklist: [" + "x" * 201)
    with pytest.raises(PersonaFileError, match="blocklist"):
        parse_persona(long.encode(), Path("tester.yaml"))
    empty = PERSONA.replace("blocklist: [frobnicate", "blocklist: [''")
    with pytest.raises(PersonaFileError):
        parse_persona(empty.encode(), Path("tester.yaml"))


PII = ["+49 151 23456789", "ann.lee@example.com", "4111 1111 1111 1111", "+1 415 555 2671"]
_filler = st.text(alphabet=st.sampled_from("abc xyz ÄÖü 你好 "), max_size=40)


@settings(max_examples=60, deadline=None)
@given(before=_filler, after=_filler, value=st.sampled_from(PII), own=st.booleans())
def test_someone_elses_data_anywhere_in_a_reply_is_blocked_and_ones_own_is_not(
    before: str, after: str, value: str, own: bool
) -> None:
    incoming = f"remember {value} please" if own else "what do you know?"
    reason = asyncio.run(PersonalDataCheck().check(ctx(incoming), f"{before} {value} {after}"))
    assert (reason is None) == own


async def test_a_llama_guard_model_on_a_server_through_the_config() -> None:
    from bot.config import load_settings
    from bot.safety.moderation import moderation_checks
    from tests.fakes.openai_server import Reply

    async with FakeOpenAIServer(models=("llama-guard",)) as server:
        moderation = {
            "model": "llama_guard",
            "base_url": server.base_url,
            "model_name": "llama-guard",
            "categories": ["S10"],
            "timeout_s": 2,
        }
        settings = load_settings(None, {"safety": {"moderation": moderation}})
        checks = moderation_checks(settings)
        assert [c.name for c in checks] == [
            "declined_topic",
            "blocklist",
            "personal_data",
            "moderation",
        ]
        guard = checks[-1]
        server.script(Reply(text="unsafe\nS10"), Reply(text="safe"), Reply.http_error(500))
        assert await guard.check(ctx("hi"), "hateful words") == "moderation: unsafe S10"
        assert await guard.check(ctx("hi"), "kind words") is None
        assert await guard.check(ctx("hi"), "other words") is None  # failed open
        assert server.requests[0]["model"] == "llama-guard"
        assert [m["role"] for m in server.requests[0]["messages"]] == ["user", "assistant"]
        await guard.aclose()  # type: ignore[attr-defined]
