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
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

import structlog
from telegram import Bot, BotCommand, Message, ReplyParameters, Update, User
from telegram.constants import ChatAction, ChatType
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
from adapters._telegram_parse import (
    UnparsableUpdate,
    attachments,
    command_of,
    display_name,
    is_addressed,
    parse_update,
    strip_handle,
)
from adapters._telegram_parse import emoji as reaction_emoji
from adapters._telegram_upload import download_persona_yaml
from adapters._telegram_webhook import WebhookServer
from adapters.base import (
    Adapter,
    AdapterServices,
    DeliveryError,
    PacingPolicy,
    RateLimited,
    Unreachable,
)
from bot.commands import CommandContext, CommandReply
from bot.config import TelegramSettings
from bot.errors import AdapterError, PersonaError
from bot.inbox import InboxEvent
from bot.inbox.outbox import deliver_command
from bot.messages import Actor, Incoming, Outgoing, Reaction, Scope
from bot.people import place_key

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
#: Commands whose answers are about one person: never answered in front of a group.
_PRIVATE_ONLY = frozenset({"memory", "forget"})
_BINDING_TTL_S = 30.0  # how soon a switch made by another replica is seen
#: Connections to the Bot API for sends. Far more than 30 messages/s need, so that a
#: send the pacer let go never waits for a connection held by a slow call: a queue
#: here would release its sends in a bunch, over Telegram's 30 in one second.
_POOL_SIZE = 32
#: Connections typing indicators may use, apart from the replies' (never theirs).
_TYPING_POOL = 2


#: One reading of PTB's `RetryAfter.retry_after` (seconds), shared with the poller.
_retry_after = retry_after_s


