"""An app on a real SQLite file with the test persona, reopened at will (a restart)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.app import App, open_app
from bot.config import Settings, load_settings
from bot.inbox import InboxStatus
from bot.llm.mock import MockBackend
from tests.inbox.platform import JsonPlatform
from tests.test_engine import PERSONA

AWAY = "Sorry, I was away."


def settings_for(tmp_path: Path, *, away: bool = True, **engine: Any) -> Settings:
    personas = tmp_path / "personas"
    personas.mkdir(exist_ok=True)
    text = PERSONA
    if away:
        text = text.replace("safety:\n", f"safety:\n  away_message: {AWAY}\n")
    (personas / "tester.yaml").write_text(text, encoding="utf-8")
    return load_settings(
        None,
        {
            "database": {"url": f"sqlite:///{tmp_path}/bot.db"},
            "personas": {"dirs": [str(personas)], "default": "tester", "watch": False},
            "engine": engine,
            "memory": {"enabled": False},
        },
    )


def echo(req: Any) -> str:
    return f"re:{req.messages[-1].content}"


@pytest.fixture
def opened(tmp_path: Path) -> Callable[..., Any]:
    """`async with opened(backend) as app:` an app on tmp_path/bot.db."""

    @asynccontextmanager
    async def factory(backend: Any = None, **kw: Any) -> AsyncIterator[App]:
        async with open_app(
            settings_for(tmp_path, **kw), backend=backend or MockBackend(echo), watch=False
        ) as app:
            yield app

    return factory


async def settled(app: App, platform: JsonPlatform, timeout: float = 10.0) -> None:
    """Wait until the inbox has nothing pending and the worker nothing in hand."""
    assert app.inbox is not None and platform.worker is not None
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        counts = await app.inbox.counts(platform.platform)
        if counts.get(InboxStatus.PENDING.value, 0) == 0 and platform.worker.backlog == 0:
            await platform.worker.idle()
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not settled: {counts}, backlog {platform.worker.backlog}")
        await asyncio.sleep(0.02)
