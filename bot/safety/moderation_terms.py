"""Finding terms in a reply however they are disguised (one trie-shaped pattern per
list), the two checks built on it (declined topics, blocklists), and what part of a
growing reply is left to check (re-exported by bot/safety/moderation.py, whose
docstring says how terms match).
"""

from __future__ import annotations

import re
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence

from bot.safety.normalize import fold, fold_pattern, variants, window
from bot.safety.stage import OutputContext

__all__ = [
    "MAX_CHARS",
    "MAX_TERMS",
    "MAX_TERM_CHARS",
    "BlocklistCheck",
    "DeclinedTopicCheck",
    "TermMatcher",
    "channel_keys",
]

#: The most characters of a reply any check here looks at (head and tail beyond it).
MAX_CHARS = 20_000
#: The most terms one blocklist may hold; more is a config mistake, not a list.
MAX_TERMS = 20_000
#: The longest blocklist term; a prefix already checked is looked at again only from
#: `_OVERLAP` characters back (a term or a phone number spanning the cut is found).
MAX_TERM_CHARS = 200
_OVERLAP = 512


class _Prefixes:
    """What part of a growing text is left to check.

    The stream guard screens ever longer prefixes of one reply; a text that extends
    one that already passed is checked again only from a word boundary `_OVERLAP`
    characters before the new part, so a streamed reply costs about as much as the
    whole reply once (not once per word)."""

    def __init__(self, size: int = 256) -> None:
        self._passed: OrderedDict[tuple[object, ...], str] = OrderedDict()
        self._size = size

    @staticmethod
    def key(ctx: OutputContext) -> tuple[object, ...]:
        return (ctx.scope.conversation_key, ctx.conversation_id, ctx.message_id, ctx.attempt)

    def rest(self, ctx: OutputContext, text: str) -> str:
        """The part of `text` still to check."""
        passed = self._passed.get(self.key(ctx))
        if not passed or not text.startswith(passed) or len(passed) <= _OVERLAP:
            return text
        cut = text.rfind(" ", 0, len(passed) - _OVERLAP)
        return text if cut < 0 else text[cut + 1 :]

    def passed(self, ctx: OutputContext, text: str) -> None:
        key = self.key(ctx)
        self._passed[key] = text
        self._passed.move_to_end(key)
        if len(self._passed) > self._size:
            self._passed.popitem(last=False)


# -- matching terms -------------------------------------------------------------------


def _spaced_script(char: str) -> bool:
    """True for a letter of a script written with spaces between words."""
    if not char.isalnum():
        return False
    name = unicodedata.name(char, "")
    return not name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "THAI", "LAO", "KHMER"))


_SEP = r"[\s\-_.*]*"


# Inside a word one punctuation mark may split it ("Schimpf-Wort", "frob.nicate").
_INNER = r"[\-_.*·]?"
_HEAD = r"(?<![^\W_])"
_TAIL = r"(?![^\W_])"


def _atoms(term: str) -> tuple[str, ...] | None:
    """A term as a sequence of pattern atoms (merged into one trie for all terms)."""
    folded = fold(fold_pattern(term))
    if not folded:
        return None
    atoms: list[str] = [_HEAD] if _spaced_script(folded[0]) else []
    for w, word in enumerate(folded.split(" ")):
        if w:
            # Words of a phrase may be joined by any run of spaces or separators.
            atoms.append(_SEP)
        for i, char in enumerate(word):
            if i:
                # A CJK or Thai word's characters may be spaced apart ("考 试 作 弊").
                spaced = _spaced_script(char) and _spaced_script(word[i - 1])
                atoms.append(_INNER if spaced else _SEP)
            atoms.append(re.escape(char))
    if _spaced_script(folded[-1]):
        atoms.append(_TAIL)
    return tuple(atoms)


_Trie = dict[str, "_Trie"]


def _trie_pattern(node: _Trie) -> str:
    branches = [atom + _trie_pattern(child) for atom, child in node.items() if atom]
    if "" in node:  # a term ends here: any match will do
        return ""
    if len(branches) == 1:
        return branches[0]
    return "(?:" + "|".join(branches) + ")"


