"""Wiring: one place that builds the parts from settings and tears them down.

`open_app(settings)` is an async context manager (an `AsyncExitStack` inside), so
two bots, or two tests, can live in one process: nothing here is module-global.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from bot.aio import wait_for
from bot.commands import Commands, StoreMemoryControl
from bot.config import LLMSettings, MemorySettings, Settings
from bot.db import Database
from bot.engine import PersonaEngine
from bot.inbox import Inbox
from bot.llm.base import LLMBackend
from bot.memory.embeddings import Embedder
from bot.memory.ledger import Ledger
from bot.memory.store import SearchWeights, SQLiteMemory
from bot.metrics import Metrics
from bot.people import People
from bot.personas import LoadedPersona, PersonaRegistry
from bot.safety.build import Safety, build_safety

if TYPE_CHECKING:
    from adapters.base import AdapterServices

__all__ = ["App", "BackendPool", "build_memory", "open_app"]

log = structlog.get_logger("bot.app")


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

    def choice(self, persona: LoadedPersona) -> tuple[str, str]:
        """The (backend kind, model) that voices `persona`, overrides included."""
        if self._fixed is not None:
            return self._fixed.name, self.settings.model
        choice = persona.persona.model
        kind = choice.backend or self.settings.backend
        # An openai-style server serves several models through one client; only a
        # local backend needs one instance per model.
        model = self.settings.model if kind == "openai" else (choice.name or self.settings.model)
        return kind, model

    async def for_persona(self, persona: LoadedPersona) -> LLMBackend:
        """The backend that voices `persona` (model overrides included)."""
        if self._fixed is not None:
            return self._fixed
        key = self.choice(persona)
        kind, model = key
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
    memory: SQLiteMemory | None = None
    #: Extra upkeep jobs for the scheduler, by name: each takes `now`.
    upkeep: dict[str, Callable[[datetime], Awaitable[Any]]] = field(default_factory=dict)
    #: Platform events, committed before they are acknowledged (`bot.inbox`).
    inbox: Inbox | None = None
    #: The safety stage, its events and the moderators' alerts (`bot.safety`).
    safety: Safety | None = None

    @property
    def metrics(self) -> Metrics:
        """This process's metrics (bot/metrics/): the engine's, which /metrics serves."""
        return self.engine.metrics

    @property
    def services(self) -> AdapterServices:
        """What adapters are built with."""
        from adapters.base import AdapterServices

        return AdapterServices(
            engine=self.engine,
            commands=self.commands,
            people=self.people,
            inbox=self.inbox,
            groups=self.settings.groups,
        )


@asynccontextmanager
async def open_app(
    settings: Settings,
    *,
    backend: LLMBackend | None = None,
    watch: bool | None = None,
    memory: bool | None = None,
    must_exist: bool = False,
) -> AsyncIterator[App]:
    """Open the database (migrated), load personas, and build the engine.

    `backend` replaces the configured one for every persona; `watch` overrides
    `personas.watch` (hot reload); `memory` overrides `memory.enabled`;
    `must_exist` refuses a SQLite file that is not there instead of creating it.
    On exit, turns in flight are drained first.
    """
    async with AsyncExitStack() as stack:
        db = await asyncio.to_thread(
            Database.open,
            settings.database.url,
            busy_timeout_ms=settings.database.busy_timeout_ms,
            migrate=settings.database.migrate_on_start,
            must_exist=must_exist,
            pool=settings.database.pool(),
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
        long_term = None
        if settings.memory.enabled if memory is None else memory:

            async def backend_for(persona_id: str) -> LLMBackend:
                return await backends.for_persona(registry.get(persona_id))

            long_term = build_memory(db, settings.memory, backend_for=backend_for)
            stack.push_async_callback(long_term.aclose)
        async def default_backend() -> LLMBackend:
            return await backends.for_persona(registry.get(settings.personas.default))

        safety = build_safety(settings, db, default_backend=default_backend)
        stack.push_async_callback(safety.aclose)
        engine = PersonaEngine(
            personas=registry,
            ledger=ledger,
            backends=backends,
            settings=settings.engine,
            max_concurrency=settings.llm.max_concurrency,
            context_window=settings.llm.context_window,
            timezone=settings.engine.timezone,
            memory=long_term,
            safety=safety.stage,
        )
        if long_term is not None:  # memory search latency, in the engine's metrics
            long_term.metrics = engine.metrics
        from bot.train.serving import attach_adapters  # canary routing, vLLM reloads

        keep_adapters = backend is None and settings.llm.backend == "openai"
        await attach_adapters(settings, db, engine, stack, keep=keep_adapters)
        if settings.personas.watch if watch is None else watch:
            stop = asyncio.Event()
            task = asyncio.create_task(registry.watch(stop), name="persona-watch")

            async def stop_watching() -> None:
                stop.set()
                with suppress(asyncio.CancelledError):
                    await wait_for(task, timeout=5)

            stack.push_async_callback(stop_watching)
        stack.push_async_callback(engine.drain)
        people = People(db)
        inbox = Inbox(db)
        commands = Commands(
            engine=engine,
            people=people,
            personas=registry,
            memory=StoreMemoryControl(long_term) if long_term is not None else None,
        )
        yield App(
            settings,
            db,
            ledger,
            registry,
            backends,
            engine,
            people,
            commands,
            memory=long_term,
            upkeep=_upkeep_jobs(settings, long_term, inbox, db=db),
            inbox=inbox,
            safety=safety,
        )


def _upkeep_jobs(
    settings: Settings,
    memory: SQLiteMemory | None,
    inbox: Inbox | None = None,
    *,
    db: Database | None = None,
) -> dict[str, Callable[[datetime], Awaitable[Any]]]:
    """Upkeep the scheduler runs besides its own (retention, backups)."""
    jobs: dict[str, Callable[[datetime], Awaitable[Any]]] = {}
    if inbox is not None:
        keep = timedelta(hours=settings.engine.inbox_keep_payload_hours)

        async def prune_inbox(now: datetime) -> Any:
            # Raw event text is not kept forever; failed events keep theirs for replay.
            return await inbox.prune(now, keep=keep)

        jobs["inbox"] = prune_inbox
    if memory is not None:
        jobs["memory"] = memory.summarise_quiet  # summaries of conversations gone quiet
    export_dir = settings.scheduler.export_dir
    if export_dir is not None:
        from bot.export import export_datasets

        async def export(now: datetime) -> Any:
            out = export_dir / now.strftime("%Y%m%dT%H%M%SZ")
            manifest = await asyncio.to_thread(export_datasets, settings, now, out=out)
            if not settings.finetune.enabled:
                return manifest
            # Train, gate and canary on a GPU host; elsewhere this logs that it only exported.
            from bot.train.pipeline import after_export, vllm_deploy

            deploy = vllm_deploy(settings, db) if db is not None else None
            return await after_export(settings, manifest.path, manifest.data, now, deploy=deploy)

        jobs["export"] = export
    return jobs


def build_embedder(settings: MemorySettings) -> Embedder | None:
    """The embedder for `settings`, model not loaded yet; None for BM25 only (no
    `embedding_model`, or the `memory` extra is not installed).

    ONNX Runtime when asked for (or installed, with `auto`), falling back to torch;
    torch alone on a GPU (the ONNX Runtime we install runs on the CPU).
    """
    model = settings.embedding_model
    if not model or model.lower() == "none":
        return None
    if importlib.util.find_spec("sentence_transformers") is None:
        log.info("memory.no_embeddings", reason="the memory extra is not installed")
        return None
    from bot.memory.embeddings import FallbackEmbedder, SentenceTransformerEmbedder
    from bot.memory.onnx import OnnxEmbedder, onnx_available

    device = settings.embedding_device
    torch_model = SentenceTransformerEmbedder(model, device=device)
    runtime = settings.embedding_runtime
    if device != "cpu" or runtime == "torch" or (runtime == "auto" and not onnx_available()):
        return torch_model
    return FallbackEmbedder(
        OnnxEmbedder(model, cache_dir=settings.embedding_cache_dir), torch_model
    )


def build_memory(
    db: Database,
    settings: MemorySettings,
    *,
    backend_for: Callable[[str], Awaitable[LLMBackend]] | None = None,
) -> SQLiteMemory:
    """The long-term memory for `settings`; the embedding model loads on first use,
    and without the `memory` extra (or with `embedding_model` unset) search is BM25."""
    embedder = build_embedder(settings)
    return SQLiteMemory(
        db,
        embedder=embedder,
        backend_for=backend_for,
        extract_facts=settings.extract_facts,
        summary_window=settings.summary_window,
        quiet_after=timedelta(minutes=settings.quiet_after_minutes),
        weights=SearchWeights(half_life_days=settings.recency_half_life_days),
    )
