"""Building the updates the fake Bot API hands out: users, chats, messages and the
update kinds tests inject (private and group messages, edits, reactions, polls,
service messages, stickers, photos, documents, raw bodies). A mixin of
`FakeTelegramAPI` (tests/fakes/telegram_api.py), kept apart so that file holds the
HTTP side alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["SentMessage", "UpdateBuilders"]


@dataclass
class SentMessage:
    """A message the bot sent, as the fake received it."""

    chat_id: int
    text: str
    message_id: int
    at: float
    parse_mode: str | None = None
    reply_to: int | None = None
    thread: int | None = None


class UpdateBuilders:
    """Update helpers; each returns the update (or message) dict it queued or built."""

    bot_user: dict[str, Any]
    started: set[int]
    updates: list[dict[str, Any]]
    webhook_url: str | None
    _date: int
    _next_update: Iterator[int]
    _next_message: Iterator[int]
    _new_update: asyncio.Event

    def _ensure_pusher(self) -> None:
        raise NotImplementedError

    def add_file(self, content: bytes, file_name: str = "file.bin") -> str:
        """Store a file the bot can fetch with getFile; returns its file_id."""
        raise NotImplementedError


    def user(self, user_id: int, name: str = "Ann", last: str | None = None) -> dict[str, Any]:
        """A user object."""
        data: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": name}
        if last:
            data["last_name"] = last
        return data

    def _chat(self, chat_id: int, title: str | None = None) -> dict[str, Any]:
        if chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": "Someone"}
        return {"id": chat_id, "type": "supergroup", "title": title or f"group {chat_id}"}

    def message(
        self,
        chat_id: int,
        user_id: int,
        text: str | None = "",
        *,
        name: str = "Ann",
        entities: list[dict[str, Any]] | None = None,
        reply_to: dict[str, Any] | None = None,
        thread: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A message object (not yet an update)."""
        msg: dict[str, Any] = {
            "message_id": next(self._next_message),
            "date": self._date,
            "chat": self._chat(chat_id),
            "from": self.user(user_id, name),
        }
        if text is not None:
            msg["text"] = text
        if entities:
            msg["entities"] = entities
        if text and text.startswith("/") and not entities:
            command = text.split()[0]
            msg["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        if reply_to is not None:
            msg["reply_to_message"] = reply_to
        if thread is not None:
            msg["message_thread_id"] = thread
            msg["is_topic_message"] = True
        msg.update(extra or {})
        return msg

    def push(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Queue an update of `kind` ("message", "edited_message", ...)."""
        update = {"update_id": next(self._next_update), kind: payload}
        if kind in ("message", "edited_message"):
            chat = payload["chat"]
            if chat["type"] == "private" and payload.get("text", "").startswith("/start"):
                self.started.add(chat["id"])
        self.updates.append(update)
        self._new_update.set()
        if self.webhook_url is not None:
            self._ensure_pusher()
        return update

    def push_raw(self, body: dict[str, Any], *, with_id: bool = True) -> dict[str, Any]:
        """Queue any update body as it is (an `update_id` is added unless `with_id` is
        false): the shapes a library cannot parse."""
        update = {"update_id": next(self._next_update), **body} if with_id else dict(body)
        self.updates.append(update)
        self._new_update.set()
        if self.webhook_url is not None:
            self._ensure_pusher()
        return update

    def private_message(
        self, user_id: int, text: str | None, *, name: str = "Ann", start: bool = True, **kw: Any
    ) -> dict[str, Any]:
        """A person writes to the bot in a private chat (having started it, by default)."""
        if start:
            self.started.add(user_id)
        return self.push("message", self.message(user_id, user_id, text, name=name, **kw))

    def group_message(
        self,
        chat_id: int,
        user_id: int,
        text: str,
        *,
        mention: bool = False,
        name: str = "Bob",
        **kw: Any,
    ) -> dict[str, Any]:
        """A message in a group; with `mention`, "@botname " is put in front of it."""
        entities = None
        if mention:
            handle = f"@{self.bot_user['username']}"
            text = f"{handle} {text}"
            entities = [{"type": "mention", "offset": 0, "length": len(handle)}]
        msg = self.message(chat_id, user_id, text, name=name, entities=entities, **kw)
        return self.push("message", msg)

    def bot_message(self, sent: SentMessage) -> dict[str, Any]:
        """The message object of something the bot sent (to reply to it)."""
        return {
            "message_id": sent.message_id,
            "date": self._date,
            "chat": self._chat(sent.chat_id),
            "from": self.bot_user,
            "text": sent.text,
        }

    def edit(self, original: dict[str, Any], text: str) -> dict[str, Any]:
        """The person edits a message they sent earlier (the update's message)."""
        message = dict(original["message"])
        message["text"] = text
        message["edit_date"] = self._date + 5
        return self.push("edited_message", message)

    def reaction(
        self,
        chat_id: int,
        user_id: int,
        message_id: int,
        new: list[str],
        old: list[str] | None = None,
    ) -> dict[str, Any]:
        """A person changes their reaction on a message (Telegram sends old and new)."""
        return self.push(
            "message_reaction",
            {
                "chat": self._chat(chat_id),
                "message_id": message_id,
                "user": self.user(user_id),
                "date": self._date,
                "old_reaction": [{"type": "emoji", "emoji": e} for e in old or []],
                "new_reaction": [{"type": "emoji", "emoji": e} for e in new],
            },
        )

    def poll(self) -> dict[str, Any]:
        """A poll update (the bot does not handle polls). It lacks `allows_revoting`,
        which python-telegram-bot 22 requires: the library cannot parse it."""
        return self.push(
            "poll",
            {
                "id": "poll-1",
                "question": "Tea or coffee?",
                "options": [
                    {"text": "tea", "voter_count": 1},
                    {"text": "coffee", "voter_count": 2},
                ],
                "total_voter_count": 3,
                "is_closed": False,
                "is_anonymous": True,
                "type": "regular",
                "allows_multiple_answers": False,
            },
        )

    def poll_message(self, user_id: int) -> dict[str, Any]:
        """A private message carrying a poll without `allows_revoting` (what an older
        self-hosted Bot API server sends): python-telegram-bot 22 cannot parse it."""
        poll = {
            "id": f"poll-{user_id}",
            "question": "Tea or coffee?",
            "options": [{"text": "tea", "voter_count": 0}, {"text": "coffee", "voter_count": 0}],
            "total_voter_count": 0,
            "is_closed": False,
            "is_anonymous": False,
            "type": "regular",
            "allows_multiple_answers": False,
        }
        self.started.add(user_id)
        return self.push("message", self.message(user_id, user_id, None, extra={"poll": poll}))

    def member_join(self, chat_id: int, user_id: int) -> dict[str, Any]:
        """A service message: someone joined the group."""
        msg = self.message(
            chat_id, user_id, None, extra={"new_chat_members": [self.user(user_id, "Neo")]}
        )
        return self.push("message", msg)

    def sticker(
        self, user_id: int, emoji: str = "😀", chat_id: int | None = None
    ) -> dict[str, Any]:
        """A sticker and nothing else."""
        sticker = {
            "file_id": "sticker-1",
            "file_unique_id": "s1",
            "type": "regular",
            "width": 512,
            "height": 512,
            "is_animated": False,
            "is_video": False,
            "emoji": emoji,
            "set_name": "CuteCats",
        }
        msg = self.message(chat_id or user_id, user_id, None, extra={"sticker": sticker})
        self.started.add(user_id)
        return self.push("message", msg)

    def photo(self, user_id: int, caption: str | None = None) -> dict[str, Any]:
        """A photo, with or without a caption."""
        sizes = [
            {"file_id": "photo-s", "file_unique_id": "p1", "width": 90, "height": 90},
            {"file_id": "photo-l", "file_unique_id": "p2", "width": 800, "height": 800},
        ]
        extra: dict[str, Any] = {"photo": sizes}
        if caption is not None:
            extra["caption"] = caption
        self.started.add(user_id)
        return self.push("message", self.message(user_id, user_id, None, extra=extra))

    def document(
        self,
        chat_id: int,
        user_id: int,
        content: bytes,
        file_name: str,
        caption: str | None = None,
        *,
        name: str = "Mo",
    ) -> dict[str, Any]:
        """A file sent with an optional caption (a command in the caption counts)."""
        file_id = self.add_file(content, file_name)
        extra: dict[str, Any] = {
            "document": {
                "file_id": file_id,
                "file_unique_id": file_id + "-u",
                "file_name": file_name,
                "file_size": len(content),
            }
        }
        if caption is not None:
            extra["caption"] = caption
            if caption.startswith("/"):
                command = caption.split()[0]
                extra["caption_entities"] = [
                    {"type": "bot_command", "offset": 0, "length": len(command)}
                ]
        if chat_id > 0:
            self.started.add(chat_id)
        msg = self.message(chat_id, user_id, None, name=name, extra=extra)
        return self.push("message", msg)
