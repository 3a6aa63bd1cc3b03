"""A real Telegram adapter against the fake Bot API, with the ops server beside it:
/readyz waits for the adapter to take updates, and a 429 from the platform shows in
`personabot_rate_limited_total` as the reply still goes out."""

from __future__ import annotations

import asyncio
import contextlib
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


async def test_readyz_and_429s_with_a_real_telegram_adapter(tmp_path: Path) -> None:
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
            stop = asyncio.Event()
            task: asyncio.Task[None] | None = None
            try:
                async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
                    before = await http.get("/readyz")
                    assert before.status_code == 503
                    assert before.json()["checks"]["telegram"]["ok"] is False

                    task = asyncio.create_task(adapter.run(stop))
                    await asyncio.wait_for(adapter.ready.wait(), 20)
                    assert (await http.get("/readyz")).status_code == 200

                    api.fail_next("sendMessage", status=429, retry_after=1)
                    api.private_message(120, "hello")
                    await api.wait_for(lambda: len(api.sent_to(120)) == 1, timeout=20)
                    text = (await http.get("/metrics")).text
            finally:
                stop.set()
                if task is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(task, 20)
                await server.stop()
    assert [m.text for m in api.sent_to(120)] == ["You said: hello"]
    assert 'personabot_rate_limited_total{platform="telegram"} 1.0' in text
    assert 'personabot_delivery_parts_sent_total{platform="telegram"} 1.0' in text
    assert 'personabot_turns_total{outcome="answered",platform="telegram"} 1.0' in text
    # The reply waited out the platform's retry_after: delivery took a second or more.
    assert 'personabot_delivery_seconds_bucket{le="0.5",platform="telegram"} 0.0' in text
    assert 'personabot_delivery_seconds_count{platform="telegram"} 1.0' in text
