"""Seeding a migrated ledger (SQLite file or PostgreSQL) with exactly the rows an
export test needs.

Rows go in through plain SQL inserts (not the engine) so a test states its data
directly: consent events at chosen times, regenerated replies, reactions, flags.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert
from sqlmodel import SQLModel

from bot.db import create_db_engine, upgrade

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

PERSONA_YAML = """\
version: 1
id: pal
name: Pal
description: A friendly test persona.
language: en
system_prompt: |
  You are {{ persona.name }}, a friendly companion.
  You are talking to {{ user.display_name }} ({{ user.id }}) on {{ platform }}.
  It is {{ time }} on {{ weekday }}, {{ date }} ({{ timezone }}).
"""

_t = SQLModel.metadata.tables


@dataclass
class Ledger:
    """A test database and helpers that insert rows and return their ids."""

    engine: Engine
    url: str
    clock: datetime = T0
    persona_hash: str = field(
        default_factory=lambda: hashlib.sha256(PERSONA_YAML.encode()).hexdigest()
    )
    _n: int = 0

    def _insert(self, table: str, **values: Any) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(insert(_t[table]).values(**values))
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def tick(self, minutes: float = 1.0) -> datetime:
        self.clock += timedelta(minutes=minutes)
        return self.clock

    def persona_version(self, source: str = PERSONA_YAML, persona_id: str = "pal") -> str:
        digest = hashlib.sha256(source.encode()).hexdigest()
        self._insert(
            "persona_versions",
            persona_id=persona_id,
            content_hash=digest,
            path=f"personas/{persona_id}.yaml",
            source=source,
            loaded_at=T0,
        )
        return digest

    def user(
        self,
        name: str = "Alice",
        *,
        platform: str = "telegram",
        timezone: str | None = None,
        opted_out: bool = False,
    ) -> int:
        self._n += 1
        return self._insert(
            "users",
            platform=platform,
            platform_user_id=f"{name.lower()}-{self._n}",
            display_name=name,
            created_at=T0,
            last_seen_at=T0,
            opted_out=opted_out,
            timezone=timezone,
        )

    def conversation(
        self, key: str, *, persona: str = "pal", direct: bool = True, platform: str = "telegram"
    ) -> int:
        return self._insert(
            "conversations",
            key=key,
            platform=platform,
            channel=key,
            persona_id=persona,
            is_direct=direct,
            created_at=T0,
            last_message_at=T0,
        )

    def said(self, conversation: int, user: int, text: str, **extra: Any) -> int:
        values: dict[str, Any] = {
            "conversation_id": conversation,
            "user_id": user,
            "direction": "in",
            "kind": "message",
            "status": "answered",
            "text": text,
            "persona_id": "pal",
            "created_at": self.tick(),
        }
        values.update(extra)
        return self._insert("messages", **values)

    def replied(
        self, conversation: int, user: int | None, to: int | None, text: str, **extra: Any
    ) -> int:
        values: dict[str, Any] = {
            "conversation_id": conversation,
            "user_id": user,
            "direction": "out",
            "kind": "message",
            "status": "delivered",
            "text": text,
            "reply_to_id": to,
            "persona_id": "pal",
            "persona_hash": self.persona_hash,
            "backend": "openai",
            "model": "tiny",
            "created_at": self.tick(0.1),
        }
        values.update(extra)
        return self._insert("messages", **values)

    def exchange(
        self, conversation: int, user: int, text: str, reply: str, **extra: Any
    ) -> tuple[int, int]:
        asked = self.said(conversation, user, text)
        return asked, self.replied(conversation, user, asked, reply, **extra)

    def consent(self, user: int, opted_in: bool, at: datetime) -> None:
        self._insert("consent_events", user_id=user, opted_in=opted_in, at=at)

    def react(self, message: int, user: int, emoji: str, *, added: bool = True) -> None:
        self._insert(
            "feedback",
            message_id=message,
            user_id=user,
            emoji=emoji,
            added=added,
            at=self.tick(0.01),
        )


def make_ledger(url: str) -> Ledger:
    engine = create_db_engine(url)
    upgrade(engine)
    ledger = Ledger(engine, url)
    assert ledger.persona_version() == ledger.persona_hash
    return ledger


def bulk_conversations(
    ledger: Ledger, conversations: int, per_conversation: int = 20, first: int = 0
) -> None:
    """Many rows at once (the ledger helpers insert one row per transaction)."""
    messages = SQLModel.metadata.tables["messages"]
    rows = []
    if ledger.engine.dialect.name == "sqlite":  # FTS5 upkeep would dominate the insert
        with ledger.engine.begin() as conn:
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS messages_fts_ai")
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS messages_fts_tri_ai")
    for c in range(first, first + conversations):
        user = ledger.user(f"P{c}")
        conv = ledger.conversation(f"bulk-{c}")
        for k in range(per_conversation // 2):
            at = T0 + timedelta(minutes=c * 100 + k)
            base = {
                "conversation_id": conv,
                "user_id": user,
                "persona_id": "pal",
                "created_at": at,
                # Every row names every column: an executemany takes its columns
                # from the first row.
                "persona_hash": None,
            }
            rows.append(
                {
                    **base,
                    "direction": "in",
                    "kind": "message",
                    "status": "answered",
                    "text": f"conversation {c} question {k} " + "y" * 100,
                }
            )
            rows.append(
                {
                    **base,
                    "direction": "out",
                    "kind": "message",
                    "status": "delivered",
                    "text": f"conversation {c} answer {k} " + "z" * 100,
                    "persona_hash": ledger.persona_hash,
                }
            )
    with ledger.engine.begin() as conn:
        conn.execute(insert(messages), rows)
