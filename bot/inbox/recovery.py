"""Recovery on start: finish what a stop or crash left unfinished, once.

For one platform, every unfinished ledger row (`Ledger.unfinished`) becomes a job in
its chat's lane of the inbox worker, oldest first, before the worker takes its first
pending event:

- an incoming message with no reply (`received`/`answering`) younger than
  `engine.stale_after_s` is answered late (`PersonaEngine.resume`, which claims it
  first, so no message is answered twice); an older one is recorded `expired`, with
  the persona's `safety.away_message` sent at most once to that person;
- a reply not yet delivered (`generated`/`sending`) younger than the limit is sent
  from the first part not confirmed (`parts_sent`); an older one is recorded
  `undeliverable` (expired), with the same one away notice. Greetings and command
  replies are replies here too (bot/inbox/outbox.py): a command whose event is done
  is never run again, its stored reply is what leaves.

An adapter with replies kept elsewhere (Discord's slash command answers,
adapters/_discord_interactions.py) queues their delivery too, through its
`recover_more(worker)`. Pending inbox events then follow in each lane; a
redelivered message that was already stored is recognised by the engine and not
answered again.

With several workers (`bot.cluster`) each job runs holding its chat's lock, and
looks again when it runs: a message someone finished meanwhile is left alone
(`Ledger.claim` and `Ledger.expire` decide for incoming messages; a reply is
re-read for its status and the parts already confirmed). So recovery may be queued
by any worker at any time, at start and whenever a dead worker is adopted, and
`recover_chat` finishes one chat's leftovers inline, for a lane that finds an
event a dead worker had in hand.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog
from sqlalchemy import Connection, select
from sqlmodel import SQLModel

from bot.engine import PersonaEngine
from bot.errors import BotError
from bot.inbox.outbox import COMMAND_KIND, clear_settled
from bot.inbox.worker import InboxWorker
from bot.memory.ledger import Unfinished
from bot.messages import Outgoing, Scope, TurnKind
from bot.models import MessageStatus

__all__ = ["AWAY_HORIZON", "RecoveryReport", "RecoveryTarget", "recover", "recover_chat"]

log = structlog.get_logger("bot.inbox.recovery")

#: An expired message older than this gets no away notice: a person who wrote days
#: ago (or a conversation imported from elsewhere) should not hear "sorry" now.
AWAY_HORIZON = timedelta(days=2)


class RecoveryTarget(Protocol):
    """What recovery needs of an adapter (`adapters.base.Adapter` is one)."""

    platform: str
    engine: PersonaEngine

    def chat_key(self, scope: Scope) -> str:
        """The lane (and rate-limit unit) of a scope."""
        ...

    async def send(self, outgoing: Outgoing, *, first_part: int = 0) -> list[str | None]:
        """Deliver a stored reply from part `first_part` on, recording the outcome."""
        ...


@dataclass
class RecoveryReport:
    """What recovery found: how many of each it queued."""

    resumed: int = 0
    expired: int = 0
    redelivered: int = 0

    @property
    def total(self) -> int:
        """Every unfinished message found."""
        return self.resumed + self.expired + self.redelivered


async def recover(
    target: RecoveryTarget, worker: InboxWorker, *, now: datetime | None = None
) -> RecoveryReport:
    """Queue the unfinished work of `target.platform` into `worker`'s lanes (it runs
    there, in each chat's order); returns what was queued."""
    engine = target.engine
    at = now or datetime.now(UTC)
    limit = at - timedelta(seconds=engine.settings.stale_after_s)
    report = RecoveryReport()
    for item in await engine.ledger.unfinished(target.platform):
        chat = target.chat_key(item.scope)
        job = _job_for(target, item, at, limit, report)
        worker.submit(chat, job, name=f"recover-{item.message_id}")
    # A platform's own outbox besides the ledger (Discord's slash command replies).
    more = getattr(target, "recover_more", None)
    if more is not None:
        report.redelivered += await more(worker)
    if report.total:
        log.info(
            "recovery.queued",
            platform=target.platform,
            resumed=report.resumed,
            expired=report.expired,
            redelivered=report.redelivered,
        )
    return report


