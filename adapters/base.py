"""What every platform adapter shares: the delivery policy around a raw send.

`Adapter.send` is the template method: it splits a reply to the platform's length
limit, paces it per chat and overall, retries a rate-limited send after the
platform's `retry_after` (a bounded number of times), and on a 403/blocked answer
marks the person unreachable on that platform and records why, never retrying in a
loop. Each platform implements only `_deliver` (one raw send), `_send_typing` and
`run`. `Adapter.answer` runs a turn with the typing indicator kept alive.
"""

from __future__ import annotations

import abc
import asyncio
import re
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Generic, TypeVar, final

import structlog

from bot.commands import CommandContext, Commands
from bot.engine import PersonaEngine
from bot.errors import AdapterError, BotError
from bot.inbox import Inbox, InboxEvent, InboxWorker, RawEvent
from bot.messages import Incoming, Outgoing, Reaction, Scope
from bot.people import People

__all__ = [
    "Adapter",
    "AdapterServices",
    "DeliveryError",
    "KeyedLocks",
    "Pacer",
    "PacingPolicy",
    "RateLimited",
    "Unreachable",
    "split_message",
]

log = structlog.get_logger("adapters")

K = TypeVar("K")

_SENTENCE_END = re.compile(r"(?<=[.!?。！？…])\s*")
_FENCE = "```"


class DeliveryError(BotError):
    """A platform refused or failed a send (not retried by the base)."""


class RateLimited(DeliveryError):
    """The platform said to wait: 429 with `retry_after` seconds."""

    def __init__(self, retry_after: float, detail: str = "") -> None:
        super().__init__(f"rate limited, retry after {retry_after:g} s {detail}".strip())
        self.retry_after = retry_after


