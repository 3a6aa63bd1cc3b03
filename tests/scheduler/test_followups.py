"""Follow-ups: parsing the model's JSON, storing, and the real request path."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from bot.app import App, open_app
from bot.config import load_settings
from bot.engine import TurnRecord
from bot.llm.base import ChatRequest
from bot.llm.mock import MockBackend
from bot.messages import Actor, Incoming, Scope
from bot.scheduler.followups import FOLLOWUP_SCHEMA, FollowUpExtractor, mentions_future, parse
from tests.scheduler.test_service import SCHEDULED
from tests.sql import rows

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)  # a Tuesday
HORIZON = timedelta(days=60)


def answer(*items: tuple[str, str]) -> str:
    return json.dumps({"followups": [{"ask": a, "when": w} for a, w in items]})


def test_parse_reads_local_times_and_converts_to_utc() -> None:
    [item] = parse(
        answer(("how the exam went", "2026-11-27 18:00")),
        now=NOW,
        zone="Europe/Berlin",
        horizon=HORIZON,
    )
    assert item.ask == "how the exam went" and item.due_at == datetime(
        2026, 11, 27, 17, 0, tzinfo=UTC
    )
    [day] = parse(answer(("trip", "2026-12-01")), now=NOW, zone="Asia/Shanghai", horizon=HORIZON)
    assert day.due_at == datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # a bare date means 10:00 local


def test_past_dates_are_dropped_and_far_ones_clamped_and_logged() -> None:
    with capture_logs() as logs:
        items = parse(
            answer(("yesterday's thing", "2026-11-20 10:00"), ("in ten years", "2036-01-01 10:00")),
            now=NOW,
            zone="UTC",
            horizon=HORIZON,
        )
    [clamped] = items
    assert clamped.due_at == NOW + HORIZON and clamped.note.startswith("clamped from")
    events = {entry["event"] for entry in logs}
    assert {"followup.dropped_past", "followup.clamped"} <= events


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        '{"followups": [{"ask": "x", "when": "2026-11-2',  # truncated
        '{"followups": "nope"}',
        '["a", "b"]',
        '{"followups": [1, {"ask": "", "when": "2026-12-01"}, {"ask": "x", "when": "soon"}]}',
        "",
    ],
)
def test_bad_model_output_never_raises(raw: str) -> None:
    assert parse(raw, now=NOW, zone="UTC", horizon=HORIZON) == []


def test_future_gate() -> None:
    assert mentions_future("My exam is on Friday")
    assert mentions_future("明天有面试")
    assert not mentions_future("I like green tea")


@pytest.fixture
async def app(tmp_path: Path, database_url: str) -> AsyncIterator[App]:
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "tester.yaml").write_text(SCHEDULED, encoding="utf-8")
    settings = load_settings(
        None,
        {
            "database": {"url": database_url},
            "personas": {"dirs": [str(personas)]},
            "memory": {"enabled": False},  # not what these tests are about
        },
    )

    def handler(request: ChatRequest) -> str:
        if request.sampling.extra.get("response_format"):
            return answer(("how did the exam go?", "2026-11-27 18:00"))
        return "Good luck on Friday!"

    async with open_app(settings, backend=MockBackend(handler), watch=False) as opened:
        yield opened


async def test_extractor_stores_followups_from_a_turn_and_hands_them_on(
    app: App, tmp_path: Path
) -> None:
    created: list[tuple[int, datetime]] = []
    extractor = FollowUpExtractor(
        db=app.db,
        personas=app.personas,
        backends=app.backends,
        default_zone="Europe/Berlin",
        on_created=lambda i, due: created.append((i, due)),
    )
    app.engine.observers.append(extractor)
    scope = Scope(platform="test", channel="dm-ann", user="ann", persona="tester")
    actor = Actor(platform="test", id="ann", display_name="Ann")
    await app.engine.handle(
        Incoming(scope=scope, actor=actor, text="My exam is on Friday!", received_at=NOW)
    )
    assert await app.engine.drain(grace_s=5)
    assert created == [(1, datetime(2026, 11, 27, 17, 0, tzinfo=UTC))]
    assert rows(
        app.settings.database.url, "select text, status, source_message_id from followups"
    ) == [("how did the exam go?", "pending", 1)]
    request = app.backends._fixed.requests[-1]  # type: ignore[union-attr]
    assert request.sampling.extra["response_format"]["json_schema"]["schema"] == FOLLOWUP_SCHEMA
    assert "Tuesday 2026-11-24 10:00 (Europe/Berlin)" in request.messages[0].content


async def test_no_model_call_for_turns_that_do_not_look_ahead(app: App) -> None:
    extractor = FollowUpExtractor(
        db=app.db, personas=app.personas, backends=app.backends, default_zone="UTC"
    )
    turn = TurnRecord(
        scope=Scope(platform="test", channel="c", user="u", persona="tester"),
        user_id=1,
        conversation_id=1,
        incoming_id=1,
        reply_id=2,
        incoming_text="I like tea",
        reply_text="Me too",
        at=NOW,
    )
    before = len(app.backends._fixed.requests)  # type: ignore[union-attr]
    await extractor.observe(turn)
    assert len(app.backends._fixed.requests) == before  # type: ignore[union-attr]


@pytest.mark.vllm
async def test_structured_output_through_the_real_vllm_server(
    vllm_server: str, vllm_model_name: str, tiny_model_dir: Path
) -> None:
    from bot.llm.openai_backend import OpenAIBackend

    turn = TurnRecord(
        scope=Scope(platform="test", channel="c", user="u", persona="tester"),
        user_id=1,
        conversation_id=1,
        incoming_id=1,
        reply_id=2,
        incoming_text="My exam is on Friday",
        reply_text="Good luck!",
        at=NOW,
    )
    request = FollowUpExtractor.request(turn, "Europe/Berlin", NOW)
    async with OpenAIBackend(vllm_server, vllm_model_name, max_retries=0, timeout_s=60) as llm:
        completion = await llm.complete(request)
    # A random model writes JSON of our shape only because the server enforced the
    # schema (it may pad with whitespace, which JSON allows, until max_tokens).
    squeezed = re.sub(r"\s+", "", completion.text)
    shape = '{"followups":['
    assert squeezed.startswith(shape) or shape.startswith(squeezed), completion.text[:80]
    if completion.finish_reason != "length":
        data: Any = json.loads(completion.text)
        assert isinstance(data["followups"], list)
    # Whatever came back (complete, or cut off by max_tokens) is handled without raising.
    for item in parse(completion.text, now=NOW, zone="Europe/Berlin", horizon=HORIZON):
        assert NOW < item.due_at <= NOW + HORIZON


def test_control_characters_in_a_followup_are_removed() -> None:
    """Model output never carries control characters into a stored follow-up."""
    [item] = parse(
        answer(("how the\u001b[2J exam\u0000 went", "2026-11-27 18:00")),
        now=NOW,
        zone="UTC",
        horizon=HORIZON,
    )
    assert item.ask == "how the exam went"
    assert parse(answer(("\u0007\u001b[0m", "2026-11-27 18:00")), now=NOW, zone="UTC",
                 horizon=HORIZON) == []  # fmt: skip
