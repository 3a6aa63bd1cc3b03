"""Turning the ledger's rows into records: windows, filters, dedup, DPO pairs.

Rows arrive in (conversation, id) order. Each conversation is walked once:

- people's messages and the persona's replies that pass the filters go into the
  current *window*; a window becomes one record (OpenAI and ShareGPT) when it holds
  `window_messages` messages and ends on a reply, when the persona version changes,
  or when the conversation ends. Records always end on a reply; people's messages
  that never got one are not exported. The system prompt is rendered for the first
  reply of the window (later turns of a window differ only in the clock).
- a filtered reply takes the message it answered out with it (and the other way
  round), so no record shows a question with someone else's answer.
- every filtered message is counted under the first reason that applies, in the
  order of `FILTERS`.
- DPO pairs come from moderators' corrections (what the moderator wrote is chosen,
  the reply it corrects rejected), from regenerations (a later reply to the same
  message replaced the earlier one: later is chosen) and from 👍/👎 (a liked and a
  disliked reply to the same message, or to messages with the same normalized
  text, in the same split).

Memory: one window and `prompt_messages` of history per conversation, plus two sets
that grow with the output, not the input: the 64-bit hashes of exported
(message, reply) pairs for deduplication, and the rated replies still waiting for a
partner of the opposite vote (at most `_PENDING_PER_PROMPT` per prompt).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from bot.export.dataset_pairs import BuilderPairs
from bot.export.dataset_records import (
    FILTERS,
    ExportOptions,
    PersonaStats,
    _Conversation,
    _Item,
    _NameMatcher,
    _normal,
    _pair_hash,
    _remember,
    _vote_of,
    _withheld,
)
from bot.export.formats import window_lines
from bot.export.prompts import SystemPrompts
from bot.export.pseudonym import Pseudonymizer
from bot.export.scrub import Scrubber
from bot.export.split import split_of
from bot.export.writer import DatasetWriter

__all__ = ["FILTERS", "DatasetBuilder", "ExportOptions", "PersonaStats"]

_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


class DatasetBuilder(BuilderPairs):
    """Consumes export rows (see `bot.export.select`) and writes records as it goes."""

    def __init__(
        self,
        writer: DatasetWriter,
        options: ExportOptions,
        scrubber: Scrubber,
        pseudonyms: Pseudonymizer,
        system_prompts: SystemPrompts,
    ) -> None:
        self._writer = writer
        self._options = options
        self._scrub = scrubber.scrub
        self._pseudonyms = pseudonyms
        self._systems = system_prompts
        self.stats: dict[str, PersonaStats] = {}
        self._conversation: _Conversation | None = None
        self._conversation_id: int | None = None
        self._seen_pairs: set[int] = set()
        self._seen_dpo: set[int] = set()
        self._pending: dict[tuple[str, str, int], tuple[int, list[tuple[Any, ...]]]] = {}
        self._lines: dict[str, Callable[[str], None]] = {}
        self._people: dict[tuple[str, str], tuple[str, str, _NameMatcher | None]] = {}

    # -- public ---------------------------------------------------------------------

    def add(self, row: Any) -> None:
        """Take the next row; rows must come in (conversation, id) order."""
        if row.conversation_id != self._conversation_id:
            self._end_conversation()
            self._conversation_id = row.conversation_id
            self._conversation = self._start_conversation(row)
        conv = self._conversation
        assert conv is not None
        stats = self.stats[conv.persona]
        stats.messages_read += 1
        if row.direction == "in":
            self._incoming(conv, stats, row)
        else:
            self._reply(conv, stats, row)

    def finish(self) -> None:
        """Flush the last conversation (call once, after the last row)."""
        self._end_conversation()

    # -- conversations --------------------------------------------------------------

    def _start_conversation(self, row: Any) -> _Conversation:
        persona = _SAFE_NAME.sub("_", row.persona_id) or "_"
        if persona.startswith("."):
            persona = "_" + persona
        if persona not in self.stats:
            self.stats[persona] = PersonaStats()
        split = split_of(
            row.conversation_key,
            seed=self._options.split_seed,
            validation_fraction=self._options.validation_fraction,
        )
        return _Conversation(
            row,
            persona,
            split,
            self._pseudonyms.conversation(row.conversation_key),
            self._options.prompt_messages,
        )

    def _end_conversation(self) -> None:
        conv = self._conversation
        if conv is not None:
            self._flush(conv, carry=False)
        self._conversation = None
        self._conversation_id = None

    # -- rows -----------------------------------------------------------------------

    def _incoming(self, conv: _Conversation, stats: PersonaStats, row: Any) -> None:
        reason = "failed" if row.status == "failed" else _withheld(row)
        if reason is None and row.truncated:
            reason = "truncated"
        if reason is not None:
            stats.filters[reason] += 1
            _remember(conv.dropped, row.id, reason)
            return
        _, label = self._person(conv, row)
        plain = self._clean(conv, row.text)
        content = f"{label or 'someone'}: {plain}" if conv.group else plain
        item = _Item(row.id, "user", content, plain, row.created_at)
        conv.window.append(item)
        conv.history.append(item)
        limit = self._options.window_messages
        if len(conv.window) >= limit:
            # A busy channel where the persona is rarely addressed: keep the window
            # bounded, with room for a reply. Emit what ends on a reply, then let
            # the oldest unanswered messages go.
            if conv.ctx is not None:
                self._flush(conv, carry=True)
            excess = len(conv.window) - (limit - 1)
            if excess > 0:
                del conv.window[:excess]
                stats.unanswered += excess

    def _unfit_reply(self, row: Any, text: str) -> str | None:
        """Why a reply (its stripped `text`) is no training target, or None."""
        if row.flagged:
            return "flagged"
        if row.status == "undeliverable":
            return "undeliverable"
        if not text:
            return "empty"
        if len(text) < self._options.min_reply_chars:
            return "too_short"
        return None

    def _reply(self, conv: _Conversation, stats: PersonaStats, row: Any) -> None:
        filters = stats.filters
        if row.kind == "apology":
            filters["failed"] += 1
            return
        reply_to = row.reply_to_id
        if reply_to is not None and reply_to in conv.dropped:
            filters[conv.dropped[reply_to]] += 1
            return
        text = row.text.strip()
        usable = bool(text) and len(text) >= self._options.min_reply_chars and not row.flagged
        reason = _withheld(row)
        if reason is None and row.correction:
            # Whatever else becomes of this reply (a corrected reply is flagged too):
            # what the moderator wrote is chosen over it.
            self._correction(conv, stats, row, text)
        if reason is None and row.superseded:
            # Not a pair-breaker: the reply that replaced it answers the same message.
            filters["superseded"] += 1
            if usable and row.persona_hash:
                rejected = self._clean(conv, text)
                if reply_to not in conv.rejected:
                    _remember(conv.rejected, reply_to, [])
                conv.rejected[reply_to].append((rejected, _vote_of(row)))
                if row.ups or row.downs:
                    asked = self._find(conv, reply_to)
                    self._vote(conv, stats, row, rejected, asked, self._context(conv, row, asked))
            return
        if reason is None:
            reason = self._unfit_reply(row, text)
        if reason is not None:
            filters[reason] += 1
            self._drop_pair(conv, stats, reply_to, reason)
            return
        asked = self._find(conv, reply_to)
        content = self._clean(conv, text)
        key = _pair_hash(_normal(asked.plain) if asked is not None else "", _normal(content))
        if key in self._seen_pairs:
            filters["duplicate"] += 1
            self._drop_pair(conv, stats, reply_to, "duplicate")
            return
        self._seen_pairs.add(key)

        if conv.ctx is not None and conv.ctx.persona_hash != (row.persona_hash or ""):
            self._flush(conv, carry=True)  # a new persona version: a new system prompt
        # The context is built only where a system prompt will be rendered from it.
        if conv.ctx is None:
            conv.ctx = self._context(conv, row, asked)
        if row.ups or row.downs:
            self._vote(conv, stats, row, content, asked, self._context(conv, row, asked))
        if reply_to is not None and reply_to in conv.rejected:
            replaced = conv.rejected.pop(reply_to)
            # People's votes beat the regeneration heuristic: no pair that a 👎 on the
            # new reply, or a 👍 on the old one, contradicts.
            if _vote_of(row) >= 0:
                ctx = self._context(conv, row, asked)
                kept = [text for text, vote in replaced if vote <= 0]
                self._regenerations(conv, stats, asked, ctx, content, kept)
        item = _Item(
            row.id,
            "assistant",
            content,
            content,
            row.created_at,
            (row.persona_hash, row.backend, row.model),
        )
        conv.window.append(item)
        conv.history.append(item)
        if len(conv.window) >= self._options.window_messages:
            self._flush(conv, carry=False)

    # -- helpers --------------------------------------------------------------------

    @staticmethod
    def _drop_pair(
        conv: _Conversation, stats: PersonaStats, message_id: int | None, reason: str
    ) -> None:
        """Take the message a filtered reply answered out of the window (and history)."""
        if message_id is None:
            return
        _remember(conv.dropped, message_id, reason)
        for index in range(len(conv.window) - 1, -1, -1):
            if conv.window[index].id == message_id:
                del conv.window[index]
                stats.filters[reason] += 1
                break
        for item in conv.history:
            if item.id == message_id:
                conv.history.remove(item)
                break

    def _line(self, relpath: str, line: str) -> None:
        write = self._lines.get(relpath)
        if write is None:
            write = self._lines[relpath] = self._writer.file(relpath).write_line
        write(line)

    def _flush(self, conv: _Conversation, *, carry: bool) -> None:
        """Write the window up to its last reply as one record; keep or drop the rest."""
        window = conv.window
        last = len(window) - 1
        while last >= 0 and window[last].role != "assistant":
            last -= 1
        stats = self.stats[conv.persona]
        body, rest = window[: last + 1], window[last + 1 :]
        if body:
            assert conv.ctx is not None
            system = self._systems.render(conv.ctx)
            if system is None:
                stats.filters["unknown_persona_version"] += len(body)
            else:
                turns = [(item.role, item.content) for item in body]
                chat, sharegpt = window_lines(f"{conv.pseudonym}-{body[0].id}", system, turns)
                self._line(f"{conv.persona}/chat.{conv.split}.jsonl", chat)
                self._line(f"{conv.persona}/sharegpt.{conv.split}.jsonl", sharegpt)
                self._exported(stats, body)
        if carry:
            conv.window = rest
        else:
            stats.unanswered += len(rest)
            conv.window = []
        conv.ctx = None

    @staticmethod
    def _exported(stats: PersonaStats, body: list[_Item]) -> None:
        stats.messages_exported += len(body)
        for item in (body[0], body[-1]):
            if stats.first_at is None or item.when < stats.first_at:  # type: ignore[operator]
                stats.first_at = item.when
            if stats.last_at is None or item.when > stats.last_at:  # type: ignore[operator]
                stats.last_at = item.when
        for item in body:
            if item.meta is not None:
                persona_hash, backend, model = item.meta
                if persona_hash:
                    stats.versions.add(persona_hash)
                if backend:
                    stats.backends[backend] += 1
                if model:
                    stats.models[model] += 1
