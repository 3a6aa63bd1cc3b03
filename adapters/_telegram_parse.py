"""What a Telegram message carries, read from PTB's parsed objects: attachments
described for the model, reaction emoji, our @handle taken out of a group text.

Pure functions of the parsed update: no I/O, no state.
"""

from __future__ import annotations

from telegram import Message, ReactionTypeCustomEmoji, ReactionTypeEmoji

from bot.messages import Attachment

__all__ = ["attachments", "emoji", "strip_handle"]


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
