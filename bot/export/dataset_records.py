"""What the dataset builder keeps and reports: the filter reasons in their order,
the export options, the manifest's per-persona stats, a kept message, one
conversation's state, and the small row tests and hashes they share
(re-exported by bot/export/dataset.py).
"""

from __future__ import annotations

import hashlib
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from bot.export.prompts import TurnContext, parse_time
from bot.export.select import CONSENT_BEFORE_OPT_IN, CONSENT_OPTED_OUT

__all__ = ["FILTERS", "ExportOptions", "PersonaStats"]

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