class TermMatcher:
    """Finds any of `terms` in a text, however it was disguised (see the module
    docstring). All terms are merged into one trie-shaped pattern, so each position
    of the text tries only the terms that begin with its character."""

    def __init__(self, terms: Iterable[str]) -> None:
        self._terms: list[tuple[re.Pattern[str], str]] = []
        trie: _Trie = {}
        for term in terms:
            if len(term) > MAX_TERM_CHARS:
                raise ValueError(f"a blocklist term is at most {MAX_TERM_CHARS} characters")
            atoms = _atoms(term)
            if atoms is None:
                continue
            node = trie
            for atom in atoms:
                node = node.setdefault(atom, {})
            if "" not in node:
                node[""] = {}
                self._terms.append((re.compile("".join(atoms)), term))
            if len(self._terms) > MAX_TERMS:
                raise ValueError(f"a blocklist holds at most {MAX_TERMS} terms")
        self._pattern = re.compile(_trie_pattern(trie)) if self._terms else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def find(self, text: str) -> str | None:
        """The first term (as written in the list) found in `text`, or None."""
        if self._pattern is None or not text:
            return None
        for form in variants(fold(window(text, MAX_CHARS))):
            match = self._pattern.search(form)
            if match is None:
                continue
            # Which term: only the few that match at this spot are tried again.
            for pattern, term in self._terms:
                if pattern.match(form, match.start()):
                    return term
            return self._terms[0][1]  # unreachable: the trie holds only these terms
        return None


class _Matchers:
    """Matchers built once per term list (a persona version, a channel's list)."""

    def __init__(self, size: int = 256) -> None:
        self._cache: OrderedDict[tuple[str, ...], TermMatcher] = OrderedDict()
        self._size = size

    def get(self, terms: Sequence[str]) -> TermMatcher:
        key = tuple(terms)
        matcher = self._cache.get(key)
        if matcher is None:
            matcher = self._cache[key] = TermMatcher(key)
            if len(self._cache) > self._size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return matcher


class DeclinedTopicCheck:
    """Blocks a reply that names a topic the persona declines.

    A topic is matched as written (folded, whole words): "medical diagnoses" blocks a
    reply that says it, not one that only discusses the matter in other words; the
    model check (if configured) is the layer that reads meaning. The persona's own
    decline message is never blocked.
    """

    name = "declined_topic"

    def __init__(self) -> None:
        self._matchers = _Matchers()
        self._prefixes = _Prefixes()

    async def check(self, ctx: OutputContext, text: str) -> str | None:
        safety = ctx.loaded.persona.safety
        if not safety.decline_topics or text.strip() == safety.decline_message.strip():
            return None
        found = self._matchers.get(safety.decline_topics).find(self._prefixes.rest(ctx, text))
        if found is None:
            self._prefixes.passed(ctx, text)
            return None
        return f"declined topic: {found}"


def channel_keys(ctx: OutputContext) -> tuple[str, ...]:
    """The keys of `safety.moderation.blocklists` that apply to a reply's place, most
    general first: "*", the platform, its server or group, its channel."""
    scope = ctx.scope
    keys = ["*", scope.platform]
    if scope.space is not None:
        keys.append(f"{scope.platform}:{scope.space}")
    keys.append(f"{scope.platform}:{scope.channel}")
    return tuple(keys)


class BlocklistCheck:
    """Blocks a reply holding a term of the persona's blocklist or of the channel's
    (`blocklists` keyed "*", "discord", "discord:GUILD", "telegram:CHAT", ...)."""

    name = "blocklist"

    def __init__(self, blocklists: Mapping[str, Sequence[str]] | None = None) -> None:
        self.blocklists = {k: tuple(v) for k, v in (blocklists or {}).items()}
        self._matchers = _Matchers()
        self._prefixes = _Prefixes()
        # Validate the configured lists now: a bad list is a start-up error.
        for terms in self.blocklists.values():
            self._matchers.get(terms)

    async def check(self, ctx: OutputContext, text: str) -> str | None:
        reason = self._check(ctx, self._prefixes.rest(ctx, text))
        if reason is None:
            self._prefixes.passed(ctx, text)
        return reason

    def _check(self, ctx: OutputContext, text: str) -> str | None:
        own = tuple(getattr(ctx.loaded.persona.safety, "blocklist", ()) or ())
        if own:
            found = self._matchers.get(own).find(text)
            if found is not None:
                return f"persona blocklist: {found}"
        for key in channel_keys(ctx):
            terms = self.blocklists.get(key)
            if terms:
                found = self._matchers.get(terms).find(text)
                if found is not None:
                    return f"blocklist {key}: {found}"
        return None
