"""Telegram through python-telegram-bot v22: private chats, and groups when addressed.

Updates arrive by long polling (default) or by a webhook that we serve ourselves
(aiohttp, the `X-Telegram-Bot-Api-Secret-Token` header checked before anything is
read). Either way they land on PTB's update queue and reach `_on_update`, which
starts a task per update: it is parsed into `Incoming`/`Reaction`/an edit (in
arrival order within its chat) and its turn runs, so one slow reply never holds up
other chats. Replies go out through the base's delivery policy as plain text (no
`parse_mode`), so Telegram never rejects a reply for its formatting. PTB talks HTTP
through `adapters._telegram_http.AiohttpRequest`.

Stopping: no more updates are taken, the updates already fetched are processed,
replies in hand are finished and delivered, then PTB shuts down.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import timedelta
from typing import Any

import structlog
from aiohttp import web
from telegram import (
    Bot,
    BotCommand,
    Message,
    ReactionTypeCustomEmoji,
    ReactionTypeEmoji,
    ReplyParameters,
    Update,
    User,
)
from telegram.constants import ChatAction, ChatType, MessageEntityType
from telegram.error import (
    BadRequest,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.ext import Application, ApplicationBuilder, ContextTypes, TypeHandler
from telegram.warnings import PTBDeprecationWarning

from adapters._telegram_http import AiohttpRequest
from adapters.base import (
    Adapter,
    AdapterServices,
    DeliveryError,
    KeyedLocks,
    PacingPolicy,
    RateLimited,
    Unreachable,
)
from bot.commands import CommandContext
from bot.config import TelegramSettings
from bot.errors import AdapterError, PersonaError
from bot.messages import Actor, Attachment, Incoming, Outgoing, Reaction, Scope
from bot.people import place_key

__all__ = ["ALLOWED_UPDATES", "TELEGRAM_PACING", "TelegramAdapter"]

log = structlog.get_logger("adapters.telegram")

#: The update kinds we ask Telegram for (reactions are only sent when asked for).
ALLOWED_UPDATES = ("message", "edited_message", "message_reaction")

#: Telegram's limits: about 1 message/s per chat, 20/min per group, 30/s overall.
TELEGRAM_PACING = PacingPolicy(per_chat_interval_s=1.0, group_per_minute=20, global_per_second=30)

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
_MAX_UPLOAD_BYTES = 1_000_000
_BINDING_TTL_S = 30.0  # how soon a switch made by another replica is seen
#: Connections to the Bot API; 8 carry far more than Telegram's 30 messages/s.
_POOL_SIZE = 8


def _seconds(value: int | float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _retry_after(exc: RetryAfter) -> float:
    """`retry_after` as seconds: PTB gives an int, or a timedelta with PTB_TIMEDELTA=1."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        return _seconds(exc.retry_after)


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
        max_in_flight: int = 2000,
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
        self.bot_id: int | None = None
        self.username = ""
        self.webhook_port: int | None = None  # the port actually bound (listen_port 0: any)
        #: Set once updates are being taken (polling started, or the webhook registered).
        self.ready = asyncio.Event()
        self._app: Application[Any, Any, Any, Any, Any, Any] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._order: KeyedLocks[int] = KeyedLocks()
        self._typing: set[asyncio.Future[Any]] = set()
        self._http = asyncio.Semaphore(_POOL_SIZE)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._bindings: dict[str, tuple[str, float]] = {}
        self._reachable: set[str] = set()
        self._webhook_secret = ""

    # -- lifecycle ---------------------------------------------------------------------

    def _build(self) -> Application[Any, Any, Any, Any, Any, Any]:
        assert self.settings.token is not None
        builder = ApplicationBuilder().token(self.settings.token.get_secret_value())
        if self.settings.base_url:
            base = self.settings.base_url.rstrip("/")
            builder = builder.base_url(base)
            file_base = self.base_file_url or base.replace("/bot", "/file/bot", 1)
            builder = builder.base_file_url(file_base)
        elif self.base_file_url:
            builder = builder.base_file_url(self.base_file_url)
        if self.settings.mode == "webhook":
            builder = builder.updater(None)
        # aiohttp instead of PTB's default httpx: see adapters/_telegram_http.py. Sends
        # wait on our own semaphore (`_http`), so the pool never queues inside.
        builder = builder.request(AiohttpRequest(_POOL_SIZE))
        if self.settings.mode != "webhook":
            # Long polls hold their own connection for up to 10 s.
            builder = builder.get_updates_request(AiohttpRequest(1))
        app = builder.build()
        app.add_handler(TypeHandler(Update, self._on_update))
        app.add_error_handler(self._on_error)
        return app

    async def run(self, stop: asyncio.Event) -> None:
        """Take updates until `stop` is set; then drain and shut PTB down.

        Raises `AdapterError` when the token is rejected, the Bot API cannot be
        reached, or webhook mode lacks its URL.
        """
        if self.settings.mode == "webhook" and not self.settings.webhook_url:
            raise AdapterError("telegram: mode = 'webhook' needs telegram.webhook_url")
        app = self._build()
        self._app = app
        try:
            await app.initialize()  # getMe: a bad token answers 401 here
        except InvalidToken:
            raise AdapterError(
                "telegram: the Bot API rejected the token (401 Unauthorized); "
                "check TELEGRAM_TOKEN (from @BotFather)"
            ) from None
        except TelegramError as exc:
            raise AdapterError(f"telegram: cannot reach the Bot API: {exc}") from None
        self.bot_id, self.username = app.bot.id, app.bot.username
        runner: web.AppRunner | None = None
        try:
            await app.start()
            with suppress(TelegramError):  # the menu is cosmetic
                await app.bot.set_my_commands([BotCommand(n, d) for n, d in _MENU])
            if self.settings.mode == "webhook":
                runner = await self._start_webhook(app)
            else:
                assert app.updater is not None
                await app.updater.start_polling(
                    allowed_updates=list(ALLOWED_UPDATES),
                    error_callback=self._on_polling_error,
                )
            self.ready.set()
            log.info("telegram.started", username=self.username, mode=self.settings.mode)
            await stop.wait()
        finally:
            await self._shutdown(app, runner)

    async def _shutdown(
        self, app: Application[Any, Any, Any, Any, Any, Any], runner: web.AppRunner | None
    ) -> None:
        # Stop taking updates first; everything already fetched (and so confirmed to
        # Telegram) is still processed by app.stop(), then the replies are drained.
        if app.updater is not None and app.updater.running:
            await app.updater.stop()
        if runner is not None:
            await runner.cleanup()
        if app.running:
            await app.stop()
        await self.drain(self.drain_timeout_s)
        await app.shutdown()
        log.info("telegram.stopped")

    async def drain(self, timeout_s: float) -> bool:
        """Wait for the turns in hand to be answered and delivered; True if all were."""
        pending: set[asyncio.Future[Any]] = set()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
        if pending:
            log.warning("telegram.drain_timeout", replies_in_flight=len(pending))
        if self._typing:  # let typing requests end before the HTTP session closes
            await asyncio.wait(set(self._typing), timeout=5)
        return not pending

    async def _start_webhook(self, app: Application[Any, Any, Any, Any, Any, Any]) -> web.AppRunner:
        secret = self.settings.webhook_secret
        # Without a configured secret a random one is registered for this run, so the
        # route never accepts unauthenticated posts.
        self._webhook_secret = secret.get_secret_value() if secret else secrets.token_urlsafe(32)
        web_app = web.Application(client_max_size=2 * 1024 * 1024)
        web_app.router.add_post(self.settings.webhook_path, self._webhook)
        runner = web.AppRunner(web_app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.listen_host, self.settings.listen_port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise AdapterError(
                f"telegram: cannot listen on {self.settings.listen_host}:"
                f"{self.settings.listen_port} for the webhook: {exc.strerror}"
            ) from None
        sockets = getattr(site._server, "sockets", None)
        if sockets:
            self.webhook_port = int(sockets[0].getsockname()[1])
        assert self.settings.webhook_url is not None
        try:
            await app.bot.set_webhook(
                self.settings.webhook_url,
                secret_token=self._webhook_secret,
                allowed_updates=list(ALLOWED_UPDATES),
            )
        except TelegramError as exc:
            await runner.cleanup()
            raise AdapterError(f"telegram: setWebhook failed: {exc}") from None
        return runner

    async def _webhook(self, request: web.Request) -> web.Response:
        """Telegram posts one update; only a request carrying our secret is read."""
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not hmac.compare_digest(given.encode(), self._webhook_secret.encode()):
            log.warning("telegram.webhook_bad_secret", remote=request.remote)
            return web.Response(status=401, text="wrong or missing secret token")
        app = self._app
        if app is None:
            return web.Response(status=503)
        try:
            data = await request.json(loads=json.loads)
            if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
                raise ValueError("not an update object")
            update = Update.de_json(data, app.bot)
        except Exception as exc:  # any malformed body: 400, and nothing is queued
            log.warning("telegram.webhook_bad_body", error=str(exc)[:200])
            return web.Response(status=400, text="malformed update")
        await app.update_queue.put(update)
        return web.Response(text="ok")

    # -- updates -----------------------------------------------------------------------

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("telegram.ptb_error", error=repr(context.error))

    def _on_polling_error(self, error: TelegramError) -> None:
        log.warning("telegram.polling_error", error=str(error))

    async def _on_update(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Start the work of one update; PTB calls this for updates in order.

        Nothing is awaited here but a free slot (backpressure), so a slow database
        read never holds up the updates behind it. Order within a chat is kept by
        `_ordered`: each update's parsing (persona look-up) runs in arrival order,
        and its turn is started before the next update of that chat is parsed.
        """
        await self._slots.acquire()  # at most max_in_flight updates in hand
        task = asyncio.create_task(self._process(update), name="telegram-update")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _process(self, update: Update) -> None:
        try:
            async with self._ordered(_chat_of(update)):
                work = await self._parse(update)
                if work is None:
                    return
                # Scheduled now, it runs before the next update of this chat is
                # parsed (the event loop is FIFO), so the engine queues turns in order.
                running = asyncio.ensure_future(work)
            await running
        except DeliveryError:
            pass  # recorded by send
        except Exception as exc:  # one odd update must never stop the others
            log.warning("telegram.update_failed", error=repr(exc), update_id=update.update_id)
        finally:
            self._slots.release()

    @asynccontextmanager
    async def _ordered(self, chat: int | None) -> AsyncIterator[None]:
        """Hold `chat` while an update of it is parsed; FIFO, dropped when unused."""
        if chat is None:
            yield
            return
        async with self._order.hold(chat):
            yield

    async def _parse(self, update: Update) -> Awaitable[object] | None:
        if update.message_reaction is not None:
            return await self._reaction(update)
        if update.edited_message is not None:
            return await self._edited(update.edited_message)
        if update.message is not None:
            return await self._message(update.message)
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
            platform=self.platform, id=str(user.id), display_name=user.full_name[:256], is_bot=False
        )

    def _addressed(self, message: Message) -> bool:
        if message.chat.type == ChatType.PRIVATE:
            return True
        reply = message.reply_to_message
        if reply is not None and reply.from_user is not None and reply.from_user.id == self.bot_id:
            return True
        handle = f"@{self.username}".lower()
        entities = message.parse_entities() or message.parse_caption_entities()
        for entity, value in entities.items():
            if entity.type == MessageEntityType.MENTION and value.lower() == handle:
                return True
            if (
                entity.type == MessageEntityType.TEXT_MENTION
                and entity.user is not None
                and entity.user.id == self.bot_id
            ):
                return True
        return False

    def _command(self, message: Message) -> tuple[str, str] | None:
        """(name, args) when the message is a command meant for us."""
        text = message.text if message.text is not None else message.caption
        entities = message.entities if message.text is not None else message.caption_entities
        if not text or not entities:
            return None
        first = entities[0]
        if first.type != MessageEntityType.BOT_COMMAND or first.offset != 0:
            return None
        word = text[1 : first.length]
        name, _, target = word.partition("@")
        if target and target.lower() != self.username.lower():
            return None  # /cmd@OtherBot in a group: not ours
        return name.lower(), text[first.length :].strip()

    async def _message(self, message: Message) -> Awaitable[object] | None:
        user = message.from_user
        if user is None or user.is_bot:
            return None  # channel posts, other bots (and never ourselves)
        if message.chat.type == ChatType.CHANNEL:
            return None
        command = self._command(message)
        if command is not None:
            scope = await self._scope(message, user)
            return self._run_command(message, user, scope, *command)
        text = message.text if message.text is not None else (message.caption or "")
        attachments = _attachments(message)
        if not text and not attachments:
            return None  # joins, pins, titles, polls...: service messages are not speech
        addressed = self._addressed(message)
        if addressed and message.chat.type != ChatType.PRIVATE and self.username:
            stripped = _strip_handle(text, self.username)
            text = stripped or text
        scope = await self._scope(message, user)
        reply = message.reply_to_message
        incoming = Incoming(
            scope=scope,
            actor=self._actor(user),
            text=text,
            attachments=attachments,
            platform_message_id=str(message.message_id),
            reply_to_platform_id=str(reply.message_id) if reply is not None else None,
            addressed_to_bot=addressed,
        )
        return self._turn(incoming, private=message.chat.type == ChatType.PRIVATE)

    async def _turn(self, incoming: Incoming, *, private: bool) -> None:
        # No await before `answer`: the engine must queue this turn before the next
        # update of the chat is parsed (see `_process`).
        if private and incoming.actor.id not in self._reachable:
            # Someone who writes to the bot has (un)blocked it: they can be reached.
            # Queued on the database before any send of this turn could mark them
            # unreachable again, so the two never apply out of order.
            reachable = asyncio.ensure_future(
                self.services.people.mark_reachable(self.platform, incoming.actor.id)
            )
            if len(self._reachable) > 100_000:
                self._reachable.clear()
            self._reachable.add(incoming.actor.id)
            await asyncio.gather(self.answer(incoming), reachable)
            return
        await self.answer(incoming)

    async def _run_command(
        self, message: Message, user: User, scope: Scope, name: str, args: str
    ) -> None:
        private = message.chat.type == ChatType.PRIVATE
        moderator = user.id in self.settings.moderators
        if name in _PRIVATE_ONLY and not private:
            answer = f"Send /{name} to me in a private chat: what I remember about you is yours."
        else:
            text_file, file_name = None, None
            if name == "persona" and args.split()[:1] == ["upload"] and moderator:
                text_file, file_name, problem = await self._download_yaml(message)
                if problem:
                    await self._reply(scope, problem, message)
                    return
            ctx = CommandContext(
                scope=scope,
                actor=self._actor(user),
                is_moderator=moderator,
                allow_switch=self.settings.allow_switch,
                attachment_text=text_file,
                attachment_name=file_name,
            )
            answer = await self.command(name, args, ctx)
            if name == "persona":  # a switch takes effect with the next message
                self._bindings.pop(place_key(self.platform, scope.space, scope.channel), None)
        await self._reply(scope, answer, message)

    async def _reply(self, scope: Scope, text: str, message: Message) -> None:
        out = Outgoing(scope=scope, text=text, reply_to_platform_id=str(message.message_id))
        with suppress(DeliveryError):  # recorded by send
            await self.send(out)

    async def _download_yaml(self, message: Message) -> tuple[str | None, str | None, str | None]:
        """The YAML of `/persona upload`: a document sent with the command, or the one
        the command replies to. Returns (text, file name, problem)."""
        document = message.document
        if document is None and message.reply_to_message is not None:
            document = message.reply_to_message.document
        if document is None:
            return None, None, None  # Commands answers how to attach it
        if document.file_size is not None and document.file_size > _MAX_UPLOAD_BYTES:
            return None, None, f"That file is too large for a persona ({document.file_size} bytes)."
        try:
            async with self._http:
                file = await document.get_file()
                data = bytes(await file.download_as_bytearray())
        except TelegramError as exc:
            return None, None, f"I could not download the file: {exc}"
        if len(data) > _MAX_UPLOAD_BYTES:
            return None, None, "That file is too large for a persona."
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None, None, "The persona file must be UTF-8 text (YAML)."
        return text, document.file_name or "upload.yaml", None

    async def _edited(self, message: Message) -> Awaitable[object] | None:
        user = message.from_user
        text = message.text if message.text is not None else message.caption
        if user is None or user.is_bot or text is None or self._command(message) is not None:
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
        old = {_emoji(r) for r in event.old_reaction}
        new = {_emoji(r) for r in event.new_reaction}
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
        app = self._app
        if app is None:
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
                sent = await app.bot.send_message(
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
        app = self._app
        if app is None:
            return

        async def send() -> None:
            async with self._http:
                await app.bot.send_chat_action(
                    chat_id=int(scope.channel),
                    action=ChatAction.TYPING,
                    message_thread_id=int(scope.thread) if scope.thread else None,
                )

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
        if self._app is None:
            raise AdapterError("telegram: not running")
        bot: Bot = self._app.bot
        return bot


def _chat_of(update: Update) -> int | None:
    """The chat an update belongs to, for ordering (None: not one we order)."""
    for message in (update.message, update.edited_message):
        if message is not None:
            return message.chat.id
    if update.message_reaction is not None:
        return update.message_reaction.chat.id
    return None


def _forget(pending: set[asyncio.Future[Any]]) -> Callable[[asyncio.Future[Any]], None]:
    def done(future: asyncio.Future[Any]) -> None:
        pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            log.debug("telegram.typing_failed", error=str(future.exception()))

    return done


async def _each(handler: Callable[[Reaction], Awaitable[bool]], items: list[Reaction]) -> None:
    for item in items:
        await handler(item)


def _emoji(reaction: object) -> str:
    if isinstance(reaction, ReactionTypeEmoji):
        return reaction.emoji
    if isinstance(reaction, ReactionTypeCustomEmoji):
        return f"custom:{reaction.custom_emoji_id}"
    return str(getattr(reaction, "type", "reaction"))


def _strip_handle(text: str, username: str) -> str:
    handle = f"@{username}"
    lowered = text.lower()
    at = lowered.find(handle.lower())
    if at == -1:
        return text
    return (text[:at] + text[at + len(handle) :]).strip()


def _attachments(message: Message) -> tuple[Attachment, ...]:
    """What besides text a message carries, described for the model."""
    found: list[Attachment] = []
    if message.sticker is not None:
        sticker = message.sticker
        what = f"a sticker {sticker.emoji or ''}".strip()
        if sticker.set_name:
            what += f" from the set {sticker.set_name}"
        found.append(Attachment(kind="sticker", description=what))
    if message.photo:
        biggest = message.photo[-1]
        found.append(
            Attachment(
                kind="image",
                description=f"a photo, {biggest.width}x{biggest.height}",
                size_bytes=biggest.file_size,
            )
        )
    if message.document is not None and message.animation is None:  # a GIF is both
        doc = message.document
        found.append(
            Attachment(
                kind="file",
                filename=doc.file_name,
                description=doc.mime_type or "a file",
                size_bytes=doc.file_size,
            )
        )
    for kind, item in (
        ("voice", message.voice),
        ("audio", message.audio),
        ("video", message.video),
        ("animation", message.animation),
        ("video note", message.video_note),
    ):
        if item is not None:
            found.append(
                Attachment(
                    kind=kind,
                    description=f"{kind}, {getattr(item, 'duration', '?')} s",
                    size_bytes=getattr(item, "file_size", None),
                )
            )
    if message.location is not None:
        found.append(Attachment(kind="location", description="a shared location"))
    if message.contact is not None:
        found.append(Attachment(kind="contact", description="a shared contact"))
    return tuple(found)