async def recover_chat(
    target: RecoveryTarget, chat: str, *, now: datetime | None = None
) -> RecoveryReport:
    """Finish `chat`'s unfinished messages now, oldest first, in the caller's lane
    (which holds the chat): what a dead worker left there."""
    at = now or datetime.now(UTC)
    limit = at - timedelta(seconds=target.engine.settings.stale_after_s)
    report = RecoveryReport()
    for item in await target.engine.ledger.unfinished(target.platform):
        if target.chat_key(item.scope) == chat:
            await _job_for(target, item, at, limit, report)()
    if report.total:
        log.info("recovery.chat", platform=target.platform, chat=chat, found=report.total)
    return report


def _job_for(
    target: RecoveryTarget,
    item: Unfinished,
    now: datetime,
    limit: datetime,
    report: RecoveryReport,
) -> Callable[[], Awaitable[None]]:
    if item.created_at < limit:
        report.expired += 1
        return _expire(target, item, now)
    if item.direction == "in":
        report.resumed += 1
        return _resume(target, item)
    report.redelivered += 1
    return _redeliver(target, item)


def _resume(target: RecoveryTarget, item: Unfinished) -> Callable[[], Awaitable[None]]:
    async def job() -> None:
        for reply in await target.engine.resume(item):
            await _send(target, reply)

    return job


def _redeliver(target: RecoveryTarget, item: Unfinished) -> Callable[[], Awaitable[None]]:
    async def job() -> None:
        # Looked at again now: another worker may have delivered it meanwhile.
        parts = await _still_undelivered(target, item.message_id)
        if parts is None:
            log.info("recovery.redeliver_skipped", message_id=item.message_id)
            return
        await _send(target, _outgoing(item), first_part=parts)
        if item.kind == COMMAND_KIND:
            await clear_settled(target.engine, [item.message_id])

    return job


async def _still_undelivered(target: RecoveryTarget, message_id: int) -> int | None:
    """The parts of a reply already confirmed, or None once it is no longer waiting."""
    messages = SQLModel.metadata.tables["messages"]
    waiting = (MessageStatus.GENERATED.value, MessageStatus.SENDING.value)

    def work(conn: Connection) -> int | None:
        row = conn.execute(
            select(messages.c.status, messages.c.parts_sent).where(messages.c.id == message_id)
        ).first()
        if row is None or row.status not in waiting:
            return None
        return int(row.parts_sent or 0)

    return await target.engine.ledger.db.read(work)


def _expire(
    target: RecoveryTarget, item: Unfinished, now: datetime
) -> Callable[[], Awaitable[None]]:
    async def job() -> None:
        age = (now - item.created_at).total_seconds()
        what = "received" if item.direction == "in" else "generated"
        reason = (
            f"{what} {age:.0f} s before the bot came back, older than the staleness "
            "limit (engine.stale_after_s)"
        )
        away = await target.engine.expire(
            item, reason=reason, notify=now - item.created_at < AWAY_HORIZON
        )
        if item.kind == COMMAND_KIND:
            await clear_settled(target.engine, [item.message_id])
        if away is not None:
            await _send(target, away)

    return job


async def _send(target: RecoveryTarget, outgoing: Outgoing, *, first_part: int = 0) -> None:
    try:
        await target.send(outgoing, first_part=first_part)
    except BotError as exc:  # a delivery failure is recorded by send; log the rest
        log.info("recovery.send_failed", message_id=outgoing.message_id, error=str(exc))


def _outgoing(item: Unfinished) -> Outgoing:
    try:
        kind = TurnKind(item.kind)
    except ValueError:  # apology, away: spoken as messages
        kind = TurnKind.MESSAGE
    return Outgoing(
        scope=item.scope,
        text=item.text,
        reply_to_platform_id=item.reply_to_platform_id,
        message_id=item.message_id,
        persona_hash=item.persona_hash,
        kind=kind,
        is_error=item.kind == "apology",
    )
