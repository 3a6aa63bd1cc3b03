"""A real Telegram adapter against the fake Bot API, with the ops server beside it:
/readyz waits for the adapter to take updates, a 429 from the platform shows in
`personabot_rate_limited_total` as the reply still goes out, and a refused send in
the delivery failures."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from adapters.base import PacingPolicy
from adapters.telegram import TelegramAdapter
from bot.app import open_app
from bot.config import load_settings
from bot.llm.mock import MockBackend
from bot.web import start_ops
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.test_engine import PERSONA

FAST = PacingPolicy(per_chat_interval_s=0.02, group_per_minute=1000, global_per_second=1000)


@dataclass
class _Running:
    api: FakeTelegramAPI
    adapter: TelegramAdapter
    http: httpx.AsyncClient
    start: asyncio.Event

    async def metrics(self) -> str:
        return (await self.http.get("/metrics")).text


@contextlib.asynccontextmanager
async def _telegram(tmp_path: Path) -> AsyncIterator[_Running]:
    """The adapter built (not yet running) with its ops server; set `start` to run it."""
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    async with FakeTelegramAPI() as api:
        settings = load_settings(
            None,
            {
                "database": {"url": f"sqlite:///{tmp_path}/t.db"},
                "personas": {"dirs": [str(personas)], "default": "tester", "watch": False},
                "memory": {"enabled": False},
                "telegram": {"token": api.token, "base_url": api.base_url},
                "ops": {"port": 0, "metrics_cache_s": 0},
            },
        )
        backend = MockBackend(lambda req: f"You said: {req.messages[-1].content}")
        async with open_app(settings, backend=backend, watch=False) as app:
            adapter = TelegramAdapter(
                app.services, settings.telegram, default_persona="tester", pacing=FAST
            )
            server = await start_ops(settings.ops, app, [adapter])
            assert server is not None
            stop, start = asyncio.Event(), asyncio.Event()

            async def run() -> None:
                await start.wait()
                await adapter.run(stop)

            task = asyncio.create_task(run())
            try:
                async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
                    yield _Running(api, adapter, http, start)
            finally:
                stop.set()
                start.set()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 20)
                await server.stop()


async def test_readyz_waits_for_telegram_and_a_429_is_counted(tmp_path: Path) -> None:
    async with _telegram(tmp_path) as bot:
        before = await bot.http.get("/readyz")
        assert before.status_code == 503
        assert before.json()["checks"]["telegram"]["ok"] is False
        bot.start.set()
        await asyncio.wait_for(bot.adapter.ready.wait(), 20)
        assert (await bot.http.get("/readyz")).status_code == 200

        bot.api.fail_next("sendMessage", status=429, retry_after=1)
        bot.api.private_message(120, "hello")
        await bot.api.wait_for(lambda: len(bot.api.sent_to(120)) == 1, timeout=20)
        text = await bot.metrics()
    assert [m.text for m in bot.api.sent_to(120)] == ["You said: hello"]
    assert 'personabot_rate_limited_total{platform="telegram"} 1.0' in text
    assert 'personabot_delivery_parts_sent_total{platform="telegram"} 1.0' in text
    assert 'personabot_turns_total{outcome="answered",platform="telegram"} 1.0' in text
    # The reply waited out the platform's retry_after: delivery took a second or more.
    assert 'personabot_delivery_seconds_bucket{le="0.5",platform="telegram"} 0.0' in text
    assert 'personabot_delivery_seconds_count{platform="telegram"} 1.0' in text
    assert "personabot_failures_total{" not in text  # a 429 waited out is no failure


async def test_a_refused_send_is_a_delivery_failure(tmp_path: Path) -> None:
    async with _telegram(tmp_path) as bot:
        bot.start.set()
        await asyncio.wait_for(bot.adapter.ready.wait(), 20)
        bot.api.fail_next(
            "sendMessage", status=403, description="Forbidden: bot was blocked by the user"
        )
        bot.api.private_message(121, "hello")
        deadline = asyncio.get_running_loop().time() + 20
        while 'personabot_failures_total{stage="deliver"} 1.0' not in (text := await bot.metrics()):
            assert asyncio.get_running_loop().time() < deadline, text
            await asyncio.sleep(0.05)
    assert 'personabot_delivery_failed_total{platform="telegram"} 1.0' in text
    assert 'personabot_delivery_parts_sent_total{platform="telegram"} 0.0' in text
