"""Fixtures for the ops server: a real app (a SQLite file or PostgreSQL, the mock
backend) and its ops server on a free loopback port, scraped with httpx."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bot.app import App, open_app
from bot.config import OpsSettings, load_settings
from bot.llm.mock import MockBackend
from bot.web import OpsServer, start_ops
from tests.test_engine import PERSONA

# httpx honours proxy variables: never for loopback.
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


def settings_for(tmp_path: Path, url: str, *, memory: bool = False):  # type: ignore[no-untyped-def]
    """Settings of a test bot on `url`: the persona `tester`, no watching, and no
    memory (or with `memory`, full-text memory without an embedding model)."""
    personas = tmp_path / "personas"
    personas.mkdir(exist_ok=True)
    (personas / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    return load_settings(
        None,
        {
            "database": {"url": url},
            "personas": {"dirs": [str(personas)], "default": "tester", "watch": False},
            "memory": {"enabled": memory, "embedding_model": "none"},
            "ops": {"port": 0},
        },
    )


@dataclass
class OpsBot:
    """An open app with its ops server running, and an httpx client for it."""

    app: App
    server: OpsServer
    http: httpx.AsyncClient

    async def metrics(self) -> dict[str, float]:
        """One scrape of /metrics, as {'name{labels}': value} (label order as served)."""
        response = await self.http.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        samples: dict[str, float] = {}
        for line in response.text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                samples[key] = float(value)
        return samples


async def open_ops_bot(
    tmp_path: Path,
    url: str,
    *,
    adapters: tuple[object, ...] = (),
    ops: OpsSettings | None = None,
    memory: bool = False,
) -> AsyncIterator[OpsBot]:
    """An `OpsBot` on `url` (used as an async generator by the fixtures below)."""
    settings = settings_for(tmp_path, url, memory=memory)
    backend = MockBackend(lambda req: f"heard: {req.messages[-1].content}")
    async with open_app(settings, backend=backend, watch=False, memory=memory) as app:
        server = await start_ops(ops or settings.ops, app, list(adapters))
        assert server is not None
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
                yield OpsBot(app, server, http)
        finally:
            await server.stop()


@pytest.fixture
async def ops_bot(tmp_path: Path, database_url: str) -> AsyncIterator[OpsBot]:
    """An `OpsBot` once on a SQLite file and once on PostgreSQL."""
    async for bot in open_ops_bot(tmp_path, database_url):
        yield bot
