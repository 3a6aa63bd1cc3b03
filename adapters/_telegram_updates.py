"""Telegram's stored updates, read and handled: turns, commands, edits and reactions,
and which persona speaks in a chat (a part of `TelegramAdapter`, adapters/telegram.py).

`TelegramAdapter` owns the state declared here; this module only reads an update the
inbox stored and hands it to the base's turn, command, edit and reaction paths.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog
from telegram import Bot, Message, Update, User
from telegram.constants import ChatType

from adapters._telegram_parse import (
    attachments,
    command_of,
    display_name,
    is_addressed,
    parse_update,
    strip_handle,
)
from adapters._telegram_parse import emoji as reaction_emoji
from adapters._telegram_upload import download_persona_yaml
from adapters.base import Adapter
from bot.commands import CommandContext, CommandReply
from bot.config import TelegramSettings
from bot.errors import PersonaError
from bot.inbox import InboxEvent
from bot.inbox.outbox import deliver_command
from bot.messages import Actor, Incoming, Reaction, Scope
from bot.people import place_key

log = structlog.get_logger("adapters.telegram")

#: Commands whose answers are about one person: never answered in front of a group.
_PRIVATE_ONLY = frozenset({"memory", "forget"})
_BINDING_TTL_S = 30.0  # how soon a switch made by another replica is seen


class _TelegramUpdates(Adapter):
    """How `TelegramAdapter` handles one stored update (a part of it)."""

    settings: TelegramSettings
    persona: str
    bot_id: int | None
    username: str
    _http: asyncio.Semaphore
    _bindings: dict[str, tuple[str, float]]
    _reachable: set[str]

    if TYPE_CHECKING:  # TelegramAdapter's, while running

        @property
        def bot(self) -> Bot: ...

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


async def _each(handler: Callable[[Reaction], Awaitable[bool]], items: list[Reaction]) -> None:
    for item in items:
        await handler(item)
