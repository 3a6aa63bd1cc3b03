"""Fixtures for the platform adapters: fake platform servers on 127.0.0.1 and a real
app (tmp SQLite, `MockBackend`) with the adapter running against them.

Telegram fixtures are named `telegram_*`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.base import PacingPolicy
from adapters.telegram import TelegramAdapter
from bot.app import App, open_app
from bot.config import load_settings
from bot.llm.mock import MockBackend, echo_handler
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.test_engine import PERSONA

# The platform clients (httpx, aiohttp) honour proxy variables: never for the fakes.
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"

#: Fast pacing for tests that are not about pacing (Telegram's own is 1 s per chat).
TELEGRAM_FAST_PACING = PacingPolicy(
    per_chat_interval_s=0.02, group_per_minute=1000, global_per_second=1000
)
TELEGRAM_MODERATOR = 777


def write_personas(tmp_path: Path) -> Path:
    """The test persona `tester` (Tess) and a second one, `other` (Otto)."""
    personas = tmp_path / "personas"
    personas.mkdir(exist_ok=True)
    (personas / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    (personas / "other.yaml").write_text(
        PERSONA.replace("id: tester", "id: other").replace("Tess", "Otto"), encoding="utf-8"
    )
    return personas


class _RunningBot:
    """What both platforms' running-adapter fixtures offer tests."""

    app: App
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of a raw SQL query against the bot's database."""
        result = await self.app.db.run(lambda c: c.exec_driver_sql(sql, params).all())
        return [tuple(r) for r in result]

    async def shutdown(self, timeout: float = 20.0) -> None:
        """Set `stop` and wait for `run` to return (idempotent)."""
        self.stop.set()
        await asyncio.wait_for(asyncio.shield(self.task), timeout)


@dataclass
class TelegramBot(_RunningBot):
    """A running `TelegramAdapter` against the fake Bot API, with its app."""

    api: FakeTelegramAPI
    app: App
    adapter: TelegramAdapter
    backend: MockBackend
    stop: asyncio.Event
    task: asyncio.Task[None]


@pytest.fixture
async def telegram_api() -> AsyncIterator[FakeTelegramAPI]:
    """The fake Telegram Bot API, serving on this test's event loop."""
    async with FakeTelegramAPI() as api:
        yield api


TelegramBotFactory = Callable[..., Awaitable[TelegramBot]]


@pytest.fixture
async def telegram_bot(
    tmp_path: Path, telegram_api: FakeTelegramAPI
) -> AsyncIterator[TelegramBotFactory]:
    """Start the adapter: `await telegram_bot(handler=..., pacing=..., **telegram_settings)`.

    It returns once the adapter takes updates (polling, or the webhook registered).
    """
    started: list[tuple[TelegramBot, Any]] = []

    async def factory(
        handler: Callable[..., Any] = echo_handler,
        *,
        pacing: PacingPolicy | None = TELEGRAM_FAST_PACING,
        token: str | None = None,
        wait: bool = True,
        **telegram: Any,
    ) -> TelegramBot:
        personas = write_personas(tmp_path)
        settings = load_settings(
            None,
            {
                "database": {"url": f"sqlite:///{tmp_path}/telegram.db"},
                "personas": {"dirs": [str(personas)], "default": "tester", "watch": False},
                # Long-term memory (and its embedding model) is not what these tests test.
                "memory": {"enabled": False},
                "telegram": {
                    "token": token or telegram_api.token,
                    "base_url": telegram_api.base_url,
                    "moderators": [TELEGRAM_MODERATOR],
                    **telegram,
                },
            },
        )
        backend = MockBackend(handler)
        cm = open_app(settings, backend=backend, watch=False)
        app = await cm.__aenter__()
        adapter = TelegramAdapter(
            app.services, settings.telegram, default_persona="tester", pacing=pacing
        )
        stop = asyncio.Event()
        task = asyncio.create_task(adapter.run(stop))
        bot = TelegramBot(telegram_api, app, adapter, backend, stop, task)
        started.append((bot, cm))
        if wait:
            mode = settings.telegram.mode

            def ready() -> bool:
                if task.done():
                    task.result()  # raise what stopped it
                if mode == "webhook":
                    return telegram_api.webhook_url is not None
                return any(method == "getUpdates" for method, _ in telegram_api.calls)

            await telegram_api.wait_for(ready)
        return bot

    yield factory
    for bot, cm in reversed(started):
        bot.stop.set()
        # The test has checked what it wanted (an AdapterError, say); teardown goes on.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(bot.task, 20)
        await cm.__aexit__(None, None, None)


