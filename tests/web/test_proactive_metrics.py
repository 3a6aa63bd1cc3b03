"""The scheduler's proactive messages in the metrics: sent, skipped by reason, failed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from bot.app import App, open_app
from bot.config import load_settings
from bot.llm.mock import MockBackend
from bot.messages import Outgoing, Scope
from tests.scheduler.test_service import NOW, SCHEDULED, Sender, make_scheduler, person_writes


class _Refusing(Sender):
    async def send(self, outgoing: Outgoing) -> list[str | None]:
        raise RuntimeError("the platform is down")


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "tester.yaml").write_text(SCHEDULED, encoding="utf-8")
    settings = load_settings(
        None,
        {
            "database": {"url": f"sqlite:///{tmp_path}/p.db"},
            "personas": {"dirs": [str(personas)]},
            "memory": {"enabled": False},
        },
    )
    async with open_app(settings, backend=MockBackend(lambda r: "Walk?"), watch=False) as opened:
        yield opened


async def test_proactive_sends_skips_and_failures_are_counted(app: App, tmp_path: Path) -> None:
    await person_writes(app, "ann", NOW - timedelta(hours=1))
    scope = Scope(platform="test", channel="dm-ann", user="ann", persona="tester")
    cid = await app.engine.ledger.conversation_id(scope)
    scheduler = make_scheduler(app, tmp_path, Sender())
    assert not await scheduler.fire_habit("tester", "walk", cid, NOW.replace(hour=23))
    await app.people.set_opted_out("test", "ann", True)
    assert not await scheduler.fire_habit("tester", "walk", cid, NOW)
    await app.people.set_opted_out("test", "ann", False)
    assert await scheduler.fire_habit("tester", "walk", cid, NOW)
    failing = make_scheduler(app, tmp_path, _Refusing())
    assert not await failing.fire_habit("tester", "walk", cid, NOW + timedelta(minutes=1))

    text = generate_latest(app.metrics.registry).decode()
    for labels, value in (
        ('outcome="skipped",reason="quiet_hours"', 1),
        ('outcome="skipped",reason="opted_out"', 1),
        ('outcome="sent",reason="ok"', 1),
        ('outcome="failed",reason="delivery"', 1),
    ):
        assert f"personabot_proactive_total{{{labels}}} {value:.1f}" in text, labels
