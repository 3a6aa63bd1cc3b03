"""The whole app on PostgreSQL: opened on a `postgresql+psycopg://` URL, a console
session and chat turns end to end, memory included, and a restart that finds it all."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

from adapters.console import ConsoleAdapter
from bot.app import open_app
from bot.commands import CommandContext
from bot.config import Settings, load_settings
from bot.db import current_revision, head_revision
from bot.llm.mock import MockBackend
from bot.messages import Actor, Incoming, Scope
from tests.sql import rows
from tests.test_engine import PERSONA


def settings_for(tmp_path: Path, url: str, **memory: Any) -> Settings:
    personas = tmp_path / "personas"
    personas.mkdir(exist_ok=True)
    (personas / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    return load_settings(
        None,
        {
            "database": {"url": url, "pool_size": 3, "max_overflow": 2},
            "personas": {"dirs": [str(personas)], "watch": False},
            "memory": {"embedding_model": "none", **memory},
        },
    )


def heard(request: Any) -> str:
    return f"heard {request.messages[-1].content}"


async def test_a_console_session_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    settings = settings_for(tmp_path, postgres_url)
    stdin = io.StringIO("hello\nhow are you?\n/quit\n")
    stdout = io.StringIO()
    async with open_app(settings, backend=MockBackend(heard), watch=False) as app:
        assert app.db.engine.dialect.name == "postgresql"
        assert current_revision(app.db.engine) == head_revision()
        assert app.memory is not None  # memory search on PostgreSQL (memory-pg's backend)
        console = ConsoleAdapter(
            app.services,
            persona="tester",
            display_name="Ann",
            stdin=stdin,
            stdout=stdout,
            interactive=True,
        )
        await console.run(asyncio.Event())
        assert await app.engine.drain(grace_s=10)
    out = stdout.getvalue()
    assert "Tess> heard hello\n" in out and "Tess> heard how are you?\n" in out
    stored = rows(
        postgres_url,
        "SELECT direction, text, status FROM messages WHERE kind = 'message' ORDER BY id",
    )
    assert stored == [
        ("in", "hello", "answered"),
        ("out", "heard hello", "delivered"),
        ("in", "how are you?", "answered"),
        ("out", "heard how are you?", "delivered"),
    ]


async def test_chat_turns_recall_and_a_restart_on_postgres(
    tmp_path: Path, postgres_url: str
) -> None:
    settings = settings_for(tmp_path, postgres_url)
    scope = Scope(platform="test", channel="dm-ann", user="ann", persona="tester")
    ann = Actor(platform="test", id="ann", display_name="Ann")
    async with open_app(settings, backend=MockBackend(heard), watch=False) as app:
        results = []
        for text in ("my dog is called Rex", "what is my dog called?"):
            results.append(await app.engine.handle(Incoming(scope=scope, actor=ann, text=text)))
        assert [r[0].text for r in results] == [
            "heard my dog is called Rex",
            "heard what is my dog called?",
        ]
        assert await app.engine.drain(grace_s=10)
        listed = await app.commands.run("memory", "", CommandContext(scope=scope, actor=ann))
        assert listed  # /memory answers from the PostgreSQL store
    # A restart (another process would do the same): history is there, no migration runs.
    seen: list[Any] = []

    def remembers(request: Any) -> str:
        seen.append([m.content for m in request.messages])
        return "yes"

    async with open_app(settings, backend=MockBackend(remembers), watch=False) as again:
        await again.engine.handle(Incoming(scope=scope, actor=ann, text="still there?"))
        assert await again.engine.drain(grace_s=10)
    prompt = "\n".join(seen[-1])
    assert "my dog is called Rex" in prompt and "heard what is my dog called?" in prompt
