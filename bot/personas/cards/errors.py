"""`CardError`: a card, lorebook or export that cannot be used, naming where.

A `UsageError` (exit 2): the person running `bot personas import` gave a file that
is not a usable card. The message is one line, `FILE: FIELD: what is wrong`.
"""

from __future__ import annotations

from bot.errors import UsageError

__all__ = ["CardError"]


class CardError(UsageError):
    """A bad card: `source` (the file), `field` (a dotted path in the card, or the
    file's part such as `png` or `zip`) and `reason`."""

    label = "card error"

    def __init__(self, source: str, field: str, reason: str) -> None:
        self.source = source
        self.field = field
        self.reason = reason
        super().__init__(f"{source}: {field}: {reason}")
