"""Who says what in an exported conversation: people's pseudonyms and labels (their
display names replaced in every text), scrubbed texts, the context a system prompt
is rendered from, and a DPO prompt's history. A base of `DatasetBuilder`
(bot/export/dataset.py), which owns the state declared here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from bot.export.dataset_records import _Conversation, _Item, _NameMatcher
from bot.export.prompts import TurnContext
from bot.export.pseudonym import Pseudonymizer, label_of

__all__ = ["BuilderTurns"]

_PEOPLE_CACHE = 50_000  # pseudonyms kept across conversations (people come back)


class BuilderTurns:
    """The people and texts side of `DatasetBuilder`."""

    _scrub: Callable[[str], str]
    _pseudonyms: Pseudonymizer
    _people: dict[tuple[str, str], tuple[str, str, _NameMatcher | None]]

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
    def _prompt(conv: _Conversation, asked: _Item) -> list[tuple[str, str]]:
        turns: list[tuple[str, str]] = []
        for item in conv.history:
            turns.append((item.role, item.content))
            if item is asked:
                return turns
        return [(asked.role, asked.content)]
