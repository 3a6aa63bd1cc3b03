"""A real app on a real SQLite file, with the safety stage as the app builds it."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from bot.app import App, open_app
from bot.config import Settings, load_settings
from bot.messages import Actor, Incoming, Scope
from tests.test_engine import PERSONA


def safety_settings(tmp_path: Path, **safety: Any) -> Settings:
    personas = tmp_path / "personas"
    personas.mkdir(exist_ok=True)
    (personas / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    return load_settings(
        None,
        {
            "database": {"url": f"sqlite:///{tmp_path}/bot.db"},
            "personas": {"dirs": [str(personas)], "default": "tester", "watch": False},
            "memory": {"enabled": False},
            "safety": {"disclose_first_contact": True, **safety},
        },
    )


@pytest.fixture
async def make_app(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    async with AsyncExitStack() as stack:

        async def factory(backend: Any, **safety: Any) -> App:
            settings = safety_settings(tmp_path, **safety)
            return await stack.enter_async_context(
                open_app(settings, backend=backend, watch=False)
            )

        yield factory


def dm(text: str, user: str = "u1", platform: str = "test") -> Incoming:
    scope = Scope(platform=platform, channel=f"dm-{user}", user=user, persona="tester")
    actor = Actor(platform=platform, id=user, display_name="Ann")
    return Incoming(scope=scope, actor=actor, text=text)


def rows(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "bot.db") as conn:
        return conn.execute(sql).fetchall()
