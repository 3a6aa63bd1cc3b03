"""The engine's work in flight: turns and background observations counted, finished
turns handed to memory and observers, and `drain` waiting for all of them.

A mixin of `PersonaEngine` (bot/engine.py), which owns the state declared here.
"""

from __future__ import annotations

import asyncio

import structlog

from bot.aio import wait_for
from bot.engine_types import MemorySource, TurnObserver, TurnRecord
from bot.memory.ledger import Ledger
from bot.metrics import Metrics

log = structlog.get_logger("bot.engine")


class InFlight:
    """Counts what is in flight so that a stop can wait for it."""

    memory: MemorySource | None
    observers: list[TurnObserver]
    ledger: Ledger
    metrics: Metrics
    _active: int  # turns and background observations in flight
    _idle: asyncio.Event
    _background: set[asyncio.Task[None]]
    _accepting: bool

    async def drain(self, grace_s: float = 30.0) -> bool:
        """Stop accepting turns and wait up to `grace_s` for those in flight; True if
        all finished."""
        self._accepting = False
        try:
            await wait_for(self._idle.wait(), timeout=grace_s)
        except TimeoutError:
            log.warning("engine.drain_timeout", turns_in_flight=self._active)
            return False
        return True

    def _observe(self, turn: TurnRecord) -> None:
        """Hand a finished turn to memory and the other observers in the background;
        `drain` waits for them. One failing observer does not stop the others."""
        observers: list[TurnObserver] = [*([self.memory] if self.memory else []), *self.observers]

        async def observe() -> None:
            try:
                for observer in observers:
                    try:
                        await observer.observe(turn)
                    except Exception as exc:
                        log.warning(
                            "turn.observe_failed",
                            observer=type(observer).__name__,
                            error=str(exc),
                            error_type=type(exc).__name__,
                        )
                        await self.ledger.record_failure(
                            stage="observe", error=exc, conversation_id=turn.conversation_id
                        )
                        self.metrics.failure("observe")
            finally:
                self._background.discard(task)
                self._settle()

        self._active += 1
        self._idle.clear()
        task = asyncio.create_task(observe(), name=f"observe-{turn.reply_id}")
        self._background.add(task)

    def _settle(self) -> None:
        self._active -= 1
        if self._active == 0:
            self._idle.set()
