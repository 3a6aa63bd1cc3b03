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
        # Where a stop string or a template token can start: only there is a partial
        # match worth trying.
        firsts = {"<", "[", *(s[0] for s in clean_stops)}
        self.starts = regex.compile("[" + "".join(regex.escape(c) for c in sorted(firsts)) + "]")

    def clean(self, raw: str) -> str:
        """`clean_reply` of `raw`: the whole text, complete."""
        text = strip_controls(raw)
        cut, _ = self.cut_at(text, 0, final=True)
        if cut is not None:
            text = text[:cut]
        head = self.head(text, final=True)
        assert head is not None  # a final text always has a head
        return text[head:].strip()

    def cut_at(self, text: str, start: int, *, final: bool) -> tuple[int | None, int]:
        """(where the reply ends for sure, or None; how much of `text` is safe to show).

        No stop string or token starts before `start` (the caller checked that part).
        """
        found = self.cut.search(text, start)
        first = found.start() if found is not None else None
        if final:
            return first, len(text)
        # A stop string or token may be starting in the last few characters: nothing
        # from where it starts is safe, and it may end the reply before `first`.
        end = first if first is not None else len(text)
        for candidate in self.starts.finditer(text, max(start, len(text) - self.cut_max), end):
            at = candidate.start()
            if self.cut.match(text, at, partial=True) is not None:
                return None, at
        return first, len(text)

    def head(self, text: str, *, final: bool) -> int | None:
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


def _split_pending(raw: str) -> tuple[str, str]:
    """(the part of `raw` that cleans the same whatever follows, the rest).

    Held back: an escape sequence still arriving (cleaned now, it would lose only its
    ESC and show the rest) and a final CR (it may be the start of a CRLF).
    """
    for start in _ESCAPE_START.finditer(raw, max(0, len(raw) - _ESCAPE_MAX)):
        found = _ESCAPE_LONG.match(raw, start.start(), partial=True)
        if found is not None and found.partial:
            return raw[: start.start()], raw[start.start() :]
    if raw.endswith("\r"):
        return raw[:-1], "\r"
    return raw, ""


@lru_cache(maxsize=256)
def _rules(names: tuple[str, ...], stops: tuple[str, ...]) -> _Rules:
    return _Rules(names, stops)


def clean_reply(text: str, *, names: Sequence[str] = (), stops: Sequence[str] = ()) -> str:
    """The reply without control characters, escape sequences, echoed role labels,
    template tokens, or anything from a stop string on.

    Returns "" when nothing is left; the caller decides what to do about that.
    """
    return _rules(tuple(names), tuple(stops)).clean(text)


class StreamCleaner:
    """Applies `clean_reply` to a stream of deltas, emitting text as soon as it is safe.

    The concatenation of everything `feed` and `finish` return is exactly
    `clean_reply` of the concatenated deltas (up to the first stop, after which
    `stopped` is true and further deltas are ignored). Each delta costs about its
    own length once the head is decided: only a bounded tail is looked at again.
    """

    def __init__(self, *, names: Sequence[str] = (), stops: Sequence[str] = ()) -> None:
        self._rules = _rules(tuple(names), tuple(stops))
        self._raw: list[str] = []  # every delta, for the final clean_reply
        self._pending = ""  # raw text that cannot be cleaned yet
        self._text = ""  # the clean text so far (controls and escapes removed)
        self._body: int | None = None  # where the reply starts in it, once known
        self._shown = 0  # how far into it has been emitted
        self._emitted: list[str] = []
        self._done = False
        self.stopped = False

    def feed(self, delta: str) -> str:
        """Text that can be shown now (possibly empty)."""
        if self._done or not delta:
            return ""
        self._raw.append(delta)
        safe, self._pending = _split_pending(self._pending + delta)
        searched = len(self._text)
        self._text += strip_controls(safe)
        text = self._text
        # Nothing ends the reply in what was searched before, except its last few
        # characters, where a stop string may have been starting.
        cut, hold = self._rules.cut_at(
            text, max(0, searched - self._rules.cut_max), final=False
        )
        if cut is not None:
            self.stopped = self._done = True
            return self._final()
        if self._body is None:
            head = self._rules.head(text[:hold], final=False)
            if head is None:
                return ""  # a label could still be forming
            rest = text[head:hold]
            self._body = self._shown = head + len(rest) - len(rest.lstrip())
        # Trailing whitespace waits: the final reply is stripped.
        end = self._shown + len(text[self._shown : hold].rstrip())
        if end <= self._shown:
            return ""
        return self._emit(text[self._shown : end], end)

    def finish(self) -> str:
        """Whatever is left when the stream ends."""
        if self._done:
            return ""
        self._done = True
        return self._final()

    def _final(self) -> str:
        final = self._rules.clean("".join(self._raw))
        shown = "".join(self._emitted)
        # Never unsay anything: what was shown is always the start of the final reply.
        if not final.startswith(shown):
            return ""
        return self._emit(final[len(shown) :], self._shown)

    def _emit(self, out: str, shown: int) -> str:
        if out:
            self._emitted.append(out)
        self._shown = shown
        return out
