"""In-process generation with transformers: the backend that needs no server.

One model per backend, on one dedicated worker thread: loading and every generation
run there, one at a time, so the event loop never blocks and concurrent requests
queue in arrival order. Streamed text reaches the event loop through
`loop.call_soon_threadsafe` into an `asyncio.Queue`.

LoRA: a request whose `adapter` is a local directory (peft's `adapter_config.json` +
weights) is answered with that adapter, loaded with peft on first use and kept (the
`max_adapters` most recently used). Requests without one use the bare base model, and
so do requests naming an adapter that is no local directory (such as the served name
of a vLLM adapter): those log a warning once and their `Completion.model` is the base
model's.

torch, transformers (and peft for adapters) come with the `local` extra; this module
imports them only when a model is loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any

from bot.errors import BackendError, BackendUnavailable
from bot.llm.base import ChatRequest, Completion, StreamChunk, TokenCounter
from bot.llm.tokens import ApproxTokenCounter
from bot.llm.transformers_worker import _Job, _Loaded, _WorkerThread

if TYPE_CHECKING:
    from bot.config import LLMSettings

__all__ = ["TransformersBackend"]


class TransformersBackend(_WorkerThread):
    """Local generation with a transformers causal LM and its chat template.

    Build it with `await TransformersBackend.create(model)` (or construct, then
    `await load()`); `model` is a local directory or a hub id. Temperature 0 means
    greedy decoding; a `seed` makes sampling repeatable without touching the
    process's global random state. `Sampling.extra` keys that are generation options
    (`top_k`, `repetition_penalty`, …) are applied; others are ignored.
    """

    name = "transformers"

    def __init__(
        self,
        model: str,
        *,
        device: str = "cpu",
        dtype: str = "auto",
        max_adapters: int = 4,
    ) -> None:
        self.model = model
        self.device = device
        self.dtype = dtype
        self.max_adapters = max_adapters
        self.tokens: TokenCounter = ApproxTokenCounter()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bot-transformers")
        self._loaded: _Loaded | None = None  # touched only on the worker thread, and by aclose
        self._jobs: set[_Job] = set()
        self._warned_adapters: set[str] = set()  # touched only on the worker thread
        self._closed = False

    @classmethod
    def from_settings(
        cls, settings: LLMSettings, *, model: str | None = None
    ) -> TransformersBackend:
        """An unloaded backend configured by `settings` (`model` overrides theirs)."""
        return cls(model or settings.model, device=settings.device, dtype=settings.dtype)

    @classmethod
    async def create(
        cls, model: str, *, device: str = "cpu", dtype: str = "auto", max_adapters: int = 4
    ) -> TransformersBackend:
        """A loaded backend; raises `BackendUnavailable` when the model cannot be loaded."""
        backend = cls(model, device=device, dtype=dtype, max_adapters=max_adapters)
        try:
            await backend.load()
        except BaseException:
            await backend.aclose()
            raise
        return backend

    async def load(self) -> None:
        """Load tokenizer and model on the worker thread (once; later calls return at once).

        Raises `BackendUnavailable` when the model cannot be found or loaded.
        """
        await self._submit(self._load_sync)

    async def _submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._closed:
            raise BackendUnavailable(f"transformers backend for {self.model!r} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    # -- protocol ---------------------------------------------------------------------

    def _check(self, request: ChatRequest) -> None:
        if request.model is not None and request.model != self.model:
            raise BackendError(
                f"this transformers backend serves {self.model!r}, not {request.model!r}; "
                "create a backend for that model"
            )

    async def _run(self, job: _Job) -> Completion:
        self._jobs.add(job)
        try:
            result: Completion = await self._submit(self._generate_sync, job)
            return result
        finally:
            # Cancelled callers stop the generation at the next token.
            job.cancel.set()
            self._jobs.discard(job)

    async def complete(self, request: ChatRequest) -> Completion:
        """The whole answer, generated on the worker thread."""
        self._check(request)
        return await self._run(_Job(request))

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        """The answer as it is generated; the last chunk carries the `Completion`.

        Leaving the iteration early stops the generation at the next token.
        """
        self._check(request)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()

        def emit(delta: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, delta)

        job = _Job(request, emit=emit)
        task = asyncio.ensure_future(self._run(job))
        # Queued after every delta (call_soon_threadsafe keeps order), so None comes last.
        task.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (delta := await queue.get()) is not None:
                yield StreamChunk(delta=delta)
            yield StreamChunk(delta="", completion=await task)
        finally:
            job.cancel.set()
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    async def aclose(self) -> None:
        """Stop running generations, shut the worker thread down, and drop the model."""
        if self._closed:
            return
        self._closed = True
        for job in list(self._jobs):
            job.cancel.set()
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)
        self._loaded = None

    async def __aenter__(self) -> TransformersBackend:
        await self.load()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
