"""Discord slash commands through the inbox: an interaction committed before it is
answered, its reply stored before it is sent, a restart finishing what a crash left.

Discord never resends an interaction and takes its answer only so long: the first
answer (the reply, or a defer that shows "thinking…") within 3 s, later ones (the
reply after a defer, more parts) for 15 minutes, with the interaction's token. So:

1. INTERACTION_CREATE of a command is taken from the gateway before discord.py
   parses it, and committed raw to the inbox (key `interaction:<id>`, no chat: it is
   answered at once, not behind the channel's turns).
2. The inbox worker hands the event to `DiscordInteractions.handle`: the command
   runs (`SlashCommands.run`); if it has not finished 2 s after the interaction
   arrived, the defer is recorded (`interaction_answers`, status `deferred`) and
   then sent.
3. The reply is stored with the event's done mark in ONE transaction; after that
   the command never runs again. Then it leaves: as the initial answer when not
   deferred, else as an edit of `@original` (which replaces "thinking…", and is
   idempotent), further parts as follow-ups; `parts_sent` is committed after each.
4. On start (`recover`), each stored reply not delivered is sent from its first
   unconfirmed part; a pending event is the worker's again: deferred and within
   15 minutes, its command runs (a crash came before its reply was stored) and the
   reply follows up. Past 15 minutes, or never deferred and past 3 s, nothing is
   sent (Discord would refuse it): the event is failed, or the answer `expired`,
   with the reason.

A reply is sent once, except a part in flight at a crash: its follow-up may repeat
(an `@original` edit repeats harmlessly). A command whose reply was stored never
runs twice; one cut short by a crash before that runs again (what it does is
idempotent, a moderator action done once per event, as on Telegram). A payload
that cannot be read costs one failure row and blocks nothing: interactions have no
lane of their own to block.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

import aiohttp
import discord
import structlog

from adapters._discord_answers import (
    INITIAL_WINDOW_S,
    INTERACTION_KEY,
    TOKEN_LIFETIME_S,
    WAITING,
    Answer,
    InteractionAnswers,
)
from adapters._discord_commands import SlashCall, slash_call
from adapters._discord_restarts import _Restarts
from adapters._split import split_message
from bot.aio import wait_for
from bot.errors import AdapterError
from bot.inbox import InboxEvent, RawEvent

if TYPE_CHECKING:
    from adapters.discord import DiscordAdapter

__all__ = [
    "INTERACTION_KEY",
    "DiscordInteractions",
    "InteractionExpired",
    "UnparsableInteraction",
]

log = structlog.get_logger("adapters.discord")

#: A command still running this long after its interaction arrived is deferred.
ANSWER_WITHIN_S = 2.0
#: Waiting for the gateway's guilds (moderator roles) before a command runs after a
#: restart, at most.
_READY_WAIT_S = 10.0
#: How long a delivery waits for another worker's hold on the interaction, at most.
_LOCK_WAIT_S = 30.0
#: How long a commit that failed (the database busy) is retried before the answer
#: could no longer be in time.
_ACCEPT_RETRY_S = 1.5


class UnparsableInteraction(AdapterError):
    """A stored interaction that is not one this adapter can read or answer."""


class InteractionExpired(AdapterError):
    """An interaction Discord no longer takes an answer for: nothing was sent."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _key(data: dict[str, Any], payload: str) -> str:
    raw = data.get("id")
    if isinstance(raw, str) and raw.isdigit() and len(raw) <= 20:
        return f"{INTERACTION_KEY}{raw}"
    # Without a usable id it is still stored (and failed), once per payload.
    digest = hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{INTERACTION_KEY}sha256:{digest}"


