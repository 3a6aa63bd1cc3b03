"""Turning raw model text into a message fit to store, send and print.

Small models often echo a role label ("Samantha:", "assistant:"), run past a stop
string, leak chat-template tokens, or emit control characters and terminal escape
sequences. `clean_reply` fixes a whole reply; `StreamCleaner` does the same to a
stream and emits exactly what `clean_reply` makes of the whole text, holding back
only what could still change: the head while a label could be forming, a tail that
could become a stop string, a template token or an escape sequence, and trailing
whitespace.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import regex

from bot.text import LONG_ESCAPE, strip_controls

__all__ = ["StreamCleaner", "clean_reply"]

# Chat-template tokens a model may spell out in text; the reply ends where one starts.
_TEMPLATE_TOKENS = (
    r"<\|[^<>|\s]{1,64}\|>"  # ChatML, Llama 3, Phi, Command-R, gpt-oss
    r"|<｜[^<>｜\s]{1,64}｜>"  # DeepSeek
    r"|</?s>|<(?:start|end)_of_turn>|\[/?INST\]|<</?SYS>>"  # Llama 2, Mistral, Gemma
)
# The longest template token the pattern above can match.
_TEMPLATE_MAX = 68

# The escape sequences longer than two characters (CSI, OSC): a partial match of
# one of them must be told apart from the two-character escape its start also is.
_ESCAPE_LONG = regex.compile(LONG_ESCAPE)
_ESCAPE_START = regex.compile(r"[\x1b\x9b\x9d]")
_ESCAPE_MAX = 520


class _Rules:
    """The compiled patterns for one set of persona names and stop strings."""

    def __init__(self, names: Sequence[str], stops: Sequence[str]) -> None:
        labels = {"assistant", "bot", "ai", *(n for n in names if n)}
        alternatives = "|".join(
            sorted((regex.escape(label) for label in labels), key=len, reverse=True)
        )
        # "Samantha:", "**Samantha**:", "[Samantha]:", "assistant\n" at the very start.
        self.label = regex.compile(
            rf"\s*(?:\*\*|\[)?(?:{alternatives})(?:\*\*|\])?\s*(?::|：|\n)\s*",
            regex.IGNORECASE | regex.V0,
        )
        self.head_len = max(len(label) for label in labels) + 8
        clean_stops = sorted({s for s in map(strip_controls, stops) if s}, key=len, reverse=True)
        self.cut = regex.compile(
            "|".join([*(regex.escape(s) for s in clean_stops), _TEMPLATE_TOKENS]), regex.V0
        )
        self.cut_max = max([_TEMPLATE_MAX, *(len(s) for s in clean_stops)])

    def clean(self, raw: str, *, final: bool) -> tuple[str, bool]:
        """What can be shown of `raw`, and whether it ended at a stop or template token.

        With `final` the text is complete: this is `clean_reply`. Without, the result
        is the longest prefix of every possible final result, for a stream.
        """
        if not final:
            raw = _without_partial_escape(raw)
        text = strip_controls(raw)
        cut, hold = self._cut(text, final=final)
        stopped = cut is not None
        if cut is not None:
            text, final = text[:cut], True
        else:
            text = text[:hold]
        head = self._head(text, final=final)
        if head is None:
            return "", stopped
        # Trailing whitespace is held back too: the final result is stripped.
        return text[head:].strip(), stopped

    def _cut(self, text: str, *, final: bool) -> tuple[int | None, int]:
        """(where the reply ends for sure, or None; how much of it is safe to show)."""
        found = self.cut.search(text)
        first = found.start() if found is not None else None
        if final:
            return first, len(text)
        # A stop string or token may be starting in the last few characters: nothing
        # from where it starts is safe, and it may end the reply before `first`.
        end = first if first is not None else len(text)
        for at in range(max(0, len(text) - self.cut_max), end):
            if self.cut.match(text, at, partial=True) is not None:
                return None, at
        return first, len(text)

    def _head(self, text: str, *, final: bool) -> int | None:
        """How many leading characters are role labels; None while that may change."""
        at = 0
        while (found := self.label.match(text, at)) is not None and found.end() > at:
            if not final and found.end() == len(text):
                return None  # more whitespace, or a separator, may still come
            at = found.end()
        if final:
            return at
        rest = text[at:]
        if not rest.strip():
            return None
        if self.label.match(text, at, partial=True) is not None:
            return None  # a label could still be forming here
        if len(text.lstrip()) < self.head_len:
            return None  # too short to rule out a longer name starting the same way
        return at


def _without_partial_escape(raw: str) -> str:
    # An escape sequence still arriving would lose only its ESC if cleaned now, and
    # show the rest of it; hold it back until it is complete (or cannot be one).
    for start in _ESCAPE_START.finditer(raw, max(0, len(raw) - _ESCAPE_MAX)):
        found = _ESCAPE_LONG.match(raw, start.start(), partial=True)
        if found is not None and found.partial:
            return raw[: start.start()]
    return raw


@lru_cache(maxsize=256)
def _rules(names: tuple[str, ...], stops: tuple[str, ...]) -> _Rules:
    return _Rules(names, stops)


def clean_reply(text: str, *, names: Sequence[str] = (), stops: Sequence[str] = ()) -> str:
    """The reply without control characters, escape sequences, echoed role labels,
    template tokens, or anything from a stop string on.

    Returns "" when nothing is left; the caller decides what to do about that.
    """
    return _rules(tuple(names), tuple(stops)).clean(text, final=True)[0]


class StreamCleaner:
    """Applies `clean_reply` to a stream of deltas, emitting text as soon as it is safe.

    The concatenation of everything `feed` and `finish` return is exactly
    `clean_reply` of the concatenated deltas (up to the first stop, after which
    `stopped` is true and further deltas are ignored).
    """

    def __init__(self, *, names: Sequence[str] = (), stops: Sequence[str] = ()) -> None:
        self._rules = _rules(tuple(names), tuple(stops))
        self._buffer = ""
        self._emitted = ""
        self.stopped = False

    def feed(self, delta: str) -> str:
        """Text that can be shown now (possibly empty)."""
        if self.stopped:
            return ""
        self._buffer += delta
        text, self.stopped = self._rules.clean(self._buffer, final=False)
        if self.stopped:  # the reply is complete: what remains is final
            text, _ = self._rules.clean(self._buffer, final=True)
        return self._advance(text)

    def finish(self) -> str:
        """Whatever is left when the stream ends."""
        if self.stopped:
            return ""
        text, _ = self._rules.clean(self._buffer, final=True)
        return self._advance(text)

    def _advance(self, text: str) -> str:
        # Never unsay anything: the rules make every safe text extend the last one.
        if not text.startswith(self._emitted):
            return ""
        out = text[len(self._emitted) :]
        self._emitted = text
        return out
