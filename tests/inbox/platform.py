"""A minimal platform for driving the core through the inbox: events are JSON
objects, deliveries are appended to a list (and, for the kill test, to a file the
"platform" keeps, flushed before the send returns, as a real server's log would be).

Event payload: {"id": "...", "chat": "...", "user": "...", "text": "..."}; a text
starting with "/" is a command; {"poison": "why"} makes the handler raise.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from adapters.base import Adapter, AdapterServices, PacingPolicy
from bot.commands import CommandContext
from bot.inbox import InboxEvent, RawEvent
from bot.inbox.outbox import deliver_command
from bot.messages import Actor, Incoming, Outgoing, Scope

FAST = PacingPolicy(
    per_chat_interval_s=0.0, group_per_minute=10_000, global_per_second=100_000, per_chat_burst=1
)


def event(key: str, chat: str, text: str, user: str | None = None, **extra: Any) -> RawEvent:
    """A RawEvent of the JSON platform."""
    payload = {"id": key, "chat": chat, "user": user or chat, "text": text, **extra}
    return RawEvent(key=key, payload=json.dumps(payload), chat=chat)


class JsonPlatform(Adapter):
    """The platform: parses events in `handle_event`, records every delivered part."""

    platform = "json"
    max_message_length = 40
    typing_interval_s = 0.05
    pacing = FAST

    def __init__(
        self,
        services: AdapterServices,
        *,
        log_path: Path | None = None,
        deliver_delay_s: float = 0.0,
        persona: str = "tester",
    ) -> None:
        super().__init__(services)
        self.sent: list[tuple[str, str, int | None]] = []  # (chat, text, message_id)
        self.log_path = log_path
        self.deliver_delay_s = deliver_delay_s
        self.persona = persona
        self._log = log_path.open("a", encoding="utf-8") if log_path is not None else None

    async def run(self, stop: asyncio.Event) -> None:
        async with self.processing():
            await stop.wait()

    async def handle_event(self, event: InboxEvent) -> None:
        data = json.loads(event.payload)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        if "poison" in data:
            raise ValueError(str(data["poison"]))
        chat, user, text = str(data["chat"]), str(data["user"]), str(data["text"])
        scope = Scope(platform=self.platform, channel=chat, user=user, persona=self.persona)
        actor = Actor(platform=self.platform, id=user, display_name=user)
        if text.startswith("/"):  # as Telegram does: the reply through the outbox
            name, _, args = text[1:].partition(" ")
            ctx = CommandContext(scope=scope, actor=actor)
            reply = await self.services.commands.execute(name, args, ctx)
            await deliver_command(self, reply, scope, actor)
            return
        await self.answer(
            Incoming(
                scope=scope,
                actor=actor,
                text=text,
                platform_message_id=str(data["id"]),
                received_at=event.received_at,
            )
        )

    async def _deliver(self, outgoing: Outgoing, text: str) -> str | None:
        if self.deliver_delay_s:
            await asyncio.sleep(self.deliver_delay_s)
        self.sent.append((outgoing.scope.channel, text, outgoing.message_id))
        if self._log is not None:
            record = {"chat": outgoing.scope.channel, "text": text, "mid": outgoing.message_id}
            self._log.write(json.dumps(record) + "\n")
            self._log.flush()
        return f"p{len(self.sent)}"
