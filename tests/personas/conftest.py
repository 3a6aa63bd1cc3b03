"""Helpers for persona tests: real files in tmp_path, a fixed prompt context."""

from __future__ import annotations

import asyncio
import hashlib
import textwrap
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.personas import PromptContext

REPO = Path(__file__).resolve().parents[2]
SHIPPED_DIR = REPO / "personas"

VALID = textwrap.dedent(
    """\
    id: alice
    name: Alice
    system_prompt: |
      You are {{ persona.name }}.
      You talk with {{ user.display_name }}.
    greeting: Hi {{ user.display_name }}!
    """
)


def persona_text(persona_id: str = "alice", *, marker: str = "") -> str:
    """A valid persona file; `marker` changes its content (and hash) but not its id."""
    return VALID.replace("id: alice", f"id: {persona_id}") + (
        f"description: {marker}\n" if marker else ""
    )


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """Write a file under tmp_path (text is dedented) and return its path."""

    def _write(name: str, content: str | bytes, *, dedent: bool = True) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content) if dedent else content, encoding="utf-8")
        return path

    return _write


@pytest.fixture
def ctx() -> PromptContext:
    zone = "Asia/Shanghai"
    return PromptContext(
        user_display_name="Ann",
        user_id="u-1",
        platform="discord",
        now=datetime(2024, 5, 1, 7, 30, tzinfo=ZoneInfo(zone)),
        timezone=zone,
        is_direct=True,
    )


async def eventually(condition: Callable[[], bool], *, timeout: float = 5.0) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)
