"""What the persona says first: habits at their time, check-ins after a silence,
follow-ups it meant to ask about, each through the policy (`decide`) and the engine's
proactive turn, then the platform's sender (a part of `Scheduler`,
bot/scheduler/service.py, which owns the state declared here and the jobs that call
these methods).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

import structlog
from sqlalchemy import Connection, Table, select, update
from sqlmodel import SQLModel

from bot.db import Database
from bot.engine import PersonaEngine
from bot.messages import Outgoing, TurnKind
from bot.models import FollowUp
from bot.personas import PersonaRegistry
from bot.personas.schedule import Schedule
from bot.scheduler.policy import decide
from bot.scheduler.targets import Target, load_target, load_targets

log = structlog.get_logger("bot.scheduler")

_t = SQLModel.metadata.tables
_followups: Table = _t[FollowUp.__tablename__]


class ProactiveSender(Protocol):
    """Delivers a proactive message on one platform (an adapter's `send`)."""

    async def send(self, outgoing: Outgoing) -> list[str | None]:
        """Deliver it; raise `DeliveryError` (recorded by the adapter) on failure."""
        ...


class Proactive:
    """Habits, check-ins and follow-ups sent (a part of `Scheduler`)."""

    db: Database
    engine: PersonaEngine
    personas: PersonaRegistry
    default_zone: str
    senders: dict[str, ProactiveSender]

    if TYPE_CHECKING:  # Scheduler's: it keeps the habit jobs

        async def sync(self, now: datetime) -> int: ...

    async def fire_habit(
        self, persona: str, habit: str, conversation_id: int, now: datetime
    ) -> bool:
        """A habit's time has come for one person: send it if the policy allows."""
        loaded = self.personas.get(persona)
        schedule = loaded.persona.schedule
        if schedule is None:
            return False
        found = next((h for h in schedule.habits if h.name == habit), None)
        if found is None:
            return False
        target = await self._target(persona, conversation_id, now, schedule)
        if target is None:
            return False
        return await self._speak(target, schedule, found.prompt, now, f"habit {habit}")

    # -- check-ins and follow-ups -----------------------------------------------------

    async def sweep(self, now: datetime) -> int:
        """Check-ins for people who went quiet, and habit jobs kept in sync; returns
        how many check-ins were sent."""
        sent = 0
        for loaded in self.personas.personas():
            schedule = loaded.persona.schedule
            if schedule is None or not schedule.checkins:
                continue
            for target in await self._targets(loaded.persona.id, now, schedule):
                if target.last_incoming_at is None:
                    continue
                silence = now - target.last_incoming_at
                due = [c for c in schedule.checkins if silence >= timedelta(hours=c.after_hours)]
                # Once per silence: only if nothing proactive went out since they last wrote.
                if not due or (
                    target.last_proactive_at is not None
                    and target.last_proactive_at > target.last_incoming_at
                ):
                    continue
                checkin = max(due, key=lambda c: c.after_hours)
                if await self._speak(target, schedule, checkin.prompt, now, "check-in"):
                    sent += 1
        await self.sync(now)
        return sent

    async def fire_followup(self, followup_id: int, now: datetime) -> str:
        """Ask about a follow-up; returns its new status (sent, skipped, failed)."""
        row = await self.db.run(
            lambda c: c.execute(select(_followups).where(_followups.c.id == followup_id)).first()
        )
        if row is None or row.status != "pending":
            return "missing" if row is None else str(row.status)
        loaded = self.personas.get(row.persona_id)
        schedule = loaded.persona.schedule or Schedule()
        target = await self._target(row.persona_id, row.conversation_id, now, schedule)
        status, reason = "skipped", "not a direct conversation any more"
        if target is not None:
            decision = decide(target.state, schedule, now)
            reason = decision.reason
            if not decision.allowed:
                self.engine.metrics.proactive_skipped(reason)
            else:
                instruction = (
                    f"Earlier you meant to follow up on this: {row.text} Ask about it now."
                )
                sent = await self._deliver(target, instruction, now)
                status, reason = ("sent", "ok") if sent else ("failed", "not delivered")

        def mark(conn: Connection) -> None:
            conn.execute(
                update(_followups)
                .where(_followups.c.id == followup_id)
                .values(status=status, reason=reason[:256], fired_at=now)
            )

        await self.db.run(mark)
        log.info("followup.fired", followup=followup_id, status=status, reason=reason)
        return status

    # -- helpers ------------------------------------------------------------------------

    async def _targets(self, persona: str, now: datetime, schedule: Schedule) -> list[Target]:
        zone = schedule.timezone or self.default_zone
        return await self.db.run(lambda c: load_targets(c, persona, now=now, default_zone=zone))

    async def _target(
        self, persona: str, conversation_id: int, now: datetime, schedule: Schedule
    ) -> Target | None:
        zone = schedule.timezone or self.default_zone
        return await self.db.run(
            lambda c: load_target(c, persona, conversation_id, now=now, default_zone=zone)
        )

    async def _speak(
        self, target: Target, schedule: Schedule, instruction: str, now: datetime, why: str
    ) -> bool:
        decision = decide(target.state, schedule, now)
        if not decision.allowed:
            log.info("proactive.skipped", why=why, reason=decision.reason, user=target.scope.user)
            self.engine.metrics.proactive_skipped(decision.reason)
            return False
        return await self._deliver(target, instruction, now)

    async def _deliver(self, target: Target, instruction: str, now: datetime) -> bool:
        sender = self.senders.get(target.scope.platform)
        if sender is None:
            log.info("proactive.no_sender", platform=target.scope.platform)
            self.engine.metrics.proactive_skipped("no sender")
            return False
        outgoing = await self.engine.proactive(
            target.scope,
            instruction=instruction,
            display_name=target.display_name,
            kind=TurnKind.PROACTIVE,
            now=now,
        )
        if outgoing is None:
            self.engine.metrics.proactive_failed("generation")
            return False
        try:
            await sender.send(outgoing)
        except Exception as exc:  # recorded by the adapter; never retried in a loop
            log.warning("proactive.undelivered", error=str(exc), user=target.scope.user)
            self.engine.metrics.proactive_failed("delivery")
            return False
        self.engine.metrics.proactive_sent()
        return True
