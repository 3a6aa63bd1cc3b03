"""Generating a reply's text: whole or streamed, cleaned of names and stop strings,
retried once when empty, with the time to the first streamed text measured.

A mixin of `PersonaEngine` (bot/engine.py), which owns the state declared here.
"""

from __future__ import annotations

import time
from contextlib import AsyncExitStack

import structlog

from bot.engine_types import DeltaCallback
from bot.errors import EmptyCompletion
from bot.llm.base import ChatRequest, Completion, LLMBackend
from bot.metrics import Metrics
from bot.postprocess import StreamCleaner, clean_reply

log = structlog.get_logger("bot.engine")


class Generation:
    """Asks a backend for a reply and returns clean, non-empty text."""

    metrics: Metrics

    async def _generate(
        self,
        backend: LLMBackend,
        request: ChatRequest,
        names: tuple[str, ...],
        on_delta: DeltaCallback | None,
    ) -> tuple[str, Completion]:
        """Generate a clean, non-empty reply; an empty one is retried once."""
        stops = request.sampling.stop
        for attempt in range(2):
            if on_delta is None:
                completion = await backend.complete(request)
                text = clean_reply(completion.text, names=names, stops=stops)
            else:
                completion, text = await self._stream(backend, request, names, on_delta)
            if text:
                return text, completion
            log.warning("turn.empty_completion", attempt=attempt + 1, raw=completion.text[:200])
        raise EmptyCompletion("the model produced no text twice in a row")

    async def _stream(
        self,
        backend: LLMBackend,
        request: ChatRequest,
        names: tuple[str, ...],
        on_delta: DeltaCallback,
    ) -> tuple[Completion, str]:
        cleaner = StreamCleaner(names=names, stops=request.sampling.stop)
        shown: list[str] = []
        completion: Completion | None = None
        async with AsyncExitStack() as stack:
            chunks = backend.stream(request)
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                stack.push_async_callback(aclose)
            async for chunk in chunks:
                piece = cleaner.feed(chunk.delta)
                if piece:
                    shown.append(piece)
                    await on_delta(piece)
                if chunk.completion is not None:
                    completion = chunk.completion
                if cleaner.stopped:
                    break
        tail = cleaner.finish()
        if tail:
            shown.append(tail)
            await on_delta(tail)
        text = "".join(shown).strip()
        if completion is None:
            completion = Completion(
                text=text, model=request.adapter or request.model or backend.model
            )
        return completion, text

    def _first_token_timer(
        self, on_delta: DeltaCallback, started: float, platform: str
    ) -> DeltaCallback:
        """`on_delta` that observes the time from `started` to its first call."""
        first = [True]

        async def timed(piece: str) -> None:
            if first[0]:
                first[0] = False
                self.metrics.first_token.labels(platform).observe(time.perf_counter() - started)
            await on_delta(piece)

        return timed