class Unreachable(DeliveryError):
    """The person cannot be messaged (blocked the bot, never started it, DMs closed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _code_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    start = text.find(_FENCE)
    while start != -1:
        end = text.find(_FENCE, start + 3)
        if end == -1:
            spans.append((start, len(text)))
            break
        spans.append((start, end + 3))
        start = text.find(_FENCE, end + 3)
    return spans


def _inside(spans: list[tuple[int, int]], at: int) -> bool:
    return any(s < at < e for s, e in spans)


def split_message(text: str, limit: int) -> list[str]:
    """Parts of at most `limit` characters, cut at a paragraph, line, sentence or word
    boundary, in that order of preference, and never inside a ``` code block when a
    boundary outside one exists. A code block longer than `limit` is itself split at
    line boundaries and each part re-fenced, so every part renders as code. A single
    word longer than `limit` is the only thing ever cut mid-word."""
    if limit <= 8:
        raise ValueError("limit must be more than 8 characters")
    parts: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        spans = _code_spans(rest)
        window = rest[:limit]
        cut = _best_cut(window, spans, limit)
        if cut is None:  # inside a code block that does not fit: split it, re-fenced
            block_start = next(s for s, e in spans if s < limit < e or s <= limit <= e)
            if block_start > limit // 3:
                cut = block_start
            else:
                cut = _split_code_block(rest, block_start, limit, parts)
                rest = rest[cut:].lstrip("\n")
                continue
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return [p for p in parts if p]


def _best_cut(window: str, spans: list[tuple[int, int]], limit: int) -> int | None:
    floor = limit // 3
    for sep in ("\n\n", "\n"):
        at = window.rfind(sep)
        while at > floor:
            if not _inside(spans, at):
                return at
            at = window.rfind(sep, 0, at)
    ends = [m.end() for m in _SENTENCE_END.finditer(window) if m.end() > floor]
    ends = [e for e in ends if e <= len(window) and not _inside(spans, e)]
    if ends:
        return ends[-1]
    at = window.rfind(" ")
    while at > 0:
        if not _inside(spans, at):
            return at
        at = window.rfind(" ", 0, at)
    if any(s < limit <= e for s, e in spans):
        return None
    return limit


def _split_code_block(rest: str, start: int, limit: int, parts: list[str]) -> int:
    """Emit the code block starting at `start` as re-fenced parts; return where it ends."""
    if start:
        parts.append(rest[:start].rstrip())
    end = rest.find(_FENCE, start + 3)
    end = len(rest) if end == -1 else end + 3
    block = rest[start:end]
    first_nl = block.find("\n")
    opener = block[: first_nl + 1] if first_nl != -1 else _FENCE + "\n"
    body = block[len(opener) :]
    body = body[:-3] if body.endswith(_FENCE) else body
    room = limit - len(opener) - len("\n" + _FENCE)
    chunk = ""
    for line in body.splitlines(keepends=True):
        while len(line) > room:  # a single line longer than the room: hard cut
            if chunk:
                parts.append(f"{opener}{chunk.rstrip()}\n{_FENCE}")
                chunk = ""
            parts.append(f"{opener}{line[:room]}\n{_FENCE}")
            line = line[room:]
        if len(chunk) + len(line) > room:
            parts.append(f"{opener}{chunk.rstrip()}\n{_FENCE}")
            chunk = ""
        chunk += line
    if chunk.strip():
        parts.append(f"{opener}{chunk.rstrip()}\n{_FENCE}")
    return end


class KeyedLocks(Generic[K]):
    """One FIFO lock per key (asyncio.Lock wakes waiters in order), forgotten as soon
    as nobody holds or waits for it, so a bot that met a million chats keeps none."""

    def __init__(self) -> None:
        self._entries: dict[K, tuple[asyncio.Lock, list[int]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        """Hold `key`'s lock for the block, after those who asked before."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = (asyncio.Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._entries[key]


@dataclass(frozen=True)
class PacingPolicy:
    """How fast one adapter may send: per chat, per group chat, and overall."""

    per_chat_interval_s: float = 1.0
    group_per_minute: int = 20
    global_per_second: float = 30.0
    max_rate_limit_retries: int = 3
    max_retry_after_s: float = 60.0


class Pacer:
    """Spaces sends so the platform's limits are met before it has to say 429.

    Per chat: at least `per_chat_interval_s` between two sends. Per group chat: at
    most `group_per_minute` in any 60 s. Overall: a token bucket of
    `global_per_second`. Waiting is `asyncio.sleep`, so other chats go on meanwhile.
    """

    def __init__(self, policy: PacingPolicy) -> None:
        self.policy = policy
        self._next_chat: dict[str, float] = {}
        self._group_sends: dict[str, list[float]] = {}
        self._tokens = policy.global_per_second
        self._refilled = time.monotonic()
        self._locks: dict[str, asyncio.Lock] = {}
        self._global = asyncio.Lock()

    async def wait(self, chat: str, *, group: bool) -> None:
        """Return when a message to `chat` may be sent now."""
        lock = self._locks.setdefault(chat, asyncio.Lock())
        async with lock:
            now = time.monotonic()
            delay = self._next_chat.get(chat, 0.0) - now
            if group:
                recent = [t for t in self._group_sends.get(chat, []) if now - t < 60]
                if len(recent) >= self.policy.group_per_minute:
                    delay = max(delay, 60 - (now - recent[0]))
                self._group_sends[chat] = recent
            if delay > 0:
                await asyncio.sleep(delay)
            await self._take_global()
            sent = time.monotonic()
            self._next_chat[chat] = sent + self.policy.per_chat_interval_s
            if group:
                self._group_sends[chat].append(sent)
        if len(self._locks) > 10_000:
            self._forget_idle(time.monotonic())

    def _forget_idle(self, now: float) -> None:
        # Chats nobody is sending to and whose spacing has run out need no state.
        for chat in [c for c, lock in self._locks.items() if not lock.locked()]:
            recent = any(now - t < 60 for t in self._group_sends.get(chat, ()))
            if self._next_chat.get(chat, 0.0) <= now and not recent:
                self._locks.pop(chat, None)
                self._next_chat.pop(chat, None)
                self._group_sends.pop(chat, None)

    async def _take_global(self) -> None:
        async with self._global:
            while True:
                now = time.monotonic()
                rate = self.policy.global_per_second
                self._tokens = min(rate, self._tokens + (now - self._refilled) * rate)
                self._refilled = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / rate)


@dataclass(frozen=True)
class AdapterServices:
    """What an adapter needs of the bot: the engine, the commands, the people store,
    and the inbox its events are committed to (None: events are handled directly)."""

    engine: PersonaEngine
    commands: Commands
    people: People
    inbox: Inbox | None = None


class Adapter(abc.ABC):
    """A platform connection: turns platform events into `Incoming` for the engine and
    delivers the engine's `Outgoing` under one delivery policy."""

    #: The platform's name, as used in `Scope.platform`.
    platform: str
    #: The longest text one platform message may carry.
    max_message_length: int = 4000
    #: How often the typing indicator is renewed while a reply is generated.
    typing_interval_s: float = 4.0
    #: A reply ready sooner than this shows no typing indicator (saves an API call).
    typing_delay_s: float = 0.0
    pacing: PacingPolicy = PacingPolicy()

    def __init__(self, services: AdapterServices) -> None:
        self.services = services
        self.engine = services.engine
        self.inbox = services.inbox
        self.pacer = Pacer(self.pacing)
        self._sending: KeyedLocks[str] = KeyedLocks()
        #: The running inbox worker (inside `processing()`), else None.
        self.worker: InboxWorker | None = None

    # -- what each platform implements ----------------------------------------------------

    @abc.abstractmethod
    async def run(self, stop: asyncio.Event) -> None:
        """Receive and answer messages until `stop` is set, then finish replies in hand."""

    @abc.abstractmethod
    async def _deliver(self, outgoing: Outgoing, text: str) -> str | None:
        """Send one part of a reply; return the platform's message id.

        Raise `RateLimited` for a 429, `Unreachable` for a 403/blocked/cannot-DM
        answer, `DeliveryError` for anything else the platform refused.
        """

    async def _send_typing(self, scope: Scope) -> None:  # noqa: B027  (optional for a platform)
        """Show "typing…" in the scope's chat (lasts a few seconds on the platform)."""

    async def handle_event(self, event: InboxEvent) -> None:
        """Handle one stored inbox event: parse `event.payload`, run its turn or
        command (through `answer` / `command` + `send`), and return when done.

        Raise (anything) when the event cannot be parsed or handled: the worker
        records it as failed with the reason and goes on with the next event. The
        worker calls this for one chat's events one at a time, in stored order.
        """
        raise AdapterError(f"{self.platform}: this adapter does not take inbox events")

    # -- the inbox ----------------------------------------------------------------------

    async def accept(self, events: Sequence[RawEvent]) -> int:
        """Commit a batch of raw events to the inbox (one transaction, redeliveries
        ignored) and wake the worker; returns how many were new. Acknowledge the
        batch to the platform only after this returns; if it raises, do not.
        """
        if self.inbox is None:
            raise AdapterError(f"{self.platform}: no inbox configured")
        new = await self.inbox.accept(self.platform, events)
        if self.worker is not None and new:
            self.worker.wake()
        return new

    @asynccontextmanager
    async def processing(self, *, drain_timeout_s: float = 120.0) -> AsyncIterator[InboxWorker]:
        """Run recovery and then the inbox worker for as long as the block runs.

        Recovery (unfinished turns resumed or expired, undelivered replies sent) is
        queued in each chat's lane before the first pending event is taken, so a
        chat's old work leaves before its new. Call `accept` for new events inside
        the block. On exit no more events are taken, those in hand are finished (up
        to `drain_timeout_s`), and the rest stay pending for the next start.
        """
        if self.inbox is None:
            raise AdapterError(f"{self.platform}: no inbox configured")
        from bot.inbox.recovery import recover

        worker = InboxWorker(self.inbox, self.platform, self.handle_event)
        self.worker = worker
        await recover(self, worker)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop), name=f"inbox-{self.platform}")
        try:
            yield worker
        finally:
            stop.set()
            await task
            await worker.drain(drain_timeout_s)
            self.worker = None

    def chat_key(self, scope: Scope) -> str:
        """The unit the platform rate-limits by: the channel or thread."""
        return f"{scope.channel}/{scope.thread}" if scope.thread else scope.channel

    # -- the shared policy ------------------------------------------------------------------

    @final
    async def answer(self, incoming: Incoming) -> list[Outgoing]:
        """Run a turn with the typing indicator on, then deliver its replies."""
        try:
            async with self.typing(incoming.scope, enabled=incoming.addressed_to_bot):
                replies = await self.engine.handle(incoming)
        except BotError as exc:  # not stored: nothing was accepted, and the person should know
            log.error("turn.not_accepted", error=str(exc), platform=self.platform)
            return []
        for reply in replies:
            with suppress(DeliveryError):  # recorded by send; one bad send must not stop others
                await self.send(reply)
        return replies

    @asynccontextmanager
    async def typing(self, scope: Scope, *, enabled: bool = True) -> AsyncIterator[None]:
        """Keep the typing indicator alive for as long as the block runs."""
        if not enabled:
            yield
            return

        async def keep_typing() -> None:
            if self.typing_delay_s > 0:
                await asyncio.sleep(self.typing_delay_s)
            while True:
                try:
                    await self._send_typing(scope)
                except Exception as exc:  # typing is cosmetic; never fail a turn for it
                    log.debug("typing.failed", error=str(exc))
                await asyncio.sleep(self.typing_interval_s)

        task = asyncio.create_task(keep_typing(), name=f"typing-{self.platform}")
        try:
            yield
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    @final
    async def send(self, outgoing: Outgoing) -> list[str | None]:
        """Deliver a reply in as many parts as the platform needs, and record the outcome.

        Raises `DeliveryError` (after recording it) when a part could not be delivered.
        """
        ids: list[str | None] = []
        ledger = self.engine.ledger
        chat = self.chat_key(outgoing.scope)
        group = not outgoing.scope.is_direct
        try:
            # One reply at a time per chat: a reply waiting out a 429 must not be
            # overtaken by the next one, nor its parts interleaved with another's.
            async with self._sending.hold(chat):
                for part in split_message(outgoing.text, self.max_message_length):
                    ids.append(await self._send_part(outgoing, part, chat, group))
        except DeliveryError as exc:
            log.warning(
                "deliver.failed",
                platform=self.platform,
                error=str(exc),
                message_id=outgoing.message_id,
            )
            if isinstance(exc, Unreachable):
                await self.services.people.mark_unreachable(
                    self.platform, outgoing.scope.user, exc.reason
                )
            await ledger.record_failure(stage="deliver", error=exc, message_id=outgoing.message_id)
            if outgoing.message_id is not None:
                await ledger.mark_delivered(outgoing.message_id, None, delivered=False)
            raise
        if outgoing.message_id is not None:
            await ledger.mark_delivered(outgoing.message_id, ids[0] if ids else None)
        return ids

    async def _send_part(self, outgoing: Outgoing, text: str, chat: str, group: bool) -> str | None:
        attempts = 0
        while True:
            await self.pacer.wait(chat, group=group)
            try:
                return await self._deliver(outgoing, text)
            except RateLimited as exc:
                attempts += 1
                if attempts > self.pacing.max_rate_limit_retries:
                    raise DeliveryError(f"still rate limited after {attempts - 1} retries") from exc
                wait = min(max(exc.retry_after, 0.0), self.pacing.max_retry_after_s)
                log.info("deliver.rate_limited", platform=self.platform, retry_after=wait)
                await asyncio.sleep(wait)

    # -- events other than messages -------------------------------------------------------

    async def command(self, name: str, args: str, ctx: CommandContext) -> str:
        """Run a slash command the platform received; returns the text to answer with."""
        return await self.services.commands.run(name, args, ctx)

    async def on_reaction(self, reaction: Reaction) -> bool:
        """Store a reaction on one of the persona's messages as feedback."""
        return await self.services.people.record_reaction(reaction)

    async def on_edit(self, scope: Scope, platform_message_id: str, text: str) -> bool:
        """A person edited a message: update the stored text."""
        return await self.services.people.record_edit(scope, platform_message_id, text)

    async def on_delete(self, scope: Scope, platform_message_id: str) -> bool:
        """A person deleted a message: mark it deleted (it leaves prompts and exports)."""
        return await self.services.people.record_delete(scope, platform_message_id)
