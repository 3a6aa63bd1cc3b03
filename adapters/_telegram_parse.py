"""Reading a stored Telegram update: the raw JSON parsed by python-telegram-bot
(leniently: invalid Unicode repaired first), then what a message carries: whether
it is addressed to us, a command for us, its attachments described for the model,
reaction emoji, our @handle taken out of a group text.

Pure functions: no I/O, no state. `parse_update` raises `UnparsableUpdate` with
the reason for anything it cannot read, and nothing else.
"""

from __future__ import annotations

import json

from telegram import Bot, Message, ReactionTypeCustomEmoji, ReactionTypeEmoji, Update, User
from telegram.constants import ChatType, MessageEntityType

from adapters._telegram_intake import repaired
from bot.errors import AdapterError
from bot.messages import Attachment

__all__ = [
    "UnparsableUpdate",
    "attachments",
    "command_of",
    "display_name",
    "emoji",
    "is_addressed",
    "parse_update",
    "strip_handle",
]


class UnparsableUpdate(AdapterError):
    """A stored update that is not one python-telegram-bot can read; the message says
    why. Raised by `handle_event`, so the inbox records it as the event's failure."""


def parse_update(payload: str, bot: Bot, *, truncated: bool = False) -> Update:
    """The update stored as `payload`, parsed for `bot`; `UnparsableUpdate` if not one."""
    if truncated:
        raise UnparsableUpdate("the update was cut at the inbox's size limit")
    try:
        data = json.loads(payload)
    except ValueError as exc:
        raise UnparsableUpdate(f"not JSON: {exc}") from None
    update_id = data.get("update_id") if isinstance(data, dict) else None
    if isinstance(update_id, bool) or not isinstance(update_id, int):
        raise UnparsableUpdate("not an update object (no integer update_id)")
    try:
        return Update.de_json(repaired(data), bot)
    except Exception as exc:  # PTB raises whatever the constructor it calls raises
        raise UnparsableUpdate(
            f"python-telegram-bot cannot parse it: {type(exc).__name__}: {str(exc)[:500]}"
        ) from None


def display_name(user: User) -> str:
    """The person's name as Telegram shows it (first and last), at most 256
    characters; parts that are missing or not text are left out, never fatal."""
    parts = [p for p in (user.first_name, user.last_name) if isinstance(p, str) and p]
    return " ".join(parts)[:256]


def is_addressed(message: Message, bot_id: int | None, username: str) -> bool:
    """Meant for the bot: a private chat, a reply to the bot, or a mention of it."""
    if message.chat.type == ChatType.PRIVATE:
        return True
    reply = message.reply_to_message
    if reply is not None and reply.from_user is not None and reply.from_user.id == bot_id:
        return True
    handle = f"@{username}".lower()
    entities = message.parse_entities() or message.parse_caption_entities()
    for entity, value in entities.items():
        if entity.type == MessageEntityType.MENTION and value.lower() == handle:
            return True
        if (
            entity.type == MessageEntityType.TEXT_MENTION
            and entity.user is not None
            and entity.user.id == bot_id
        ):
            return True
    return False


def command_of(message: Message, username: str) -> tuple[str, str] | None:
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
    if target and target.lower() != username.lower():
        return None  # /cmd@OtherBot in a group: not ours
    return name.lower(), text[first.length :].strip()


def emoji(reaction: object) -> str:
    """A reaction as text: the emoji itself, `custom:ID`, or the reaction's type."""
    if isinstance(reaction, ReactionTypeEmoji):
        return reaction.emoji
    if isinstance(reaction, ReactionTypeCustomEmoji):
        return f"custom:{reaction.custom_emoji_id}"
    return str(getattr(reaction, "type", "reaction"))


def strip_handle(text: str, username: str) -> str:
    """`text` without the first "@username" in it (any case)."""
    handle = f"@{username}"
    lowered = text.lower()
    at = lowered.find(handle.lower())
    if at == -1:
        return text
    return (text[:at] + text[at + len(handle) :]).strip()


def attachments(message: Message) -> tuple[Attachment, ...]:
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
