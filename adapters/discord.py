"""Discord through discord.py 2.x: guild text channels, threads and DMs.

Events become `Incoming`, `Reaction` and edit/delete calls at once; replies go out
through `Adapter.send` (split at 2,000 characters, paced per channel on top of
discord.py's own rate limiter) with mentions that can never ping @everyone, @here or
a role. Slash commands run through `Adapter.command`, like on every platform.

Which persona speaks in a place, first match wins:
a `/persona` switch of the channel (`People.bound_persona`) → config
`"GUILD/CHANNEL"` → config `"GUILD"` → config `"dm"` (DMs) → the default persona.
A thread is its parent channel's place, so it inherits the parent's persona.
A switch comes first because it is only possible where config allows it, and an
answer "X is here now" that config then overrides would be a lie.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import datetime
from typing import Any

import aiohttp
import discord
import structlog

from adapters._discord_client import (
    Routes,
    make_client,
    reset_webhook_routes,
    use_routes_for_webhooks,
)
from adapters._discord_commands import SlashCommands
from adapters._discord_feedback import DiscordFeedback
from adapters._discord_intake import DiscordIntake
from adapters._discord_interactions import INTERACTION_KEY, DiscordInteractions
from adapters._discord_parse import is_addressed, message_attachments, message_text
from adapters._discord_places import DiscordPlaces
from adapters._discord_post import post
from adapters.base import (
    Adapter,
    AdapterServices,
    DeliveryError,
    PacingPolicy,
)
from bot.aio import wait_for
from bot.config import DiscordSettings
from bot.errors import AdapterError, BotError, ConfigError
from bot.inbox import InboxEvent, InboxWorker
from bot.messages import Actor, Incoming, Outgoing, Scope

__all__ = ["DiscordAdapter", "UnparsableMessage"]

log = structlog.get_logger("adapters.discord")

#: A typing indicator not through by then is given up (it is cosmetic).
_TYPING_TIMEOUT_S = 2.0

_INTENTS_HELP = (
    "Discord refused the gateway connection because the MESSAGE CONTENT intent is not "
    "enabled for this bot (close code 4014). Enable it in the Discord Developer Portal: "
    "your application → Bot → Privileged Gateway Intents → MESSAGE CONTENT INTENT, save, "
    "and start the bot again."
)
_LOGIN_REFUSED_HELP = (
    "Discord rejected the bot token (DISCORD_TOKEN): copy a fresh one from the Developer "
    "Portal (your application → Bot → Reset Token) and set DISCORD_TOKEN again."
)


class UnparsableMessage(AdapterError):
    """A stored MESSAGE_CREATE that is not a Discord message discord.py can read."""


def _optional_id(value: Any) -> int | None:
    if value is None:
        return None
    return int(str(value))  # a malformed guild id fails the event, with the reason


class DiscordAdapter(Adapter):
    """One bot account on Discord (sharded when `shard_count` is set; with several
    workers each may connect its own `shard_ids`)."""

    platform = "discord"
    max_message_length = 2000
    typing_interval_s = 8.0  # a Discord typing indicator lasts 10 s
    #: Discord allows 5 messages per 5 s per channel and 50 requests/s per bot; the
    #: library waits out buckets it knows are empty, this keeps bursts from emptying them.
    pacing = PacingPolicy(
        per_chat_interval_s=0.25,
        group_per_minute=60,
        global_per_second=45.0,
        max_rate_limit_retries=3,
        max_retry_after_s=60.0,
    )

    def __init__(
        self,
        services: AdapterServices,
        settings: DiscordSettings,
        *,
        default_persona: str,
        pacing: PacingPolicy | None = None,
        guild_ready_timeout: float = 2.0,
        drain_timeout_s: float = 30.0,
    ) -> None:
        """`pacing` replaces the class's policy (benchmarks); `guild_ready_timeout` is
        how long discord.py waits for more guilds before READY (tests shorten it);
        `drain_timeout_s` bounds how long `run` finishes replies in hand on stop."""
        if pacing is not None:
            self.pacing = pacing
        super().__init__(services)
        if settings.moderator_permission not in discord.Permissions.VALID_FLAGS:
            raise ConfigError(
                f"discord.moderator_permission = {settings.moderator_permission!r} is not a "
                "Discord permission; use one such as manage_guild or manage_messages"
            )
        self.settings = settings
        self.default_persona = default_persona
        self.guild_ready_timeout = guild_ready_timeout
        self.drain_timeout_s = drain_timeout_s
        self._always_on = frozenset(settings.always_on)
        words = [re.escape(w.casefold()) for w in settings.keywords if w.strip()]
        # Whole words only ("tess" must not fire on "contessa"); \b fails next to non-Latin
        # letters, lookarounds on \w do not.
        self._keywords = re.compile(rf"(?<!\w)(?:{'|'.join(words)})(?!\w)") if words else None
        self._client: discord.Client | None = None
        self._routes = Routes(settings.api_base_url, settings.gateway_url)
        self._accepting = False
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()
        #: Set once a gateway session's guilds are known (cleared by each READY).
        self._session_ready = asyncio.Event()
        #: Live and caught-up messages into the inbox (while running).
        self.intake: DiscordIntake | None = None
        self.slash = SlashCommands(self)
        #: Slash commands through the inbox (adapters/_discord_interactions.py).
        self.interactions = DiscordInteractions(self)
        self._feedback = DiscordFeedback(self)
        #: Which persona speaks where, and which channel a thread is in.
        self.places = DiscordPlaces(self)
        #: Set once the gateway session is ready (guilds received).
        self.ready = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, answer until `stop` is set, finish the replies in hand, disconnect.

        Raises `AdapterError` (one, with what to do) for a rejected token, a missing
        MESSAGE_CONTENT intent, or a connection that cannot be kept.
        """
        if self.settings.token is None:
            raise AdapterError("no Discord token: set DISCORD_TOKEN")
        inbox = self.inbox
        if inbox is None:
            raise AdapterError("the Discord adapter needs the inbox (AdapterServices.inbox)")
        token = self.settings.token.get_secret_value()
        self._warn_unknown_personas()
        client = self._client = self._make_client()
        intake = self.intake = DiscordIntake(
            client,
            inbox,
            platform=self.platform,
            accept=self.accept,
            chat_for=self.places.chat_for_channel,
            session_ready=self._session_ready,
            max_messages=self.settings.catch_up_messages,
            max_age_s=self.settings.catch_up_max_age_s,
            bound_channels=self.places.bound_channels(),
        )
        intake.install()
        self.interactions.install(client)
        # Interaction answers go through discord.py's webhook adapter: this task's
        # context (and the gateway tasks started from it) routes them too.
        webhooks = use_routes_for_webhooks(self._routes)
        tree = self.slash.build_tree(client)
        connection: asyncio.Task[None] | None = None
        committing: asyncio.Task[None] | None = None
        try:
            try:
                await client.login(token)
            except discord.LoginFailure:
                raise AdapterError(_LOGIN_REFUSED_HELP) from None
            except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
                raise AdapterError(f"cannot log in to Discord: {exc}") from exc
            await self.slash.sync(tree)
            # Recovery first, then the worker; messages are committed by the intake
            # (even while stopping: what the worker no longer takes stays pending).
            async with self.processing(drain_timeout_s=self.drain_timeout_s):
                self._accepting = True
                committing = asyncio.create_task(intake.run(), name="discord-intake")
                connection = asyncio.create_task(
                    client.connect(reconnect=True), name="discord-gateway"
                )
                stopping = asyncio.create_task(stop.wait(), name="discord-stop")
                try:
                    await asyncio.wait(
                        {connection, stopping, committing}, return_when=asyncio.FIRST_COMPLETED
                    )
                finally:
                    stopping.cancel()
                if committing.done():
                    committing.result()  # the intake never returns: raise what broke it
                if connection.done():
                    raise self._connection_error(connection)
                log.info("discord.stopping", replies_in_hand=self._busy, queued=intake.queued)
                self._accepting = False
                await self._drain()
        finally:
            self._accepting = False
            self.ready.clear()
            try:  # what the worker no longer took: deferred, for the next start to answer
                await self.interactions.defer_for_next_start()
            except Exception as exc:  # the next start finds them past 3 s, and says so
                log.error("discord.interactions_not_deferred", error=str(exc))
            await client.close()
            for task in (connection, committing):
                if task is not None and not task.done():
                    task.cancel()
                    with suppress(asyncio.CancelledError, Exception):
                        await task
            try:  # what arrived while stopping is committed, for the next start
                await intake.flush()
            except Exception as exc:  # a fresh session's catch-up reads it back
                log.error("discord.flush_failed", queued=intake.queued, error=str(exc))
            if webhooks is not None:
                reset_webhook_routes(webhooks)

    async def recover_more(self, worker: InboxWorker) -> int:
        """Recovery's part for Discord alone (bot/inbox/recovery.py): the stored slash
        command replies not yet delivered; returns how many were queued."""
        return await self.interactions.recover(worker)

    def _make_client(self) -> discord.Client:
        intents = discord.Intents.default()
        intents.message_content = True  # privileged: see _INTENTS_HELP
        intents.members = False
        intents.presences = False
        intents.typing = False  # people's typing is noise to us
        options: dict[str, Any] = {
            "intents": intents,
            "chunk_guilds_at_startup": False,
            "member_cache_flags": discord.MemberCacheFlags.none(),
            # Belt and braces: every send passes its own, this covers anything else.
            "allowed_mentions": discord.AllowedMentions.none(),
            # Waits longer than this come back to Adapter.send as RateLimited.
            "max_ratelimit_timeout": 30.0,
            "guild_ready_timeout": self.guild_ready_timeout,
        }
        if self.settings.shard_count is not None:  # 0: as many shards as Discord recommends
            options["shard_count"] = self.settings.shard_count or None
        if self.settings.shard_ids is not None:  # several workers split the shards
            options["shard_ids"] = list(self.settings.shard_ids)
        client = make_client(self._routes, sharded=self.settings.shard_count is not None, **options)
        handlers: dict[str, Callable[..., Awaitable[None]]] = {
            "on_ready": self._on_ready,
            "on_raw_reaction_add": self._feedback.on_raw_reaction,
            "on_raw_reaction_remove": self._feedback.on_raw_reaction,
            "on_raw_message_edit": self._feedback.on_raw_edit,
            "on_raw_message_delete": self._feedback.on_raw_delete,
            "on_raw_bulk_message_delete": self._feedback.on_raw_bulk_delete,
        }
        for name, handler in handlers.items():
            setattr(client, name, handler)  # what Client.event does, without the decorator
        return client

    def _connection_error(self, connection: asyncio.Task[None]) -> AdapterError:
        exc = None if connection.cancelled() else connection.exception()
        if isinstance(exc, discord.PrivilegedIntentsRequired):
            return AdapterError(_INTENTS_HELP)
        if isinstance(exc, discord.ConnectionClosed) and exc.code == 4004:
            return AdapterError(_LOGIN_REFUSED_HELP)
        if isinstance(exc, discord.ConnectionClosed) and exc.code in (4013, 4014):
            return AdapterError(_INTENTS_HELP)
        if exc is None:
            return AdapterError("the Discord connection closed unexpectedly")
        return AdapterError(f"the Discord connection failed: {type(exc).__name__}: {exc}")

    async def _drain(self) -> None:
        try:
            await wait_for(self._idle.wait(), timeout=self.drain_timeout_s)
        except TimeoutError:
            log.warning("discord.drain_timeout", replies_in_hand=self._busy)

    @asynccontextmanager
    async def _in_hand(self) -> AsyncIterator[bool]:
        """Counts an event as in hand while it runs; yields False once stopping."""
        if not self._accepting:
            yield False
            return
        self._busy += 1
        self._idle.clear()
        try:
            yield True
        finally:
            self._busy -= 1
            if self._busy == 0:
                self._idle.set()

    def _warn_unknown_personas(self) -> None:
        personas = self.services.commands.personas
        for place, persona in self.settings.personas.items():
            if persona not in personas.ids():
                log.warning("discord.unknown_persona", place=place, persona=persona)

    async def _on_ready(self) -> None:
        client = self._require_client()
        log.info("discord.ready", user=str(client.user), guilds=len(client.guilds))
        self._session_ready.set()
        self.ready.set()

    @property
    def pending_work(self) -> int:
        """Messages not yet committed plus events and jobs in the worker's lanes, plus
        reactions, edits and commands in hand: 0 once all that arrived is handled."""
        queued = self.intake.queued if self.intake is not None else 0
        queued += self.interactions.queued
        backlog = self.worker.backlog if self.worker is not None else 0
        return queued + backlog + self._busy

    def _require_client(self) -> discord.Client:
        if self._client is None:
            raise DeliveryError("the Discord adapter is not running")
        return self._client

    def _bot_name(self) -> str | None:
        user = self._require_client().user
        return None if user is None else user.display_name

    def _me(self) -> int:
        user = self._require_client().user
        if user is None:
            raise DeliveryError("not logged in to Discord")
        return user.id

    # -- where things happen --------------------------------------------------------------

    async def _scope(self, guild: int | None, channel_id: int, user: int) -> Scope:
        return await self.places.scope(guild, channel_id, user)

    def _actor(self, user: discord.abc.User) -> Actor:
        return Actor(
            platform=self.platform,
            id=str(user.id),
            display_name=user.display_name[:256],
            is_bot=user.bot,
        )

    # -- messages -----------------------------------------------------------------------

    async def handle_event(self, event: InboxEvent) -> None:
        """One stored MESSAGE_CREATE (live or caught up): parsed here, answered or
        stored as context. Raises `UnparsableMessage` for a payload that is not a
        Discord message; the inbox records it as failed and goes on. An interaction
        (a slash command) is answered by `self.interactions`."""
        if event.key.startswith(INTERACTION_KEY):
            await self.interactions.handle(event)
            return
        if event.truncated:
            raise UnparsableMessage("the message was cut at the inbox's size limit")
        try:
            data = json.loads(event.payload)
            if not isinstance(data, dict):
                raise TypeError(f"a JSON {type(data).__name__}, not an object")
            guild = _optional_id(data.get("guild_id"))
            message = self._parse_message(data)
            # A message that waited (in Discord's history while we were away) is as old
            # as when it was written: the engine expires it rather than answer it late.
            written = discord.utils.snowflake_time(message.id)
            incoming = await self._incoming(
                message, guild=guild, received_at=min(written, event.received_at)
            )
        except BotError:  # the store or the config, not the payload: failed as it is
            raise
        except Exception as exc:  # whatever discord.py's model raises for a bad payload
            raise UnparsableMessage(
                f"not a Discord message: {type(exc).__name__}: {exc}"[:500]
            ) from exc
        if incoming is not None:
            await self.answer(incoming)

    def _parse_message(self, data: dict[str, Any]) -> discord.Message:
        # What discord.py's own MESSAGE_CREATE parser does, from the stored JSON.
        state: Any = self._require_client()._connection
        channel, _ = state._get_guild_channel(data)
        return discord.Message(state=state, channel=channel, data=data)  # type: ignore[arg-type]

    async def _incoming(
        self, message: discord.Message, *, guild: int | None, received_at: datetime
    ) -> Incoming | None:
        """The message as an `Incoming`, or None when it is not conversation. Every
        part of the payload it reads is read here, so a malformed one fails here."""
        me = self._me()
        author = message.author
        if author.id == me:
            return None
        if author.bot and self.settings.ignore_bots:
            self.groups.dropped(self.platform, str(message.channel.id), "from_bot")
            return None
        # Joins, pins, boosts, thread starters and the like are not conversation.
        if message.type not in (discord.MessageType.default, discord.MessageType.reply):
            return None
        # The guild from the payload, not from the cache: a guild not (yet) cached must
        # not turn a server message into a DM (which is always answered).
        scope = await self._scope(guild, message.channel.id, author.id)
        if guild is None:  # they wrote to us: a refused DM earlier no longer counts
            await self.services.people.mark_reachable(self.platform, str(author.id))
        reference = message.reference
        return Incoming(
            scope=scope,
            actor=self._actor(author),
            text=message_text(message, me, self._bot_name()),
            attachments=message_attachments(message),
            platform_message_id=str(message.id),
            reply_to_platform_id=(
                str(reference.message_id)
                if reference is not None and reference.message_id
                else None
            ),
            addressed_to_bot=is_addressed(
                message, me, scope, always_on=self._always_on, keywords=self._keywords
            ),
            received_at=received_at,
            age_restricted=_age_restricted(message.channel, guild),
        )

    # -- delivery -----------------------------------------------------------------------

    async def _deliver_part(self, outgoing: Outgoing, text: str, part: int) -> str | None:
        """One part of a reply, with a nonce from the reply's row and the part's index
        and `enforce_nonce`: a resend after a crash returns the message Discord already
        made instead of making it again."""
        return await self._post(
            outgoing, text, first=part == 0, nonce=self.part_nonce(outgoing, part)
        )

    async def _deliver(self, outgoing: Outgoing, text: str) -> str | None:
        # (Only for a caller without a part index: the first part of a split is a
        # prefix of the text, except for a re-fenced code block.)
        return await self._post(
            outgoing, text, first=outgoing.text.strip().startswith(text), nonce=None
        )

    async def _post(
        self, outgoing: Outgoing, text: str, *, first: bool, nonce: str | None
    ) -> str | None:
        return await post(self._require_client(), outgoing, text, first=first, nonce=nonce)

    async def _send_typing(self, scope: Scope) -> None:
        # Best effort (the base asks the pacer first): never left waiting out a 429
        # in discord.py's retry loop, where it would hold a request slot.
        client = self._require_client()
        target = client.get_partial_messageable(int(scope.thread or scope.channel))
        await wait_for(target.typing(), timeout=_TYPING_TIMEOUT_S)


def _age_restricted(channel: Any, guild: int | None) -> bool:
    """Discord's age-restricted flag of a message's place (a thread has its parent's).
    False in a DM (Discord has no flag there) and for a channel not known (not
    cached): a mature persona speaks only where Discord says the place is for adults
    (bot/safety/rating.py)."""
    if guild is None:
        return False
    is_nsfw = getattr(channel, "is_nsfw", None)
    if not callable(is_nsfw):
        return False
    try:
        return bool(is_nsfw())
    except Exception:  # a partial channel whose parent is not cached
        return False
