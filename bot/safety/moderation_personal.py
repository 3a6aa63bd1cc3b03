"""The personal-data check: other people's phones, addresses, numbers and secrets in
a reply, found by the export scrubber's detectors (re-exported by
bot/safety/moderation.py).
"""

from __future__ import annotations

import re
import unicodedata
from collections import OrderedDict

from bot.export.scrub import Scrubber
from bot.safety.moderation_terms import MAX_CHARS, _Prefixes
from bot.safety.normalize import window
from bot.safety.stage import OutputContext

__all__ = ["PERSONAL_KINDS", "PersonalDataCheck", "personal_data"]

#: The scrubber's placeholders that are personal data in a reply. Handles and
#: mentions are how a persona addresses people; names are the export's deny list.
PERSONAL_KINDS = frozenset(
    {"SECRET", "EMAIL", "IBAN", "ID_NUMBER", "CARD", "PHONE", "IP", "ADDRESS"}
)
_PLACEHOLDER = re.compile(r"<(SECRET|EMAIL|HANDLE|IBAN|ID_NUMBER|CARD|PHONE|IP|ADDRESS|NAME)>")
_NUMERIC = frozenset({"IBAN", "ID_NUMBER", "CARD", "PHONE"})


def personal_data(scrubber: Scrubber, text: str) -> list[tuple[str, str]]:
    """The pieces of personal data the scrubber finds in `text`: (kind, value).

    The scrubber replaces what it finds and keeps the rest exactly, so the values
    are the text between the kept pieces. (A literal "<EMAIL>" typed in the text may
    shift one value: then it matches nothing the person wrote and the reply is
    held back, the safe side.)
    """
    scrubbed = scrubber.scrub(text)
    if scrubbed == text:
        return []
    pieces = _PLACEHOLDER.split(scrubbed)  # literal, kind, literal, kind, ..., literal
    found: list[tuple[str, str]] = []
    pos = len(pieces[0])
    for i in range(1, len(pieces), 2):
        kind, literal = pieces[i], pieces[i + 1]
        if i + 2 >= len(pieces):  # the last literal is the text's tail
            end = len(text) - len(literal)
        elif literal:
            end = text.find(literal, pos + 1)
            end = len(text) if end < 0 else end
        else:
            end = pos  # two placeholders side by side: the next one takes the value
        found.append((kind, text[pos:end]))
        pos = max(pos, end) + len(literal)
    return [(k, v) for k, v in found if v]


def _key(kind: str, value: str) -> str:
    if kind in _NUMERIC:
        return "".join(c for c in unicodedata.normalize("NFKC", value) if c.isalnum()).casefold()
    return "".join(unicodedata.normalize("NFKC", value).split()).casefold()


class PersonalDataCheck:
    """Blocks a reply that holds personal data (phones, e-mail addresses, card and
    id numbers, IBANs, secrets, addresses, IPs) the person did not write in the
    message being answered.

    Decision: what the person just typed is theirs to hear back ("my number is …,
    can you remember it?"), so a value found in `incoming_text` passes. Anything else
    (a number from the channel's history, another member's address, a proactive
    turn's) is someone else's as far as this check can tell, and is blocked.
    """

    name = "personal_data"

    def __init__(
        self, scrubber: Scrubber | None = None, kinds: frozenset[str] = PERSONAL_KINDS
    ) -> None:
        self.scrubber = scrubber or Scrubber()
        self.kinds = kinds
        self._own: OrderedDict[str, frozenset[str]] = OrderedDict()
        self._prefixes = _Prefixes()

    def _own_values(self, incoming: str | None) -> frozenset[str]:
        if not incoming:
            return frozenset()
        cached = self._own.get(incoming)
        if cached is None:
            cached = frozenset(
                _key(k, v) for k, v in personal_data(self.scrubber, window(incoming, MAX_CHARS))
            )
            self._own[incoming] = cached
            if len(self._own) > 64:
                self._own.popitem(last=False)
        return cached

    async def check(self, ctx: OutputContext, text: str) -> str | None:
        rest = window(self._prefixes.rest(ctx, text), MAX_CHARS)
        found = [(k, v) for k, v in personal_data(self.scrubber, rest) if k in self.kinds]
        if not found:
            self._prefixes.passed(ctx, text)
            return None
        own = self._own_values(ctx.incoming_text)
        leaked = sorted({k for k, v in found if _key(k, v) not in own})
        if not leaked:
            self._prefixes.passed(ctx, text)
            return None
        # The reason names the kinds only: the value must not be copied into the log.
        return "personal data of someone else: " + ", ".join(k.lower() for k in leaked)
