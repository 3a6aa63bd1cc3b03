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

import hashlib
import re
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bot.export.formats import dpo_record, window_lines
from bot.export.prompts import SystemPrompts, TurnContext, parse_time
from bot.export.pseudonym import Pseudonymizer, label_of
from bot.export.scrub import Scrubber
from bot.export.select import CONSENT_BEFORE_OPT_IN, CONSENT_OPTED_OUT
from bot.export.split import split_of
from bot.export.writer import DatasetWriter

__all__ = ["FILTERS", "DatasetBuilder", "ExportOptions", "PersonaStats"]

#: Filter reasons, in the order they are checked.
FILTERS = (
    "failed",  # the turn failed: its incoming message, and the apology sent instead
    "deleted",  # deleted on the platform
    "opted_out",  # from or to a person who has opted out
    "before_opt_in",  # from before the person opted back in
    "truncated",  # the incoming message was cut before the model saw it
    "superseded",  # a regenerated reply replaced it (it may still be a DPO 'rejected')
    "flagged",  # a moderator flagged the reply
    "undeliverable",  # the reply never reached the person
    "empty",
    "too_short",  # shorter than min_reply_chars
    "duplicate",  # the same (message, reply) pair, normalized, was already exported
    "unknown_persona_version",  # its persona version is missing or no longer parses
)

_PENDING_PER_PROMPT = 8
_PEOPLE_CACHE = 50_000  # pseudonyms kept across conversations (people come back)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True, slots=True)
class ExportOptions:
    """How records are cut, split and filtered (from `ExportSettings`)."""

    window_messages: int = 40
    prompt_messages: int = 8
    min_reply_chars: int = 1
    split_seed: str = "personabot-split-v1"
    validation_fraction: float = 0.05
    default_timezone: str = "UTC"


@dataclass
class PersonaStats:
    """What the manifest reports per persona."""

    messages_read: int = 0
    messages_exported: int = 0
    filters: Counter[str] = field(default_factory=Counter)
    versions: set[str] = field(default_factory=set)
    backends: Counter[str] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)
    unanswered: int = 0
    first_at: object = None
    last_at: object = None
    dpo_pairs: Counter[str] = field(default_factory=Counter)

    def as_manifest(self) -> dict[str, Any]:
        """Plain data for manifest.json."""
        return {
            "messages_read": self.messages_read,
            "messages_exported": self.messages_exported,
            "filters": {name: self.filters.get(name, 0) for name in FILTERS},
            "persona_versions": sorted(self.versions),
            "backends": dict(sorted(self.backends.items())),
            "models": dict(sorted(self.models.items())),
            "unanswered": self.unanswered,
            "first_message_at": _iso(self.first_at),
            "last_message_at": _iso(self.last_at),
            "dpo_pairs": dict(sorted(self.dpo_pairs.items())),
        }


class _Item:
    """A message kept in a window: its role, final text, and what records need."""

    __slots__ = ("content", "id", "meta", "plain", "role", "when")

    def __init__(
        self,
        id: int,
        role: str,
        content: str,
        plain: str,
        when: object,
        meta: tuple[str | None, str | None, str | None] | None = None,
    ) -> None:
        self.id = id
        self.role = role
        self.content = content  # as the model saw it (group messages carry the speaker)
        self.plain = plain  # the scrubbed text alone, for dedup and prompt matching
        self.when = when
        self.meta = meta  # replies: (persona hash, backend, model)


# A display name (case folded, for a cheap `in` test), its pattern, and its label.
_NameMatcher = tuple[str, str, str]


class _Conversation:
    __slots__ = (
        "ctx",
        "dropped",
        "group",
        "history",
        "key",
        "names",
        "people",
        "persona",
        "platform",
        "pseudonym",
        "rejected",
        "split",
        "window",
    )

    def __init__(self, row: Any, persona: str, split: str, pseudonym: str, history: int) -> None:
        self.key: str = row.conversation_key
        self.persona = persona
        self.split = split
        self.pseudonym = pseudonym
        self.platform: str = row.platform
        self.group = not row.is_direct
        self.window: list[_Item] = []
        self.ctx: TurnContext | None = None
        self.history: deque[_Item] = deque(maxlen=history)
        self.dropped: dict[int, str] = {}
        self.rejected: dict[int, list[tuple[str, int]]] = {}  # replaced replies, votes
        self.people: dict[str, tuple[str, str]] = {}  # platform id -> (pseudonym, label)
        self.names: list[_NameMatcher] = []  # display names -> labels


_MEMO = 4096  # per conversation: dropped messages and replaced replies remembered


def _withheld(row: Any) -> str | None:
    """Why a message may not be used whatever else holds (deleted, or its author's
    consent at the time says no), or None."""
    if row.deleted:
        return "deleted"
    if row.consent == CONSENT_OPTED_OUT:
        return "opted_out"
    if row.consent == CONSENT_BEFORE_OPT_IN:
        return "before_opt_in"
    return None


def _remember(memo: dict[int, Any], key: int, value: Any) -> None:
    """Set `memo[key]`, forgetting the oldest entry beyond `_MEMO`: replies come soon
    after the message they answer, so old entries are no longer needed."""
    memo[key] = value
    if len(memo) > _MEMO:
        del memo[next(iter(memo))]


def _vote_of(row: Any) -> int:
    """+1 for more 👍 than 👎, -1 for the opposite, 0 for neither."""
    return int(row.ups > row.downs) - int(row.ups < row.downs)


def _iso(value: object) -> str | None:
    return None if value is None else parse_time(value).isoformat()


def _normal(text: str) -> str:
    return " ".join(text.casefold().split())


