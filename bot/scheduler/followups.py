"""Follow-ups the persona decides on in conversation: "ask how the exam went".

After a turn in a direct conversation that mentions something ahead ("my exam is on
Friday"), the model is asked, with a JSON schema (vLLM's structured output), for
dated things worth asking about later. They are stored in `followups` and the
scheduler fires each at its time, through the same delivery policy as any
proactive message. A date in the past is dropped and one too far ahead is clamped,
both logged: a model's arithmetic about dates is not trusted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import Connection, Table, insert, select
from sqlmodel import SQLModel

from bot.db import Database
from bot.engine import BackendSource, TurnRecord
from bot.llm.base import ChatMessage, ChatRequest, Sampling
from bot.models import FollowUp, User
from bot.personas import PersonaRegistry
from bot.text import strip_controls

__all__ = ["FOLLOWUP_SCHEMA", "FollowUpExtractor", "PlannedFollowUp", "mentions_future", "parse"]

log = structlog.get_logger("bot.followups")

_t = SQLModel.metadata.tables
_followups: Table = _t[FollowUp.__tablename__]
_users: Table = _t[User.__tablename__]

FOLLOWUP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "followups": {
            "type": "array",
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {
                    "ask": {"type": "string", "maxLength": 200},
                    "when": {"type": "string", "maxLength": 32},
                },
                "required": ["ask", "when"],
            },
        }
    },
    "required": ["followups"],
}

# Cheap gate before spending a model call: words that point at a later time.
_FUTURE = re.compile(
    r"\b(tomorrow|tonight|next|later|soon|upcoming|on (mon|tue|wed|thu|fri|sat|sun)\w*|"
    r"this (week|weekend|evening|afternoon|month)|in \d+ (day|week|hour|month)s?|"
    r"(mon|tues|wednes|thurs|fri|satur|sun)day|exam|interview|appointment|trip|flight|"
    r"deadline|surgery|date|party|wedding|birthday|\d{1,2}[./]\d{1,2})\b"
    r"|明天|后天|下周|下个|周[一二三四五六日末]|星期|考试|面试|下午|晚上|月\d+日|\d+号",
    re.IGNORECASE,
)


def mentions_future(text: str) -> bool:
    """Whether a message talks about something ahead (worth asking about later)."""
    return bool(_FUTURE.search(text))


@dataclass(frozen=True, slots=True)
class PlannedFollowUp:
    """A follow-up as parsed and checked: what to ask, and when (UTC)."""

    ask: str
    due_at: datetime
    note: str = ""


def parse(raw: str, *, now: datetime, zone: str, horizon: timedelta) -> list[PlannedFollowUp]:
    """The follow-ups in a model's JSON answer, with dates checked.

    `when` is the person's local "YYYY-MM-DD HH:MM" (or a date, meaning 10:00).
    Invalid JSON or items are skipped; dates in the past are dropped; dates beyond
    `horizon` are clamped to it. Never raises on model output.
    """
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, TypeError):
        log.warning("followup.invalid_json", raw=raw[:200])
        return []
    items = data.get("followups") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return []
    local_zone = ZoneInfo(zone)
    planned = []
    for item in items[:3]:
        if not isinstance(item, dict):
            continue
        ask, when = item.get("ask"), item.get("when")
        if not isinstance(ask, str) or not isinstance(when, str):
            continue
        ask = strip_controls(ask)  # model output, shown to the model and stored: no controls
        if not ask.strip():
            continue
        due = _parse_when(when.strip(), local_zone)
        if due is None:
            log.info("followup.bad_date", when=when)
            continue
        note = ""
        if due <= now:
            log.info("followup.dropped_past", when=when, ask=ask[:80])
            continue
        if due > now + horizon:
            log.info("followup.clamped", when=when, ask=ask[:80])
            due, note = now + horizon, f"clamped from {when}"
        planned.append(PlannedFollowUp(ask.strip()[:200], due.astimezone(UTC), note))
    return planned


def _parse_when(when: str, zone: ZoneInfo) -> datetime | None:
    for fmt in ("%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            parsed = datetime.strptime(when, fmt)
        except ValueError:
            continue
        if fmt == "%Y-%m-%d":
            parsed = parsed.replace(hour=10)
        return parsed.replace(tzinfo=zone)
    return None


class FollowUpExtractor:
    """A turn observer that stores follow-ups and hands them to the scheduler."""

    def __init__(
        self,
        *,
        db: Database,
        personas: PersonaRegistry,
        backends: BackendSource,
        default_zone: str,
        horizon_days: int = 60,
        on_created: Callable[[int, datetime], None] | None = None,
    ) -> None:
        self.db = db
        self.personas = personas
        self.backends = backends
        self.default_zone = default_zone
        self.horizon = timedelta(days=horizon_days)
        self.on_created = on_created

    async def observe(self, turn: TurnRecord) -> None:
        """Extract and store follow-ups from a finished direct turn, if it looks ahead."""
        if not turn.scope.is_direct or not mentions_future(turn.incoming_text):
            return
        loaded = self.personas.get(turn.scope.persona)
        schedule = loaded.persona.schedule
        if schedule is None or not schedule.follow_ups:
            return
        zone = await self._zone(turn.user_id, schedule.timezone or self.default_zone)
        backend = await self.backends.for_persona(loaded)
        now = turn.at.astimezone(UTC)
        completion = await backend.complete(self.request(turn, zone, now))
        planned = parse(completion.text, now=now, zone=zone, horizon=self.horizon)
        for item in planned:
            followup_id = await self._store(turn, item, now)
            if self.on_created is not None:
                self.on_created(followup_id, item.due_at)
        if planned:
            log.info("followup.planned", count=len(planned), conversation=turn.conversation_id)

    @staticmethod
    def request(turn: TurnRecord, zone: str, now: datetime) -> ChatRequest:
        """The structured-output request for one turn."""
        local = now.astimezone(ZoneInfo(zone))
        system = (
            "You help a companion remember to ask about things later. From the exchange "
            "below, list concrete future events the person mentioned that are worth asking "
            "about afterwards, with the local date and time to ask (after the event), as "
            f"'YYYY-MM-DD HH:MM'. Now it is {local:%A %Y-%m-%d %H:%M} ({zone}). "
            'Answer with JSON only: {"followups": [{"ask": "...", "when": "..."}]}; '
            "an empty list when there is nothing."
        )
        exchange = f"Person: {turn.incoming_text[:2000]}\nCompanion: {turn.reply_text[:1000]}"
        return ChatRequest(
            messages=(ChatMessage("system", system), ChatMessage("user", exchange)),
            sampling=Sampling(
                temperature=0.0,
                max_tokens=200,
                extra={
                    "response_format": {
                        "type": "json_schema",
                        "json_schema": {"name": "followups", "schema": FOLLOWUP_SCHEMA},
                    }
                },
            ),
        )

    async def _zone(self, user_id: int, fallback: str) -> str:
        def work(conn: Connection) -> str | None:
            value = conn.execute(select(_users.c.timezone).where(_users.c.id == user_id)).scalar()
            return None if value is None else str(value)

        return await self.db.run(work) or fallback

    async def _store(self, turn: TurnRecord, item: PlannedFollowUp, now: datetime) -> int:
        def work(conn: Connection) -> int:
            result = conn.execute(
                insert(_followups).values(
                    conversation_id=turn.conversation_id,
                    user_id=turn.user_id,
                    persona_id=turn.scope.persona,
                    source_message_id=turn.incoming_id,
                    text=item.ask,
                    due_at=item.due_at,
                    status="pending",
                    reason=item.note or None,
                    created_at=now,
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

        return await self.db.run(work)