class DiscordInteractions(_Restarts):
    """The interactions of one `DiscordAdapter`: taken, answered, recovered."""

    def __init__(self, adapter: DiscordAdapter, *, now: Callable[[], datetime] = _utcnow) -> None:
        self.adapter = adapter
        self._now = now
        self._accepting: set[asyncio.Task[None]] = set()
        #: Events whose reply this process is sending now.
        self._delivering: set[int] = set()

    @property
    def queued(self) -> int:
        """Interactions received and not yet committed."""
        return len(self._accepting)

    @property
    def answers(self) -> InteractionAnswers:
        inbox = self.adapter.inbox
        if inbox is None:
            raise AdapterError("the Discord adapter needs the inbox (AdapterServices.inbox)")
        return InteractionAnswers(inbox.db, self.adapter.platform)

    # -- taking --------------------------------------------------------------------------

    def install(self, client: discord.Client) -> None:
        """Take application-command INTERACTION_CREATEs from the client's parser table
        (components and autocomplete stay discord.py's)."""
        state: Any = client._connection
        parsers: Any = getattr(state, "parsers", None)
        if not isinstance(parsers, dict) or "INTERACTION_CREATE" not in parsers:
            raise AdapterError(
                f"discord.py {discord.__version__} has no parser table this adapter can take "
                "INTERACTION_CREATE from; install a discord.py 2.x release this project supports"
            )
        parse = parsers["INTERACTION_CREATE"]

        def interaction_create(data: Any) -> None:
            if not isinstance(data, dict) or data.get("type") != 2:
                parse(data)
                return
            task = asyncio.get_running_loop().create_task(self._accept(data, self._now()))
            self._accepting.add(task)
            task.add_done_callback(self._accepting.discard)

        parsers["INTERACTION_CREATE"] = interaction_create

    async def _accept(self, data: dict[str, Any], received: datetime) -> None:
        payload = json.dumps(data, ensure_ascii=False)
        event = RawEvent(key=_key(data, payload), payload=payload, received_at=received)
        waited = 0.0
        while True:
            try:
                await self.adapter.accept([event])
                return
            except Exception as exc:  # not stored: it cannot be answered durably
                if waited >= _ACCEPT_RETRY_S:
                    log.error("discord.interaction_not_stored", key=event.key, error=str(exc))
                    return
                await asyncio.sleep(0.25)
                waited += 0.25

    # -- answering -----------------------------------------------------------------------

    def _parse(self, event: InboxEvent) -> tuple[discord.Interaction, SlashCall]:
        if event.truncated:
            raise UnparsableInteraction("the interaction was cut at the inbox's size limit")
        try:
            data = json.loads(event.payload)
            if not isinstance(data, dict):
                raise TypeError(f"a JSON {type(data).__name__}, not an object")
            state: Any = self.adapter._require_client()._connection
            payload: Any = data  # checked field by field by discord.py and slash_call
            interaction: discord.Interaction = discord.Interaction(data=payload, state=state)
            return interaction, slash_call(data.get("data"))
        except AdapterError:
            raise
        except Exception as exc:  # whatever a hostile payload makes discord.py raise
            raise UnparsableInteraction(
                f"not a Discord interaction: {type(exc).__name__}: {exc}"[:500]
            ) from exc

    @staticmethod
    def _created(interaction: discord.Interaction, event: InboxEvent) -> datetime:
        """When Discord's clock started: the interaction's own time (never later than
        its arrival)."""
        return min(discord.utils.snowflake_time(interaction.id), event.received_at)

    async def handle(self, event: InboxEvent) -> None:
        """Answer one stored interaction (see the module). Raises `InteractionExpired`
        or `UnparsableInteraction`, having sent nothing, for the inbox to record."""
        interaction, call = self._parse(event)
        answers = self.answers
        answer = await answers.get(event.id)
        if answer is not None and answer.stored:
            # Replayed: the command ran, its reply is stored; it is not run again.
            if answer.status in WAITING:
                await self._deliver(interaction, event)
            elif answer.status != "delivered":  # still not answered, and why
                raise InteractionExpired(f"answer {answer.status} before: {answer.reason}")
            return
        deferred = answer is not None and answer.deferred
        created = self._created(interaction, event)
        now = self._now()
        age = (now - created).total_seconds()
        if age > TOKEN_LIFETIME_S:
            await self._expired(
                event.id,
                answer,
                f"/{call.name} is {age:.0f} s old, past the 15 minutes its token answers "
                "for: not run, nothing sent",
            )
        waited = (now - event.received_at).total_seconds()
        if not deferred and waited > INITIAL_WINDOW_S:
            await self._expired(
                event.id,
                answer,
                f"/{call.name} was taken {waited:.1f} s after it arrived and never deferred: "
                "Discord takes no first answer after 3 s; not run, nothing sent",
            )
        if deferred and not self.adapter.ready.is_set():
            # After a restart: the guilds (moderator roles) arrive with the session.
            try:
                await wait_for(self.adapter.ready.wait(), _READY_WAIT_S)
            except TimeoutError:
                log.warning("discord.interaction_before_ready", event_id=event.id)
        refused: str | None = None
        work = asyncio.ensure_future(self.adapter.slash.run(interaction, call))
        try:
            if not deferred:
                try:
                    text = await wait_for(
                        asyncio.shield(work), timeout=max(0.0, ANSWER_WITHIN_S - waited)
                    )
                except TimeoutError:
                    refused = await self._defer(event, interaction, call, created)
                    text = await work
            else:
                text = await work
        finally:
            if not work.done():  # the handler was cancelled (a stop): the event stays pending
                work.cancel()
        stored = await answers.store_reply(
            event.id,
            text,
            created_at=created,
            ephemeral=call.ephemeral,
            now=self._now(),
            status="generated" if refused is None else "undeliverable",
            reason=refused,
        )
        if not stored:
            log.info("discord.interaction_answered_elsewhere", event_id=event.id)
        await self._deliver(interaction, event)

    async def _expired(self, event_id: int, answer: Answer | None, reason: str) -> NoReturn:
        """Raise `InteractionExpired` (the inbox fails the event with `reason`), the
        answer row, if the interaction was deferred, `expired` with it."""
        if answer is not None:
            await self.answers.settle(event_id, "expired", now=self._now(), reason=reason)
        raise InteractionExpired(reason)

    async def _defer(
        self,
        event: InboxEvent,
        interaction: discord.Interaction,
        call: SlashCall,
        created: datetime,
    ) -> str | None:
        """Record the defer, then send it; the reason Discord refused it, or None."""
        await self.answers.deferring(
            event.id, created_at=created, ephemeral=call.ephemeral, now=self._now()
        )
        try:
            await interaction.response.defer(ephemeral=call.ephemeral, thinking=True)
        except (discord.HTTPException, aiohttp.ClientError) as exc:
            log.error("discord.command_defer_failed", command=call.name, error=str(exc))
            return f"Discord refused the defer: {type(exc).__name__}: {exc}"[:500]
        return None

    async def _deliver(self, interaction: discord.Interaction, event: InboxEvent) -> None:
        """Send the event's stored reply, if it still waits, as its one sender: in this
        process (a recovery queued meanwhile, as at a dead worker's adoption, leaves it
        alone) and, with several workers (`bot.cluster`), under the interaction's lock,
        the one a recovery job's lane takes; the row is read again under both."""
        if event.id in self._delivering:
            return
        self._delivering.add(event.id)
        worker = self.adapter.worker
        claims = worker.claims if worker is not None else None
        key = f"{INTERACTION_KEY}{event.id}"
        try:
            if claims is not None:
                delay, deadline = 0.05, time.monotonic() + _LOCK_WAIT_S
                while not await claims.acquire(key):
                    if time.monotonic() > deadline:  # another worker has it in hand
                        log.warning("discord.interaction_held_elsewhere", event_id=event.id)
                        return
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.5)
            try:
                answer = await self.answers.get(event.id)
                if answer is not None and answer.status in WAITING:
                    await self._send_parts(interaction, answer, event)
            finally:
                if claims is not None:
                    await claims.release(key)
        finally:
            self._delivering.discard(event.id)

    async def _send_parts(
        self, interaction: discord.Interaction, answer: Answer, event: InboxEvent
    ) -> None:
        """Send a stored reply from its first unconfirmed part, recording each step;
        nothing is sent where Discord would refuse it (the answer `expired`)."""
        answers = self.answers
        parts = split_message(answer.text, self.adapter.max_message_length) or ["(nothing to say)"]
        none = discord.AllowedMentions.none()
        for index in range(answer.parts_sent, len(parts)):
            now = self._now()
            age = (now - answer.created_at).total_seconds()
            too_late = None
            if age > TOKEN_LIFETIME_S:
                too_late = f"{age:.0f} s after the interaction, past its token's 15 minutes"
            elif index == 0 and not answer.deferred:
                waited = (now - event.received_at).total_seconds()
                if waited > INITIAL_WINDOW_S:
                    too_late = (
                        f"the first answer was not confirmed within 3 s (now {waited:.1f} s; "
                        "it may have reached the person) and was never deferred"
                    )
            if too_late is not None:
                await answers.settle(
                    answer.event_id, "expired", now=now, reason=f"not sent: {too_late}"
                )
                log.warning("discord.interaction_expired", event_id=event.id, reason=too_late)
                return
            await answers.sending(answer.event_id, parts_sent=index, now=now)
            try:
                if index == 0 and answer.deferred:
                    await interaction.edit_original_response(
                        content=parts[0], allowed_mentions=none
                    )
                elif index == 0:
                    await interaction.response.send_message(
                        parts[0], ephemeral=answer.ephemeral, allowed_mentions=none
                    )
                else:
                    await interaction.followup.send(
                        parts[index], ephemeral=answer.ephemeral, allowed_mentions=none
                    )
            except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
                reason = f"Discord refused part {index + 1}: {type(exc).__name__}: {exc}"[:500]
                log.error("discord.command_answer_failed", event_id=event.id, error=reason)
                await answers.settle(answer.event_id, "undeliverable", now=now, reason=reason)
                return
        await answers.settle(answer.event_id, "delivered", now=self._now())
