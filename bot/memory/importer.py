"""`bot memory import`: messages from a JSON-lines file into the ledger and the index.

All or nothing for what a person can get wrong: the whole file is checked first
(`check_file`), and one bad line means nothing is imported; the error names every
bad line as `file:line: field: problem`. Only then are the lines stored
(`import_file`), each as the platform would have delivered it, and queued for
embedding.

One line is one message:
`{platform, space?, channel, user, display_name?, persona, role, text, timestamp}`.
`role` is `user` (the person said it) or `assistant` (the persona said it to that
person): an assistant line belongs to `user` even when it comes first (a greeting),
so it can be searched, shown and forgotten like any other.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.errors import StorageError
from bot.memory.lines import InputFileError, Line, read_lines
from bot.text import clean_text

__all__ = ["MAX_TEXT_CHARS", "ImportLine", "check_file", "import_file", "parse_lines"]

#: The longest message text accepted.
MAX_TEXT_CHARS = 100_000
#: How many problems an error lists (the count says how many there were).
_SHOWN = 50


def _identifier(value: str) -> str:
    if value != value.strip():
        raise ValueError("must not start or end with whitespace")
    if not value:
        raise ValueError("must not be empty")
    if any(ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF or ord(c) == 0x7F for c in value):
        raise ValueError("must not contain control characters or lone surrogates")
    return value


class ImportLine(BaseModel):
    """One line of a memory import file: a message as a platform would deliver it."""

    model_config = ConfigDict(extra="forbid")

    platform: str = Field(max_length=32)
    space: str | None = Field(default=None, max_length=256)
    channel: str = Field(max_length=256)
    user: str = Field(max_length=256)
    display_name: str = Field(default="", max_length=256)
    persona: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    role: str = Field(pattern="^(user|assistant)$")
    text: str = Field(max_length=MAX_TEXT_CHARS)
    timestamp: datetime

    @field_validator("platform", "channel", "user")
    @classmethod
    def _ids(cls, value: str) -> str:
        return _identifier(value)

    @field_validator("space")
    @classmethod
    def _space(cls, value: str | None) -> str | None:
        return None if value is None else _identifier(value)

    @field_validator("display_name")
    @classmethod
    def _name(cls, value: str) -> str:
        return clean_text(value).strip()

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        # What the live path stores: no control characters or lone surrogates, NFC.
        cleaned = clean_text(value)
        if not cleaned.strip():
            raise ValueError("is empty or only whitespace")
        return cleaned

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _problem(path: Path, line: Line, exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(line)"
    message = str(first["msg"]).removeprefix("Value error, ")
    return f"{path}:{line.number}: {where}: {message}"


def parse_lines(path: Path) -> Iterator[ImportLine | str]:
    """Each non-blank line of `path`, parsed, or its problem as `file:line: ...`."""
    for line in read_lines(path):
        if line.problem is not None:
            yield f"{path}:{line.number}: {line.problem}"
            continue
        if not line.text.strip():
            continue
        try:
            yield ImportLine.model_validate_json(line.text)
        except ValidationError as exc:
            yield _problem(path, line, exc)


def check_file(path: Path) -> int:
    """How many messages `path` holds; `InputFileError` listing the bad lines if any."""
    problems: list[str] = []
    total = count = 0
    for parsed in parse_lines(path):
        if isinstance(parsed, str):
            total += 1
            if len(problems) < _SHOWN:
                problems.append(parsed)
        else:
            count += 1
    if total:
        raise InputFileError(problems, total=total)
    return count


async def import_file(path: Path, memory: Any, ledger: Any) -> int:
    """Store every message of a checked file through the ledger and queue it for
    embedding; returns how many. A line that turns bad since `check_file` (the file
    changed) stops the import with `InputFileError` naming it; a storage failure
    (a full disk) stops it with `StorageError` saying how many lines were stored."""
    progress = [0]
    try:
        await _store_lines(path, memory, ledger, progress)
    except StorageError as exc:
        done = progress[0]
        raise StorageError(f"{path}: stopped after storing {done} message(s): {exc}") from exc
    finally:
        await memory.flush()
    return progress[0]


async def _store_lines(path: Path, memory: Any, ledger: Any, progress: list[int]) -> None:
    from bot.memory.ledger import ReplyRecord
    from bot.messages import Actor, Incoming, Scope
    from bot.models import MessageStatus

    last_user: dict[tuple[str, str], tuple[int, int]] = {}  # (conversation, user) -> ids
    for line in parse_lines(path):
        if isinstance(line, str):
            raise InputFileError([f"{line} (the file changed during the import)"])
        scope = Scope(
            platform=line.platform,
            space=line.space,
            channel=line.channel,
            user=line.user,
            persona=line.persona,
        )
        key = (scope.conversation_key, line.user)
        if line.role == "user":
            actor = Actor(platform=line.platform, id=line.user, display_name=line.display_name)
            incoming = Incoming(
                scope=scope, actor=actor, text=line.text, received_at=line.timestamp
            )
            # History, not a message waiting for an answer: a restart must neither
            # answer it late nor expire it with an away notice.
            stored = await ledger.record_incoming(
                incoming, line.text, status=MessageStatus.ANSWERED
            )
            last_user[key] = (stored.conversation_id, stored.message_id)
            message_id = stored.message_id
        else:
            uid = await memory.find_user(line.platform, line.user)
            if uid is None:  # the persona spoke first: the person exists from now on
                actor = Actor(platform=line.platform, id=line.user, display_name=line.display_name)
                uid = await ledger.user_id(actor)
            known = last_user.get(key)
            cid = known[0] if known else await ledger.conversation_id(scope)
            message_id = await ledger.record_reply(
                ReplyRecord(
                    conversation_id=cid,
                    user_id=uid,
                    reply_to_id=known[1] if known else None,
                    text=line.text,
                    persona_id=line.persona,
                    created_at=line.timestamp,
                    status=MessageStatus.DELIVERED,  # sent long ago: never again
                )
            )
        memory.enqueue([("message", message_id)])
        progress[0] += 1
