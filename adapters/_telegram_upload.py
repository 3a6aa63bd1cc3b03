"""`/persona upload`: the YAML file a moderator sent, fetched from Telegram within
bounds (size announced and read, UTF-8), or the reason it cannot be used."""

from __future__ import annotations

import asyncio

from telegram import Message
from telegram.error import TelegramError

__all__ = ["MAX_UPLOAD_BYTES", "download_persona_yaml"]

#: The largest persona file accepted.
MAX_UPLOAD_BYTES = 1_000_000


async def download_persona_yaml(
    message: Message, http: asyncio.Semaphore
) -> tuple[str | None, str | None, str | None]:
    """The YAML of `/persona upload`: a document sent with the command, or the one
    the command replies to. Returns (text, file name, problem)."""
    document = message.document
    if document is None and message.reply_to_message is not None:
        document = message.reply_to_message.document
    if document is None:
        return None, None, None  # Commands answers how to attach it
    if document.file_size is not None and document.file_size > MAX_UPLOAD_BYTES:
        return None, None, f"That file is too large for a persona ({document.file_size} bytes)."
    try:
        async with http:
            file = await document.get_file()
            data = bytes(await file.download_as_bytearray())
    except TelegramError as exc:
        return None, None, f"I could not download the file: {exc}"
    if len(data) > MAX_UPLOAD_BYTES:
        return None, None, "That file is too large for a persona."
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, None, "The persona file must be UTF-8 text (YAML)."
    return text, document.file_name or "upload.yaml", None