# -- Discord --------------------------------------------------------------------------
# Discord fixtures are named `discord_*`; the fake is tests/fakes/discord_api.py.

#: Fast pacing for tests that are not about pacing.
DISCORD_FAST_PACING = PacingPolicy(
    per_chat_interval_s=0.01, group_per_minute=10_000, global_per_second=1000
)


@dataclass
class DiscordBot(_RunningBot):
    """A running `DiscordAdapter` against the fake Discord, with its app."""

    fake: Any  # tests.fakes.discord_api.FakeDiscord
    app: App
    adapter: Any  # adapters.discord.DiscordAdapter
    backend: MockBackend
    stop: asyncio.Event
    task: asyncio.Task[None]


@pytest.fixture
async def discord_fake() -> AsyncIterator[Any]:
    """The fake Discord REST API and gateway; the adapter reaches it through config
    (`discord.api_base_url`, `discord.gateway_url`), discord.py is not patched."""
    from tests.fakes.discord_api import FakeDiscord

    async with FakeDiscord() as fake:
        yield fake


DiscordBotFactory = Callable[..., Awaitable[DiscordBot]]


@pytest.fixture
async def discord_bot(tmp_path: Path, discord_fake: Any) -> AsyncIterator[DiscordBotFactory]:
    """Start the adapter: `await discord_bot(handler=..., pacing=..., **discord_settings)`.

    Returns once the gateway session is ready (guild received), unless `wait=False`.
    """
    import contextlib

    from adapters.discord import DiscordAdapter
    from tests.fakes.discord_api import TOKEN

    started: list[DiscordBot] = []
    opened: list[Any] = []

    async def factory(
        handler: Callable[..., Any] = echo_handler,
        *,
        pacing: PacingPolicy | None = DISCORD_FAST_PACING,
        token: str = TOKEN,
        wait: bool = True,
        **discord: Any,
    ) -> DiscordBot:
        personas = write_personas(tmp_path)
        settings = load_settings(
            None,
            {
                "database": {"url": f"sqlite:///{tmp_path}/discord.db"},
                "personas": {"dirs": [str(personas)], "default": "tester", "watch": False},
                "discord": {
                    "token": token,
                    "api_base_url": discord_fake.api_base_url,
                    "gateway_url": discord_fake.gateway_url,
                    **discord,
                },
                # BM25 only: no embedding model to load in these tests.
                "memory": {"embedding_model": "none"},
            },
        )
        backend = MockBackend(handler)
        cm = open_app(settings, backend=backend, watch=False)
        app = await cm.__aenter__()
        opened.append(cm)
        adapter = DiscordAdapter(
            app.services,
            settings.discord,
            default_persona="tester",
            pacing=pacing,
            guild_ready_timeout=0.05,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(adapter.run(stop))
        bot = DiscordBot(discord_fake, app, adapter, backend, stop, task)
        started.append(bot)
        if wait:
            ready = asyncio.create_task(adapter.ready.wait())
            await asyncio.wait({ready, task}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if task.done():
                task.result()  # raise what stopped it
            assert adapter.ready.is_set(), "the Discord adapter did not become ready"
        return bot

    yield factory
    for bot in reversed(started):
        bot.stop.set()
        # The test has checked what it wanted; teardown must go on.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(bot.task, 20)
    for cm in reversed(opened):
        await cm.__aexit__(None, None, None)
