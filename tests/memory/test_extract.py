"""Fact extraction: a small set of our own conversations with the facts a careful
reader would take from them, answered by a scripted backend in the model's JSON.
Checks parsing, deduplication, superseding, and every kind of bad answer."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import text

from bot.llm.base import ChatRequest
from bot.llm.mock import MockBackend
from bot.memory.extract import KnownFact, SourceMessage, parse_extraction
from bot.memory.ledger import Ledger
from bot.memory.store import SQLiteMemory
from tests.memory.conftest import T0, say, scope_for


def ids_in(request: ChatRequest) -> dict[str, int]:
    """Message text -> id, and known fact text -> id, as the prompt shows them."""
    prompt = request.messages[-1].content
    out = {}
    for number, rest in re.findall(r"^(?:- )?\[(\d+)\] (.*)$", prompt, re.MULTILINE):
        out[rest.split(": ", 1)[-1]] = int(number)
    return out


def answer(build: Callable[[dict[str, int]], list[dict[str, object]]]) -> MockBackend:
    return MockBackend(lambda request: json.dumps({"facts": build(ids_in(request))}))


# (conversation lines, what the model answers given the ids, the facts we expect to keep)
CASES = [
    (
        ["My dog's name is Rex.", "I have an exam on Friday, wish me luck"],
        lambda ids: [
            {"text": "Has a dog named Rex.", "source_ids": [ids["My dog's name is Rex."]],
             "confidence": 0.95, "importance": 0.6},
            {"text": "Has an exam on Friday.",
             "source_ids": [ids["I have an exam on Friday, wish me luck"]]},
        ],
        {"Has a dog named Rex.", "Has an exam on Friday."},
    ),
    (
        ["I'm vegetarian since last year", "Honestly pizza is my favourite food"],
        lambda ids: [
            {"text": "Is vegetarian.", "source_ids": [ids["I'm vegetarian since last year"]]},
            {"text": "Is vegetarian.", "source_ids": [ids["I'm vegetarian since last year"]]},
            {"text": "Favourite food is pizza.",
             "source_ids": [ids["Honestly pizza is my favourite food"]]},
        ],
        {"Is vegetarian.", "Favourite food is pizza."},
    ),
]  # fmt: skip


@pytest.mark.parametrize(("lines", "build", "expected"), CASES)
async def test_facts_are_extracted_with_their_sources(
    memory: SQLiteMemory, ledger: Ledger, lines: list[str], build, expected: set[str]
) -> None:  # type: ignore[no-untyped-def]
    scope = None
    ids = []
    for i, line in enumerate(lines):
        scope, mid, _ = await say(
            ledger, scope_for("ann"), line, at=T0 + timedelta(minutes=i), reply="Oh nice!"
        )
        ids.append(mid)
    assert scope is not None
    backend = answer(build)
    result = await memory.extract(scope, "p", backend, now=T0)
    assert not result.problems
    request = backend.requests[0]
    assert request.sampling.extra["response_format"]["type"] == "json_schema"
    assert "Oh nice!" in request.messages[-1].content  # context, marked as the companion's
    items = await memory.list_memories(scope.user_id)
    assert {i.text for i in items} == expected
    assert all(set(i.source_ids) <= set(ids) for i in items)


async def test_a_move_supersedes_the_old_home_and_repeats_are_not_stored(
    memory: SQLiteMemory, ledger: Ledger
) -> None:
    scope, _, _ = await say(ledger, scope_for("ann"), "I live in Paris")
    await memory.extract(
        scope,
        "p",
        answer(lambda ids: [{"text": "Lives in Paris.", "source_ids": [ids["I live in Paris"]]}]),
        now=T0,
    )
    paris = (await memory.list_memories(scope.user_id))[0]
    await say(ledger, scope_for("ann"), "Big news: I moved to Berlin!", at=T0 + timedelta(days=9))
    moved = answer(
        lambda ids: [
            {"text": "Lives in Berlin.", "source_ids": [ids["Big news: I moved to Berlin!"]],
             "replaces": [ids["Lives in Paris."]]},
            {"text": "lives in paris", "source_ids": [ids["I live in Paris"]]},  # a repeat
        ]
    )  # fmt: skip
    await memory.extract(scope, "p", moved, now=T0 + timedelta(days=9))
    items = await memory.list_memories(scope.user_id)
    assert [i.text for i in items] == ["Lives in Berlin."]
    row = await memory.db.run(
        lambda c: c.execute(
            text("SELECT superseded_by FROM facts WHERE id = :id"), {"id": int(paris.ref[1:])}
        ).scalar()
    )
    assert row == int(items[0].ref[1:])
    hits = await memory.search(scope, "where does she live", now=T0 + timedelta(days=10))
    assert "Lives in Paris." not in [h.text for h in hits]
    assert "Lives in Berlin." in [h.text for h in hits if h.kind == "fact"]
    # Forgetting the new home must not bring the old one back.
    await memory.forget(scope.user_id, items[0].ref)
    assert await memory.list_memories(scope.user_id) == []


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        ("this is not json", "not valid JSON"),
        ('{"facts": [{"text": "Has a dog', "not valid JSON"),  # truncated
        ('{"facts": {"text": "x"}}', "not the expected shape"),
        ('["a", "b"]', "not the expected shape"),
        ('{"facts": [{"text": "Has a cat.", "source_ids": [99999]}]}', "no valid source id"),
        ('{"facts": [{"text": "Has a cat.", "source_ids": []}]}', "no valid source id"),
        ('{"facts": [{"source_ids": [1]}]}', "Field required"),
        ('{"facts": [{"text": "", "source_ids": [1]}]}', "at least 1 character"),
    ],
)
async def test_bad_answers_store_nothing_and_say_why(
    memory: SQLiteMemory, ledger: Ledger, reply: str, problem: str
) -> None:
    scope, _, _ = await say(ledger, scope_for("ann"), "I have a cat", reply="Cats!")
    result = await memory.extract(scope, "p", MockBackend(lambda r: reply), now=T0)
    assert result.facts == ()
    assert any(problem in p for p in result.problems), result.problems
    assert await memory.list_memories(scope.user_id) == []


def test_companion_lines_and_unknown_replacements_are_not_trusted() -> None:
    shown = [SourceMessage(1, "Ann", "I have a cat", True), SourceMessage(2, "Tess", "Nice", False)]
    known = [KnownFact(7, "Has a dog.")]
    result = parse_extraction(
        '```json\n{"facts": [{"text": "Has a cat.", "source_ids": [1, 2, 3], '
        '"replaces": [7, 8], "confidence": 7}]}\n```',
        shown,
        known,
    )
    (fact,) = result.facts
    assert fact.source_ids == (1,)
    assert fact.replaces == (7,)
    assert fact.confidence == 1.0
    assert len(result.problems) == 2


async def test_observe_extracts_in_the_background_when_configured(db, ledger: Ledger) -> None:  # type: ignore[no-untyped-def]
    from bot.engine import TurnRecord

    backend = answer(lambda ids: [{"text": "Plays chess.", "source_ids": [ids["I play chess"]]}])

    async def backend_for(persona: str) -> MockBackend:
        return backend

    memory = SQLiteMemory(db, backend_for=backend_for, extract_facts=True, summary_window=4)
    scope = scope_for("ann")
    mscope, a, b = await say(ledger, scope, "I play chess", reply="Fun!")
    assert b is not None
    await memory.observe(
        TurnRecord(scope, mscope.user_id, mscope.conversation_id, a, b, "I play chess", "Fun!", T0)
    )
    assert [i.text for i in await memory.list_memories(mscope.user_id)] == ["Plays chess."]
    await memory.aclose()


def test_control_characters_in_extracted_facts_are_removed() -> None:
    """Model output never carries control characters into memory, even JSON-escaped."""
    raw = json.dumps(
        {"facts": [{"text": "Has a dog\u001b[31m named \u0000Rex\u0007.", "source_ids": [1]}]}
    )
    result = parse_extraction(raw, [SourceMessage(1, "Ann", "My dog is Rex", from_person=True)], [])
    assert [f.text for f in result.facts] == ["Has a dog named Rex."]
