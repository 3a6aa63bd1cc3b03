"""A real app, with the safety stage as the app builds it: `make_app` on a SQLite file
and on PostgreSQL (the safety tables' contract), `safety_settings` alone on SQLite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from bot.app import App, open_app
from bot.config import Settings, load_settings
from bot.messages import Actor, Incoming, Scope
from tests.sql import rows as sql_rows
from tests.test_engine import PERSONA


def safety_settings(tmp_path: Path, *, url: str | None = None, **safety: Any) -> Settings:
    personas = tmp_path / "personas"
    personas.mkdir(exist_ok=True)
    (personas / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    return load_settings(
        None,
        {
            "database": {"url": url or f"sqlite:///{tmp_path}/bot.db"},
            "personas": {"dirs": [str(personas)], "default": "tester", "watch": False},
            "memory": {"enabled": False},
            "safety": {"disclose_first_contact": True, **safety},
        },
    )


# The database each test's apps use, by the test's tmp_path, for `rows`.
_URLS: dict[Path, str] = {}


@pytest.fixture
async def make_app(tmp_path: Path, database_url: str) -> AsyncIterator[Callable[..., Any]]:
    _URLS[tmp_path] = database_url
    async with AsyncExitStack() as stack:

        async def factory(backend: Any, **safety: Any) -> App:
            settings = safety_settings(tmp_path, url=database_url, **safety)
            return await stack.enter_async_context(open_app(settings, backend=backend, watch=False))

        yield factory
    _URLS.pop(tmp_path, None)


def dm(text: str, user: str = "u1", platform: str = "test") -> Incoming:
    scope = Scope(platform=platform, channel=f"dm-{user}", user=user, persona="tester")
    actor = Actor(platform=platform, id=user, display_name="Ann")
    return Incoming(scope=scope, actor=actor, text=text)


def rows(tmp_path: Path, sql: str) -> list[tuple[Any, ...]]:
    """The rows of `sql` in the database of the test that owns `tmp_path`."""
    return sql_rows(_URLS.get(tmp_path, f"sqlite:///{tmp_path}/bot.db"), sql)


@pytest.fixture(autouse=True)
def _coalesce_bursts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bursts are coalesced, as by default (tests/conftest.py turns it off elsewhere)."""
    monkeypatch.setenv("BOT_ENGINE__COALESCE_BURSTS", "true")
