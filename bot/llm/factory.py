"""Building the configured backend: the one place that knows every implementation."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bot.errors import ConfigError
from bot.llm.base import LLMBackend
from bot.llm.tokens import ApproxTokenCounter, HFTokenCounter, load_token_counter

if TYPE_CHECKING:
    from bot.config import LLMSettings

__all__ = ["BACKENDS", "create_backend"]

#: The backend names `create_backend` accepts.
BACKENDS = ("openai", "transformers", "mock")


async def create_backend(
    settings: LLMSettings,
    *,
    backend: str | None = None,
    model: str | None = None,
    base_url: str | None = None,
) -> LLMBackend:
    """A ready backend for `settings`; `backend`, `model` and `base_url` override them.

    `openai` loads `settings.tokenizer` for exact token counts (in a thread; an
    estimate when it cannot be loaded) and asks the server once, best effort, for
    the served model's context length (vLLM's `max_model_len`), which then bounds
    the context window prompts are budgeted for.
    `transformers` loads the model (in its worker thread) and raises
    `BackendUnavailable` when it cannot. `mock` echoes, for trying things out.
    The caller owns the backend and must `aclose()` it.
    """
    kind = backend or settings.backend
    if kind == "openai":
        from bot.llm.openai_backend import OpenAIBackend

        tokens = await asyncio.to_thread(load_token_counter, settings.tokenizer)
        served = OpenAIBackend.from_settings(
            settings, model=model, base_url=base_url, tokens=tokens
        )
        limit = await served.served_context_length()
        if limit is not None and isinstance(tokens, ApproxTokenCounter | HFTokenCounter):
            # This counter is this backend's own: it may learn the server's limit.
            known = tokens.context_limit
            tokens.context_limit = limit if known is None else min(known, limit)
        return served
    if kind == "transformers":
        from bot.llm.transformers_backend import TransformersBackend

        created = TransformersBackend.from_settings(settings, model=model)
        try:
            await created.load()
        except BaseException:
            await created.aclose()
            raise
        return created
    if kind == "mock":
        from bot.llm.mock import MockBackend

        return MockBackend(model=model or "mock")
    raise ConfigError(f"llm.backend = {kind!r}: expected one of {', '.join(BACKENDS)}")
