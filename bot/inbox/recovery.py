"""Recovery on start: finish what a crash left unfinished (being written)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bot.inbox.worker import InboxWorker

__all__ = ["RecoveryReport", "recover"]


@dataclass
class RecoveryReport:
    """What recovery found and queued."""

    resumed: int = 0
    expired: int = 0
    redelivered: int = 0
    apologies: int = 0


async def recover(
    target: Any, worker: InboxWorker, *, now: datetime | None = None
) -> RecoveryReport:
    """Queue the unfinished work of `target.platform` into `worker`'s lanes."""
    return RecoveryReport()