class TelegramAdapter(Adapter):
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

    # -- updates -----------------------------------------------------------------------

    async def handle_event(self, event: InboxEvent) -> None:
        """Parse one stored update and handle it: a turn, a command, an edit or a
        reaction. Raises `UnparsableUpdate` (with the reason) for one that cannot be
        read; the inbox records it as failed and goes on."""
        update = parse_update(event.payload, self.bot, truncated=event.truncated)
        work = await self._parse(update, event.received_at)
        if work is not None:
            await work

    async def _parse(self, update: Update, stored_at: datetime) -> Awaitable[object] | None:
        if update.message_reaction is not None:
            return await self._reaction(update)
        if update.edited_message is not None:
            return await self._edited(update.edited_message)
        if update.message is not None:
            return await self._message(update.message, stored_at)
        log.debug("telegram.update_ignored", update_id=update.update_id)
        return None

    async def _scope(self, message: Message, user: User) -> Scope:
        chat = message.chat
        private = chat.type == ChatType.PRIVATE
        space = None if private else str(chat.id)
        thread = (
            str(message.message_thread_id)
            if message.is_topic_message and message.message_thread_id
            else None
        )
        return Scope(
            platform=self.platform,
            space=space,
            channel=str(chat.id),
            thread=thread,
            user=str(user.id),
            persona=await self._persona_for(space, str(chat.id)),
        )

    async def _persona_for(self, space: str | None, channel: str) -> str:
        """The persona bound to this chat, else the configured one; cached briefly."""
        place = place_key(self.platform, space, channel)
        cached = self._bindings.get(place)
        now = time.monotonic()
        if cached is not None and cached[1] > now:
            return cached[0]
        persona = await self.services.people.bound_persona(place) or self.persona
        try:
            self.engine.personas.get(persona)
        except PersonaError:  # bound to a persona that is gone: the default serves
            persona = self.persona
        if len(self._bindings) > 50_000:
            self._bindings.clear()
        self._bindings[place] = (persona, now + _BINDING_TTL_S)
        return persona

    def _actor(self, user: User) -> Actor:
        # The name is data from a stranger: kept verbatim here, made safe by the prompt.
        return Actor(
            platform=self.platform,
            id=str(user.id),
            display_name=display_name(user),
            is_bot=bool(user.is_bot),
        )

    async def _message(self, message: Message, stored_at: datetime) -> Awaitable[object] | None:
        user = message.from_user
        if user is None or user.id == self.bot_id:
            return None  # channel posts (and never ourselves)
        if message.chat.type == ChatType.CHANNEL:
            return None
        if user.is_bot and message.chat.type == ChatType.PRIVATE:
            return None  # Telegram lets no bot write to another in private
        command = command_of(message, self.username)
        if command is not None and not user.is_bot:  # a bot's command is only its text
            scope = await self._scope(message, user)
            return self._run_command(message, user, scope, *command)
        text = message.text if message.text is not None else (message.caption or "")
        carried = attachments(message)
        if not text and not carried:
            return None  # joins, pins, titles, polls...: service messages are not speech
        addressed = is_addressed(message, self.bot_id, self.username)
        if addressed and message.chat.type != ChatType.PRIVATE and self.username:
            stripped = strip_handle(text, self.username)
            text = stripped or text
        scope = await self._scope(message, user)
        reply = message.reply_to_message
        incoming = Incoming(
            scope=scope,
            actor=self._actor(user),
            text=text,
            attachments=carried,
            platform_message_id=str(message.message_id),
            reply_to_platform_id=str(reply.message_id) if reply is not None else None,
            addressed_to_bot=addressed,
            received_at=_written_at(message, stored_at),
        )
        return self._turn(incoming, private=message.chat.type == ChatType.PRIVATE)

    async def _turn(self, incoming: Incoming, *, private: bool) -> None:
        if private and incoming.actor.id not in self._reachable:
            # Someone who writes to the bot has (un)blocked it: they can be reached.
            # Recorded before any send of this turn could mark them unreachable again.
            await self.services.people.mark_reachable(self.platform, incoming.actor.id)
            if len(self._reachable) > 100_000:
                self._reachable.clear()
            self._reachable.add(incoming.actor.id)
        await self.answer(incoming)

    async def _run_command(
        self, message: Message, user: User, scope: Scope, name: str, args: str
    ) -> None:
        private = message.chat.type == ChatType.PRIVATE
        moderator = user.id in self.settings.moderators
        if name in _PRIVATE_ONLY and not private:
            reply = CommandReply(
                f"Send /{name} to me in a private chat: what I remember about you is yours."
            )
        else:
            text_file, file_name = None, None
            if name == "persona" and args.split()[:1] == ["upload"] and moderator:
                text_file, file_name, problem = await download_persona_yaml(message, self._http)
                if problem:
                    await self._reply(scope, user, CommandReply(problem), message)
                    return
            ctx = CommandContext(
                scope=scope,
                actor=self._actor(user),
                is_moderator=moderator,
                allow_switch=self.settings.allow_switch,
                attachment_text=text_file,
                attachment_name=file_name,
            )
            reply = await self.services.commands.execute(name, args, ctx)
            if name == "persona":  # a switch takes effect with the next message
                self._bindings.pop(place_key(self.platform, scope.space, scope.channel), None)
        await self._reply(scope, user, reply, message)

    async def _reply(self, scope: Scope, user: User, reply: CommandReply, message: Message) -> None:
        # Through the outbox: stored with this event's done mark, then sent, so a
        # crash from here on delivers the stored reply rather than running it again.
        await deliver_command(
            self, reply, scope, self._actor(user), reply_to_platform_id=str(message.message_id)
        )

    async def _edited(self, message: Message) -> Awaitable[object] | None:
        user = message.from_user
        text = message.text if message.text is not None else message.caption
        if user is None or user.is_bot or text is None:
            return None
        if command_of(message, self.username) is not None:
            return None
        scope = await self._scope(message, user)
        return self.on_edit(scope, str(message.message_id), text)

    async def _reaction(self, update: Update) -> Awaitable[object] | None:
        event = update.message_reaction
        assert event is not None
        user = event.user
        if user is None or user.is_bot:
            return None  # anonymous group admins react without a user
        chat = event.chat
        space = None if chat.type == ChatType.PRIVATE else str(chat.id)
        scope = Scope(
            platform=self.platform,
            space=space,
            channel=str(chat.id),
            user=str(user.id),
            persona=await self._persona_for(space, str(chat.id)),
        )
        old = {reaction_emoji(r) for r in event.old_reaction}
        new = {reaction_emoji(r) for r in event.new_reaction}
        actor = self._actor(user)
        reactions = [
            Reaction(
                scope=scope,
                actor=actor,
                platform_message_id=str(event.message_id),
                emoji=emoji,
                added=added,
            )
            for emojis, added in ((new - old, True), (old - new, False))
            for emoji in sorted(emojis)
        ]
        if not reactions:
            return None
        return _each(self.on_reaction, reactions)

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


def _written_at(message: Message, stored_at: datetime) -> datetime:
    """When the person wrote the message (Telegram's `date`), never later than we
    stored it: a backlog that waited in Telegram while the bot was down is as old as
    it really is, and expires rather than being answered hours late."""
    date = message.date
    if date.tzinfo is None:
        date = date.replace(tzinfo=UTC)
    if stored_at.tzinfo is None:
        stored_at = stored_at.replace(tzinfo=UTC)
    return min(date, stored_at)


def _forget(pending: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def done(future: asyncio.Future[Any]) -> None:
        pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.debug("telegram.typing_failed", error=str(future.exception()))

    return done


async def _each(handler: Callable[[Reaction], Awaitable[bool]], items: list[Reaction]) -> None:
    for item in items:
        await handler(item)
