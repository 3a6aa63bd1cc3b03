"""Scope isolation as a security property, checked on every assembled prompt.

Many people talk to one persona in DMs and in shared channels, interleaved at
random. Every message carries a token naming who said it and where. Each prompt
the real engine sends to the (mock) backend may contain only tokens of the
speaker, said in the place where the speaker is now: never another person's,
never the speaker's DM memories in a channel. Both the BM25 path and the dense
path (a fake embedder, so vectors are scanned too) are checked.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.app import open_app
from bot.config import load_settings
from bot.llm.mock import MockBackend
from bot.memory.store import SQLiteMemory
from bot.messages import Actor, Incoming, Scope
from tests.fakes.postgres import PostgresServer
from tests.memory.conftest import HashEmbedder

PERSONA = """\
version: 1
id: tester
name: Tess
description: A test persona.
language: en
system_prompt: |
  You are Tess.
"""

USERS = ["ann", "bob", "cat", "dan"]
PLACES = ["dm", "general", "random"]
TOKEN = re.compile(r"tok([a-z]+)x([a-z]+)x(\d+)")

turns = st.lists(
    st.tuples(st.sampled_from(USERS), st.sampled_from(PLACES), st.sampled_from(["pizza", "exam"])),
    min_size=2,
    max_size=25,
)


def _scope(user: str, place: str) -> Scope:
    if place == "dm":
        return Scope(platform="t", channel=f"dm-{user}", user=user, persona="tester")
    return Scope(platform="t", space="guild", channel=place, user=user, persona="tester")


async def _scenario(
    script: list[tuple[str, str, str]], dense: bool, root: Path, url: str | None = None
) -> None:
    (root / "personas").mkdir()
    (root / "personas" / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    config = load_settings(
        None,
        {
            "database": {"url": url or f"sqlite:///{root}/bot.db"},
            "personas": {"dirs": [str(root / "personas")], "default": "tester", "watch": False},
            # No recent history: everything earlier reaches the prompt only through recall.
            "engine": {"history_messages": 0},
            "memory": {"embedding_model": "none"},
        },
    )
    backend = MockBackend(lambda request: "noted")
    async with open_app(config, backend=backend, watch=False, memory=True) as app:
        assert app.memory is not None
        if dense:
            app.engine.memory = SQLiteMemory(app.db, embedder=HashEmbedder(), embed_delay_s=0)
        said: dict[tuple[str, str], list[str]] = {}
        for n, (user, place, topic) in enumerate(script):
            token = f"tok{user}x{place}x{n}"
            incoming = Incoming(
                scope=_scope(user, place),
                actor=Actor(platform="t", id=user, display_name=user.title()),
                text=f"my {topic} news {token}",
            )
            before = len(backend.requests)
            await app.engine.handle(incoming)
            assert len(backend.requests) == before + 1
            prompt = "\n".join(m.content for m in backend.requests[-1].messages)
            for owner, where, _ in TOKEN.findall(prompt):
                assert (owner, where) == (user, place), (
                    f"{user} in {place} was shown a memory of {owner} in {where}:\n{prompt}"
                )
            earlier = said.get((user, place), [])
            if earlier:  # and recall does work: something of their own comes back
                assert any(t in prompt for t in earlier), prompt
            said.setdefault((user, place), []).append(token)
            if dense:
                await app.engine.memory.flush()  # type: ignore[union-attr]
        if dense:
            await app.engine.memory.aclose()  # type: ignore[union-attr]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=turns, dense=st.booleans())
def test_no_prompt_ever_holds_another_scopes_memory(
    script: list[tuple[str, str, str]], dense: bool
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_scenario(script, dense, Path(tmp)))


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=turns, dense=st.booleans())
def test_no_prompt_ever_holds_another_scopes_memory_on_postgresql(
    postgres_server: PostgresServer, script: list[tuple[str, str, str]], dense: bool
) -> None:
    """The same property on PostgreSQL's backend (tsvector, pg_trgm, pgvector), each
    example on a database of its own."""
    url = postgres_server.new_database("iso")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(_scenario(script, dense, Path(tmp), url))
    finally:
        postgres_server.drop_database(url)
