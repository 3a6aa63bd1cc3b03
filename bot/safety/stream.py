"""Streaming that never shows what the output checks would block.

`StreamGuard` sits between the backend's stream and the person: it shows text only
up to a word boundary some characters behind the newest, and only once the stage's
output checks passed on everything up to there.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from bot.safety.stage import DeltaCallback, OutputContext

if TYPE_CHECKING:
    from bot.safety.stage import SafetyStage

__all__ = ["StreamGuard"]

# Where shown text may end: after a space or a punctuation mark (CJK ones too).
_BOUNDARY = re.compile(r"[\s.!?,;:。！？，、；：…]")


class StreamGuard:
    """Shows a streamed reply as it comes, but only up to a word boundary at least
    `hold_back` characters behind the newest text, and only once the output checks
    passed on everything up to there: what is shown is always a prefix the stage let
    through, and a phrase still arriving is held. The held tail is shown by `flush`
    once the whole reply passed.

    When an output check is `expensive` (a model or HTTP call), the prefix is screened
    at most every `expensive_step` characters, not at every word."""

    def __init__(
        self,
        stage: SafetyStage,
        ctx: OutputContext,
        on_delta: DeltaCallback,
        *,
        hold_back: int = 24,
        expensive_step: int = 80,
    ) -> None:
        self.stage = stage
        self.ctx = ctx
        self.on_delta = on_delta
        self.hold_back = hold_back
        expensive = any(getattr(c, "expensive", False) for c in stage.output_checks)
        self.step = expensive_step if expensive else 1
        self._text: list[str] = []
        self._shown = 0  # characters of the joined text already shown
        self._blocked = False

    @property
    def shown(self) -> str:
        """What the person has seen of this attempt."""
        return "".join(self._text)[: self._shown]

    async def feed(self, piece: str) -> None:
        """Take a streamed piece; show whatever complete sentences now pass."""
        self._text.append(piece)
        if self._blocked:
            return
        text = "".join(self._text)
        end = _last_boundary(text, self._shown, len(text) - self.hold_back)
        if end - self._shown < self.step:
            return
        verdict = await self.stage.screen(self.ctx, text[:end])
        if not verdict.ok:
            self._blocked = True
            return
        await self.on_delta(text[self._shown : end])
        self._shown = end

    async def flush(self) -> None:
        """The whole reply passed: show the rest."""
        text = "".join(self._text)
        if not self._blocked and len(text) > self._shown:
            await self.on_delta(text[self._shown :])
            self._shown = len(text)

    def abandon(self) -> None:
        """The reply was blocked: show nothing more of it."""
        self._blocked = True


def _last_boundary(text: str, start: int, limit: int) -> int:
    """The end of the last boundary in text[start:limit] (start when there is none)."""
    end = start
    if limit <= start:
        return end
    for match in _BOUNDARY.finditer(text, start, limit):
        end = match.end()
    return end
