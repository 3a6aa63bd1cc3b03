"""Generated token ids turned into text deltas that are safe to send: no half UTF-8
character, and nothing past (or possibly the start of) a stop string. Used by the
transformers backend's worker thread (bot/llm/transformers_worker.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


class _TextFeed:
    """Turns the growing list of generated token ids into safe text deltas.

    Holds back an incomplete UTF-8 character and any tail that could be the start of
    a stop string; cuts at the first stop string and then says `stopped`.
    """

    def __init__(
        self, tokenizer: Any, stops: Sequence[str], emit: Callable[[str], None] | None
    ) -> None:
        self._tokenizer = tokenizer
        self._stops = tuple(s for s in stops if s)
        self._emit = emit
        self._sent: list[str] = []
        self._sent_len = 0
        self.stopped = False

    @property
    def text(self) -> str:
        return "".join(self._sent)

    def update(self, ids: Sequence[int], *, final: bool = False) -> None:
        if self.stopped:
            return
        text = self._tokenizer.decode(ids, skip_special_tokens=True)
        if not final and text.endswith("\ufffd"):
            return  # the rest of a multi-byte character is still to come
        cut = self._first_stop(text)
        if cut is not None:
            text, self.stopped = text[:cut], True
            safe = len(text)
        elif final:
            safe = len(text)
        else:
            safe = len(text) - self._held_back(text)
        if safe > self._sent_len:
            delta = text[self._sent_len : safe]
            self._sent.append(delta)
            self._sent_len = safe
            if self._emit is not None:
                self._emit(delta)

    def _first_stop(self, text: str) -> int | None:
        # Only the unsent tail can hold a new stop string (sent text was checked).
        start = max(0, self._sent_len - max((len(s) for s in self._stops), default=0))
        found = [i for s in self._stops if (i := text.find(s, start)) != -1]
        return min(found) if found else None

    def _held_back(self, text: str) -> int:
        # The longest tail of `text` that a stop string starts with.
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best
