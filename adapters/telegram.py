"""Telegram through python-telegram-bot v22: private chats, and groups when addressed.

Nothing accepted is lost: every update is committed to the inbox before Telegram
is told it arrived. Long polling is our own getUpdates loop
(`adapters._telegram_intake.UpdatePoller`: fetch a batch, commit it in one
transaction, only then ask with the next offset); a webhook (aiohttp, the
`X-Telegram-Bot-Api-Secret-Token` header checked before anything is read) answers
200 only after the commit, else 503 so that Telegram posts it again. The inbox
worker then calls `handle_event` for each stored update, one chat's in order:
only there is the raw JSON parsed (`Update.de_json`), leniently (invalid Unicode
repaired), so an update the library cannot parse is one failure row with its
reason, never a stopped bot. Command replies and turn replies leave through the
base's outbox in the order of the updates that caused them; replies are plain
text (no `parse_mode`), so Telegram never rejects one for its formatting. PTB
talks HTTP through `adapters._telegram_http.AiohttpRequest`.

Stopping: no more updates are taken, those in hand are finished and their replies
delivered; what was not started stays in the inbox for the next start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import structlog
from telegram import Bot, BotCommand, ReplyParameters
from telegram.constants import ChatAction
from telegram.error import (
    BadRequest,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)

from adapters._telegram_http import AiohttpRequest
from adapters._telegram_intake import RawUpdatesBot, UpdatePoller, retry_after_s
from adapters._telegram_parse import UnparsableUpdate
from adapters._telegram_updates import _TelegramUpdates
from adapters._telegram_webhook import WebhookServer
from adapters.base import (
    AdapterServices,
    DeliveryError,
    PacingPolicy,
    RateLimited,
    Unreachable,
)
from bot.config import TelegramSettings
from bot.errors import AdapterError
from bot.messages import Outgoing, Scope

__all__ = ["ALLOWED_UPDATES", "TELEGRAM_PACING", "TelegramAdapter", "UnparsableUpdate"]

log = structlog.get_logger("adapters.telegram")

#: The update kinds we ask Telegram for (reactions are only sent when asked for).
ALLOWED_UPDATES = ("message", "edited_message", "message_reaction")

#: Telegram's limits: about 1 message/s per chat, 20/min per group, 30/s overall.
#: Sends go out 1/29.5 s apart, and at most 29 in any second and a bit: one send of
#: each second is held in reserve, because a send's way to Telegram adds jitter and
#: Telegram's own count of one second must still come out at 30 or under (measured
#: against the fake: bench/platform_load.py --burst).
TELEGRAM_PACING = PacingPolicy(
    per_chat_interval_s=1.0, group_per_minute=20, global_per_second=29.5, global_reserve=1
)

#: Commands shown in Telegram's command menu (moderator commands are not advertised).
_MENU = (
    ("start", "Meet the persona; what is stored and how to opt out"),
    ("help", "What I can do"),
    ("persona", "Who you are talking with"),
    ("memory", "What I remember about you"),
    ("forget", "Delete a memory, or everything: /forget all"),
    ("optout", "Keep your messages out of training data"),
    ("optin", "Undo /optout"),
    ("timezone", "Your time zone, e.g. /timezone Europe/Berlin"),
)
#: Connections to the Bot API for sends. Far more than 30 messages/s need, so that a
#: send the pacer let go never waits for a connection held by a slow call: a queue
#: here would release its sends in a bunch, over Telegram's 30 in one second.
_POOL_SIZE = 32
#: Connections typing indicators may use, apart from the replies' (never theirs).
_TYPING_POOL = 2


#: One reading of PTB's `RetryAfter.retry_after` (seconds), shared with the poller.
_retry_after = retry_after_s


class TelegramAdapter(_TelegramUpdates):
    """A Telegram bot that lets a persona speak in private chats and groups."""

    platform = "telegram"
    max_message_length = 4096
    typing_interval_s = 4.0  # sendChatAction lasts up to 5 s
    # Every call counts against the bot's flood limits: a quick reply needs no typing.
    typing_delay_s = 0.3
    pacing = TELEGRAM_PACING

    def __init__(
        self,
        services: AdapterServices,
        settings: TelegramSettings,
        *,
        default_persona: str,
        pacing: PacingPolicy | None = None,
        base_file_url: str | None = None,
        drain_timeout_s: float = 120.0,
        poll_timeout_s: int = 10,
    ) -> None:
        """`pacing` replaces Telegram's limits (benchmarks against a fake server);
        `base_file_url` defaults to the file endpoint next to `settings.base_url`."""
        if pacing is not None:
            self.pacing = pacing
        super().__init__(services)
        if settings.token is None:
            raise AdapterError("telegram: no token; set TELEGRAM_TOKEN in the environment")
        self.settings = settings
        self.persona = settings.persona or default_persona
        self.base_file_url = base_file_url
        self.drain_timeout_s = drain_timeout_s
        self.poll_timeout_s = poll_timeout_s
        self.bot_id: int | None = None
        self.username = ""
        self.webhook_port: int | None = None  # the port actually bound (listen_port 0: any)
        #: Set once updates are being taken (polling started, or the webhook registered).
        self.ready = asyncio.Event()
        #: The getUpdates loop, while polling.
        self.poller: UpdatePoller | None = None
        self._bot: RawUpdatesBot | None = None
        self._typing: set[asyncio.Future[Any]] = set()
        self._http = asyncio.Semaphore(_POOL_SIZE)
        self._typing_slots = _TYPING_POOL
        self._bindings: dict[str, tuple[str, float]] = {}
        self._reachable: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------------

    def _build(self) -> RawUpdatesBot:
        assert self.settings.token is not None
        base = (self.settings.base_url or "https://api.telegram.org/bot").rstrip("/")
        file_base = self.base_file_url or base.replace("/bot", "/file/bot", 1)
        # aiohttp instead of PTB's default httpx: see adapters/_telegram_http.py. Sends
        # wait on our own semaphore (`_http`), so the pool never queues inside; long
        # polls hold their own connection.
        return RawUpdatesBot(
            self.settings.token.get_secret_value(),
            base_url=base,
            base_file_url=file_base,
            request=AiohttpRequest(_POOL_SIZE + _TYPING_POOL),
            get_updates_request=AiohttpRequest(1),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Take updates until `stop` is set; then finish those in hand and stop.

        Raises `AdapterError` when the token is rejected, the Bot API cannot be
        reached, or webhook mode lacks its URL.
        """
        if self.settings.mode == "webhook" and not self.settings.webhook_url:
            raise AdapterError("telegram: mode = 'webhook' needs telegram.webhook_url")
        bot = self._build()
        self._bot = bot
        try:
            await bot.initialize()  # getMe: a bad token answers 401 here
        except InvalidToken:
            raise AdapterError(
                "telegram: the Bot API rejected the token (401 Unauthorized); "
                "check TELEGRAM_TOKEN (from @BotFather)"
            ) from None
        except TelegramError as exc:
            raise AdapterError(f"telegram: cannot reach the Bot API: {exc}") from None
        self.bot_id, self.username = bot.id, bot.username
        try:
            with suppress(TelegramError):  # the menu is cosmetic
                await bot.set_my_commands([BotCommand(n, d) for n, d in _MENU])
            async with self.processing(drain_timeout_s=self.drain_timeout_s):
                if self.settings.mode == "webhook":
                    await self._serve_webhook(bot, stop)
                else:
                    await self._poll(bot, stop)
        finally:
            if self._typing:  # let typing requests end before the HTTP session closes
                await asyncio.wait(set(self._typing), timeout=5)
            await bot.shutdown()
            self.ready.clear()
            log.info("telegram.stopped")

    async def _poll(self, bot: RawUpdatesBot, stop: asyncio.Event) -> None:
        leadership = self.services.leadership
        if leadership is not None and not leadership.is_leader:
            # Several workers: only the leader polls (Telegram allows one getUpdates
            # at a time); the others answer what it commits, through the inbox.
            self.ready.set()
            log.info("telegram.started", username=self.username, mode="polling", leader=False)
            if not await leadership.wait(stop):
                return
            log.info("telegram.leading", username=self.username)
        with suppress(TelegramError):  # getUpdates answers 409 while a webhook is set
            await bot.delete_webhook(drop_pending_updates=False)
        poller = UpdatePoller(
            bot, self.accept, allowed_updates=ALLOWED_UPDATES, timeout_s=self.poll_timeout_s
        )
        self.poller = poller
        task = asyncio.create_task(poller.run(stop), name="telegram-poll")
        self.ready.set()
        log.info("telegram.started", username=self.username, mode="polling")
        await task  # returns once `stop` is set (a rejected token raises)

    async def _serve_webhook(self, bot: RawUpdatesBot, stop: asyncio.Event) -> None:
        # Every worker serves the webhook and registers it; with several, they must
        # agree on the secret without being told one: it is derived from the token.
        server = WebhookServer(
            self.settings, self.accept, shared_secret=self.services.cluster is not None
        )
        started = asyncio.Event()
        task = asyncio.create_task(
            server.serve(bot, stop, allowed_updates=ALLOWED_UPDATES, ready=started)
        )
        waiter = asyncio.ensure_future(started.wait())
        try:
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if started.is_set():
            self.webhook_port = server.port
            self.ready.set()
            log.info("telegram.started", username=self.username, mode="webhook")
        await task  # raises what stopped it (a port in use, setWebhook refused)

    # -- sending -----------------------------------------------------------------------

    def chat_key(self, scope: Scope) -> str:
        """Telegram limits per chat, whatever forum topic a message goes to."""
        return scope.channel

    async def _deliver(self, outgoing: Outgoing, text: str) -> str | None:
        bot = self._bot
        if bot is None:
            raise DeliveryError("telegram: not running")
        scope = outgoing.scope
        reply = None
        if not scope.is_direct and outgoing.reply_to_platform_id is not None:
            # In a group, quote the message answered so the thread stays readable.
            reply = ReplyParameters(
                message_id=int(outgoing.reply_to_platform_id), allow_sending_without_reply=True
            )
        try:
            # Plain text: no parse_mode, so no reply can be refused for its markup.
            async with self._http:
                sent = await bot.send_message(
                    chat_id=int(scope.channel),
                    text=text,
                    message_thread_id=int(scope.thread) if scope.thread else None,
                    reply_parameters=reply,
                )
        except RetryAfter as exc:
            raise RateLimited(_retry_after(exc), str(exc)) from exc
        except Forbidden as exc:
            if scope.is_direct:
                self._reachable.discard(scope.user)
                raise Unreachable(f"telegram: {exc.message}") from exc
            # Removed from a group: the person is not unreachable, the group is.
            raise DeliveryError(f"telegram: {exc.message}") from exc
        except BadRequest as exc:
            raise DeliveryError(f"telegram: {exc.message}") from exc
        except (NetworkError, TelegramError) as exc:
            raise DeliveryError(f"telegram: {exc}") from exc
        return str(sent.message_id)

    async def _send_typing(self, scope: Scope) -> None:
        """Best effort: skipped when the typing connections are busy (a backlog), and
        never on a connection a reply could use."""
        bot = self._bot
        if bot is None or self._typing_slots <= 0:
            return
        self._typing_slots -= 1

        async def send() -> None:
            try:
                await bot.send_chat_action(
                    chat_id=int(scope.channel),
                    action=ChatAction.TYPING,
                    message_thread_id=int(scope.thread) if scope.thread else None,
                )
            finally:
                self._typing_slots += 1

        request = asyncio.ensure_future(send())
        self._typing.add(request)
        request.add_done_callback(_forget(self._typing))
        # The base cancels the typing loop as soon as the reply is ready; a request
        # cancelled mid-flight can leave httpx's pool short of a connection, so the
        # request itself always runs to its end.
        await asyncio.shield(request)

    @property
    def bot(self) -> Bot:
        """PTB's bot, while running."""
        if self._bot is None:
            raise AdapterError("telegram: not running")
        return self._bot


def _forget(pending: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def done(future: asyncio.Future[Any]) -> None:
        pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.debug("telegram.typing_failed", error=str(future.exception()))

    return done
