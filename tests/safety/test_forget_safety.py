"""Forgetting reaches the safety record: the event stays (a crisis keeps its pause and
its place in the moderators' record) but nothing it quoted survives in the file."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from bot.app import App, open_app
from bot.commands import CommandContext
from bot.config import load_settings
from bot.llm.mock import MockBackend
from tests.safety.conftest import dm, rows
from tests.test_engine import PERSONA

#: The words of the crisis message; the matched phrase is a part of them.
SAID = "honestly I just want to kill myself tonight"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    settings = load_settings(
        None,
        {
            "database": {"url": f"sqlite:///{tmp_path}/bot.db"},
            "personas": {"dirs": [str(personas)], "default": "tester", "watch": False},
            "memory": {"embedding_model": None},  # BM25 only: forget is what is tested
        },
    )
    async with AsyncExitStack() as stack:
        yield await stack.enter_async_context(
            open_app(settings, backend=MockBackend(lambda _: "I hear you."), watch=False)
        )


def raw(tmp_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in tmp_path.glob("bot.db*") if p.is_file())


@pytest.mark.parametrize("target", ["message", "all"])
async def test_forget_drops_what_a_safety_event_quoted(
    app: App, tmp_path: Path, target: str
) -> None:
    incoming = dm(SAID)
    [out] = await app.engine.handle(incoming)
    assert out.safety == "crisis"
    await app.engine.drain()
    [(mid,)] = rows(tmp_path, "select id from messages where direction = 'in'")
    [(details,)] = rows(tmp_path, "select details from safety_events")
    phrase = json.loads(details)["phrase"]
    assert phrase and phrase in SAID.lower()

    ctx = CommandContext(scope=incoming.scope, actor=incoming.actor)
    answer = await app.commands.run("forget", f"m{mid}" if target == "message" else "all", ctx)
    assert "forgot" in answer.lower()
    await app.db.checkpoint()

    [(check, verdict, kept_details, pause, message_id)] = rows(
        tmp_path,
        "select check_name, verdict, details, pause_until, message_id from safety_events"
        " where check_name = 'crisis'",
    )
    assert (check, verdict) == ("crisis", "crisis") and pause is not None
    assert json.loads(kept_details) == {"forgotten": True} and message_id is None
    everything = rows(tmp_path, "select details from safety_events")
    assert all(json.loads(d) == {"forgotten": True} for (d,) in everything)
    data: Any = raw(tmp_path)
    for needle in (phrase, SAID, "kill myself"):
        assert needle.encode() not in data
