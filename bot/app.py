"""Wiring: one place that builds the parts from settings and tears them down.

`open_app(settings)` is an async context manager (an `AsyncExitStack` inside), so
two bots, or two tests, can live in one process: nothing here is module-global.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.commands import Commands
from bot.config import LLMSettings, Settings
from bot.db import Database
from bot.engine import PersonaEngine
from bot.llm.base import LLMBackend
from bot.memory.ledger import Ledger
from bot.people import People
from bot.personas import LoadedPersona, PersonaRegistry

if TYPE_CHECKING:
    from adapters.base import AdapterServices

__all__ = ["App", "BackendPool", "open_app"]


class BackendPool:
    """One backend per (kind, model, server), created on first use and shared.

    A persona may name its own backend and model; otherwise the configured ones
    serve. `fixed` pins every persona to one backend (tests, benchmarks).
    """

    def __init__(self, settings: LLMSettings, *, fixed: LLMBackend | None = None) -> None:
        self.settings = settings
        self._fixed = fixed
        self._backends: dict[tuple[str, str], LLMBackend] = {}
        self._lock = asyncio.Lock()

    async def for_persona(self, persona: LoadedPersona) -> LLMBackend:
        """The backend that voices `persona` (model overrides included)."""
        if self._fixed is not None:
            return self._fixed
        choice = persona.persona.model
        kind = choice.backend or self.settings.backend
        # An openai-style server serves several models through one client; only a
        # local backend needs one instance per model.
        model = self.settings.model if kind == "openai" else (choice.name or self.settings.model)
        key = (kind, model)
        backend = self._backends.get(key)
        if backend is not None:
            return backend
        async with self._lock:
            backend = self._backends.get(key)
            if backend is None:
                from bot.llm.factory import create_backend

                backend = await create_backend(self.settings, backend=kind, model=model)
                self._backends[key] = backend
        return backend

    async def aclose(self) -> None:
        """Close every backend this pool created."""
        for backend in self._backends.values():
            await backend.aclose()
        self._backends.clear()


@dataclass
class App:
    """The parts of a running bot, for adapters and commands to use."""

    settings: Settings
    db: Database
    ledger: Ledger
    personas: PersonaRegistry
    backends: BackendPool
    engine: PersonaEngine
    people: People
    commands: Commands

    @property
    def services(self) -> AdapterServices:
        """What adapters are built with."""
        from adapters.base import AdapterServices

        return AdapterServices(engine=self.engine, commands=self.commands, people=self.people)


@asynccontextmanager
async def open_app(
    settings: Settings,
    *,
    backend: LLMBackend | None = None,
    watch: bool | None = None,
) -> AsyncIterator[App]:
    """Open the database (migrated), load personas, and build the engine.

    `backend` replaces the configured one for every persona; `watch` overrides
    `personas.watch` (hot reload). On exit, turns in flight are drained first.
    """
    async with AsyncExitStack() as stack:
        db = await asyncio.to_thread(
            Database.open,
            settings.database.url,
            busy_timeout_ms=settings.database.busy_timeout_ms,
            migrate=settings.database.migrate_on_start,
        )
        stack.push_async_callback(db.aclose)
        ledger = Ledger(db)

        async def remember(loaded: LoadedPersona) -> None:
            await ledger.record_persona_version(
                loaded.persona.id, loaded.content_hash, str(loaded.path), loaded.source
            )

        registry = PersonaRegistry(settings.personas.dirs, on_loaded=remember)
        await registry.load_all()  # the registry logs each problem, file:line first
        backends = BackendPool(settings.llm, fixed=backend)
        stack.push_async_callback(backends.aclose)
        engine = PersonaEngine(
            personas=registry,
            ledger=ledger,
            backends=backends,
            settings=settings.engine,
            max_concurrency=settings.llm.max_concurrency,
            context_window=settings.llm.context_window,
            timezone=settings.engine.timezone,
        )
        if settings.personas.watch if watch is None else watch:
            stop = asyncio.Event()
            task = asyncio.create_task(registry.watch(stop), name="persona-watch")

            async def stop_watching() -> None:
                stop.set()
                with suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, timeout=5)

            stack.push_async_callback(stop_watching)
        stack.push_async_callback(engine.drain)
        people = People(db)
        commands = Commands(engine=engine, people=people, personas=registry)
        yield App(settings, db, ledger, registry, backends, engine, people, commands)
