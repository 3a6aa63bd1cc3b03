"""Turning raw model text into a message fit to send.

Small models often echo a role label ("Samantha:", "assistant:"), run past a stop
string, or leak chat-template tokens. `clean_reply` fixes a whole reply;
`StreamCleaner` does the same to a stream, holding back only the few characters
that could still turn out to be a label or a stop string.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["StreamCleaner", "clean_reply"]

_TEMPLATE_TOKENS = re.compile(
    r"<\|(?:im_start|im_end|endoftext|eot_id|start_header_id|end_header_id)\|>"
)


def _label_pattern(names: Sequence[str]) -> re.Pattern[str]:
    labels = {"assistant", "bot", "ai", *(n for n in names if n)}
    alternatives = "|".join(sorted((re.escape(label) for label in labels), key=len, reverse=True))
    # "Samantha:", "**Samantha**:", "[Samantha]:", "assistant\n" at the very start.
    return re.compile(
        rf"^\s*(?:\*\*|\[)?(?:{alternatives})(?:\*\*|\])?\s*(?::|：|\n)\s*", re.IGNORECASE
    )


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = len(text)
    for stop in stops:
        if stop:
            at = text.find(stop)
            if at != -1:
                cut = min(cut, at)
    return text[:cut], cut < len(text)


def clean_reply(text: str, *, names: Sequence[str] = (), stops: Sequence[str] = ()) -> str:
    """The reply without echoed role labels, template tokens, or anything past a stop string.

    Returns "" when nothing is left; the caller decides what to do about that.
    """
    text, _ = _cut_at_stop(text, stops)
    text = _TEMPLATE_TOKENS.split(text, maxsplit=1)[0] if "<|" in text else text
    pattern = _label_pattern(names)
    previous = None
    while previous != text:  # "assistant: Samantha: hi" loses both labels
        previous = text
        text = pattern.sub("", text, count=1)
    return text.strip()


class StreamCleaner:
    """Applies `clean_reply` to a stream of deltas, emitting text as soon as it is safe."""

    def __init__(self, *, names: Sequence[str] = (), stops: Sequence[str] = ()) -> None:
        self._names = tuple(names)
        self._stops = (*(s for s in stops if s), "<|")
        self._pattern = _label_pattern(self._names)
        self._buffer = ""
        self._emitted = 0
        self._head_done = False
        self.stopped = False
        self._head_len = max((len(n) for n in (*self._names, "assistant")), default=9) + 8

    def feed(self, delta: str) -> str:
        """Text that can be shown now (possibly empty)."""
        if self.stopped:
            return ""
        self._buffer += delta
        cleaned, hit = _cut_at_stop(self._buffer, self._stops)
        if hit:
            self.stopped = True
            return self._emit(cleaned, final=True)
        return self._emit(cleaned, final=False)

    def finish(self) -> str:
        """Whatever is left when the stream ends."""
        if self.stopped:
            return ""
        cleaned, _ = _cut_at_stop(self._buffer, self._stops)
        return self._emit(cleaned, final=True)

    def _emit(self, text: str, *, final: bool) -> str:
        if not self._head_done:
            if not final and len(text) < self._head_len:
                return ""  # a label could still be forming
            self._head_done = True
        body = clean_reply(text, names=self._names) if final else self._strip_head(text)
        if not final:
            # Hold back a tail that could be the start of a stop string.
            hold = max((len(s) - 1 for s in self._stops), default=0)
            body = body[: max(0, len(body) - hold)] if hold else body
        else:
            body = body.rstrip()
        out = body[self._emitted :]
        self._emitted = max(self._emitted, len(body))
        return out

    def _strip_head(self, text: str) -> str:
        previous = None
        while previous != text:
            previous = text
            text = self._pattern.sub("", text, count=1)
        return text.lstrip()