def _pair_hash(*parts: str) -> int:
    digest = hashlib.blake2b("\x00".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class DatasetBuilder:
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

    def _person(self, conv: _Conversation, row: Any) -> tuple[str, str]:
        """(pseudonym, label) of the row's person; from now on their display name is
        replaced by the label in this conversation's texts."""
        platform_id = row.platform_user_id
        if platform_id is None:
            return "", ""
        known = conv.people.get(platform_id)
        if known is None:
            key = (conv.platform, platform_id)
            person = self._people.get(key)
            if person is None:
                pseudonym = self._pseudonyms.user(*key)
                label = label_of(pseudonym)
                name = (row.display_name or "").strip()
                # Kept as text: most names never occur in a message, and re's own
                # cache compiles the few that do.
                matcher = (
                    (name.casefold(), r"(?<!\w)" + re.escape(name) + r"(?!\w)", label)
                    if len(name) >= 3
                    else None
                )
                person = (pseudonym, label, matcher)
                if len(self._people) >= _PEOPLE_CACHE:  # bounded: start over
                    self._people.clear()
                self._people[key] = person
            known = (person[0], person[1])
            conv.people[platform_id] = known
            if person[2] is not None:
                conv.names.append(person[2])
        return known

    def _clean(self, conv: _Conversation, text: str) -> str:
        text = self._scrub(text.strip())
        if conv.names:
            folded = text.casefold()
            for name, pattern, label in conv.names:
                if name in folded:
                    text = re.sub(pattern, label, text, flags=re.IGNORECASE)
        return text

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

    def _context(self, conv: _Conversation, row: Any, asked: _Item | None) -> TurnContext:
        pseudonym, label = self._person(conv, row)
        return TurnContext(
            persona_hash=row.persona_hash or "",
            platform=conv.platform,
            user_id=pseudonym or "someone",
            display_name=label or "friend",
            timezone=row.timezone,
            # The engine renders right after storing the message it answers.
            when=asked.when if asked is not None else row.created_at,
            is_direct=not conv.group,
        )

    @staticmethod
    def _find(conv: _Conversation, message_id: int | None) -> _Item | None:
        if message_id is None:
            return None
        for item in reversed(conv.window):
            if item.id == message_id:
                return item
        for item in reversed(conv.history):
            if item.id == message_id:
                return item
        return None

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

    @staticmethod
    def _prompt(conv: _Conversation, asked: _Item) -> list[tuple[str, str]]:
        turns: list[tuple[str, str]] = []
        for item in conv.history:
            turns.append((item.role, item.content))
            if item is asked:
                return turns
        return [(asked.role, asked.content)]

    def _write(self, relpath: str, record: dict[str, Any]) -> None:
        self._writer.file(relpath).write(record)

    def _line(self, relpath: str, line: str) -> None:
        write = self._lines.get(relpath)
        if write is None:
            write = self._lines[relpath] = self._writer.file(relpath).write_line
        write(line)

    def _dpo(
        self, conv: _Conversation, stats: PersonaStats, source: str, record: dict[str, Any]
    ) -> None:
        key = _pair_hash(
            record["prompt"][-1]["content"],
            record["chosen"][0]["content"],
            record["rejected"][0]["content"],
        )
        if key in self._seen_dpo or record["chosen"] == record["rejected"]:
            return
        self._seen_dpo.add(key)
        stats.dpo_pairs[source] += 1
        self._write(f"{conv.persona}/dpo.{conv.split}.jsonl", record)

    def _regenerations(
        self,
        conv: _Conversation,
        stats: PersonaStats,
        asked: _Item | None,
        ctx: TurnContext,
        chosen: str,
        rejected: list[str],
    ) -> None:
        if asked is None:
            return
        system = self._systems.render(ctx)
        if system is None:
            return
        prompt = self._prompt(conv, asked)
        for other in rejected:
            self._dpo(
                conv,
                stats,
                "regeneration",
                dpo_record(system, prompt, chosen, other, "regeneration"),
            )

    def _correction(self, conv: _Conversation, stats: PersonaStats, row: Any, text: str) -> None:
        """A moderator's corrected reply (chosen) against the reply it corrects."""
        chosen = row.correction.strip()
        if not chosen or not text or not row.persona_hash:
            return
        asked = self._find(conv, row.reply_to_id)
        if asked is None:
            return
        system = self._systems.render(self._context(conv, row, asked))
        if system is None:
            return
        self._dpo(
            conv,
            stats,
            "correction",
            dpo_record(
                system,
                self._prompt(conv, asked),
                self._clean(conv, chosen),
                self._clean(conv, text),
                "correction",
            ),
        )

    def _vote(
        self,
        conv: _Conversation,
        stats: PersonaStats,
        row: Any,
        content: str,
        asked: _Item | None,
        ctx: TurnContext,
    ) -> None:
        """Pair a rated reply with an earlier one of the opposite vote, or wait for one."""
        vote = _vote_of(row)
        if vote == 0 or asked is None:
            return
        system = self._systems.render(ctx)
        if system is None:
            return
        candidate = (system, self._prompt(conv, asked), content)
        key = (conv.persona, conv.split, _pair_hash(_normal(asked.plain)))
        waiting = self._pending.get(key)
        if waiting is not None and waiting[0] == -vote:
            other = waiting[1].pop(0)
            if not waiting[1]:
                del self._pending[key]
            good, bad = (candidate, other) if vote > 0 else (other, candidate)
            self._dpo(
                conv, stats, "feedback", dpo_record(good[0], good[1], good[2], bad[2], "feedback")
            )
        elif waiting is None:
            self._pending[key] = (vote, [candidate])
        elif len(waiting[1]) < _PENDING_PER_PROMPT:
            waiting[1].append(candidate)

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
