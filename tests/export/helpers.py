"""Running an export in a test and reading back what it wrote."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.config import Settings
from bot.export import Manifest, export_datasets

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def run_export(settings: Settings, out: Path, **kwargs: Any) -> Manifest:
    return export_datasets(settings, kwargs.pop("now", NOW), out=out, **kwargs)


def read(out: Path, relpath: str) -> list[dict[str, Any]]:
    path = out / relpath
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def chats(out: Path, persona: str = "pal") -> list[list[dict[str, str]]]:
    """Every record's messages, train and validation together."""
    records = read(out, f"{persona}/chat.train.jsonl") + read(
        out, f"{persona}/chat.validation.jsonl"
    )
    return [r["messages"] for r in records]


def texts(out: Path, persona: str = "pal") -> list[str]:
    """The user and assistant texts of every record, in order."""
    return [m["content"] for record in chats(out, persona) for m in record if m["role"] != "system"]


def dpo(out: Path, persona: str = "pal") -> list[dict[str, Any]]:
    return read(out, f"{persona}/dpo.train.jsonl") + read(out, f"{persona}/dpo.validation.jsonl")
