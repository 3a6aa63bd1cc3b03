"""The running bot's side of adapter serving: routing, and a keeper that holds vLLM
to the registry.

`attach_adapters` gives the engine an `AdapterRouter` (each conversation's canary or
serving adapter) and, when the bot talks to a vLLM server, starts `AdapterKeeper`: at
start and every `finetune.adapter_check_s` it loads again the live adapters that
vLLM does not list (it restarted) and compares each canary's feedback, rolling back
the ones that are worse. A failing check is logged and tried again next time; it
never stops the bot.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import structlog

from bot.aio import wait_for
from bot.db import Database
from bot.engine import PersonaEngine
from bot.errors import UsageError
from bot.train.canary import AdapterRouter, CanaryVerdict, check_canaries
from bot.train.deploy import ReloadResult, VLLMAdmin, ensure_loaded
from bot.train.registry import AdapterRegistry

if TYPE_CHECKING:
    from bot.config import FinetuneSettings, Settings

__all__ = ["AdapterKeeper", "attach_adapters"]

log = structlog.get_logger("bot.train.serving")


class AdapterKeeper:
    """Keeps vLLM serving what the registry says, and canaries honest (see above)."""

    def __init__(
        self,
        registry: AdapterRegistry,
        router: AdapterRouter,
        admin: VLLMAdmin,
        settings: FinetuneSettings,
    ) -> None:
        self.registry = registry
        self.router = router
        self.admin = admin
        self.settings = settings
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def tick(self, now: datetime | None = None) -> tuple[ReloadResult, list[CanaryVerdict]]:
        """One check: reload what is missing, then compare canaries."""
        s = self.settings
        reloaded = await ensure_loaded(self.registry, self.admin)
        verdicts = await check_canaries(
            self.registry,
            margin=s.rollback_margin,
            min_feedback=s.min_feedback,
            confidence=s.feedback_confidence,
            now=now or datetime.now(UTC),
        )
        if any(v.rollback for v in verdicts):
            self.router.invalidate()  # conversations go back at once, not in refresh_s
        return reloaded, verdicts

    async def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                await self.tick()
            except Exception as exc:  # vLLM down, database busy: next time
                log.warning("adapters.check_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await wait_for(self._stop.wait(), self.settings.adapter_check_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="adapter-keeper")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.admin.aclose()


async def attach_adapters(
    settings: Settings, db: Database, engine: PersonaEngine, stack: AsyncExitStack, *, keep: bool
) -> AdapterRouter:
    """Route the engine's conversations through the adapter registry; with `keep`
    (the bot talks to the configured vLLM) also start the keeper, stopped by `stack`."""
    registry = AdapterRegistry(db)
    router = AdapterRouter(registry)
    engine.adapters = router
    if keep:
        key = settings.llm.resolved_api_key()
        try:
            admin = VLLMAdmin(
                settings.llm.base_url,
                api_key=key.get_secret_value() if key is not None else None,
                timeout_s=settings.llm.timeout_s,
            )
        except UsageError as exc:  # the backend itself says what is wrong with the URL
            log.warning("adapters.no_keeper", error=str(exc))
            return router
        keeper = AdapterKeeper(registry, router, admin, settings.finetune)
        keeper.start()
        stack.push_async_callback(keeper.stop)
    return router
