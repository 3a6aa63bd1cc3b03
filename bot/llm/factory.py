"""Building the configured backend: the one place that knows every implementation."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from bot.errors import ConfigError
from bot.llm.base import LLMBackend
from bot.llm.tokens import load_token_counter

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
    estimate when it cannot be loaded) and does not contact the server.
    `transformers` loads the model (in its worker thread) and raises
    `BackendUnavailable` when it cannot. `mock` echoes, for trying things out.
    The caller owns the backend and must `aclose()` it.
    """
    kind = backend or settings.backend
    if kind == "openai":
        from bot.llm.openai_backend import OpenAIBackend

        tokens = await asyncio.to_thread(load_token_counter, settings.tokenizer)
        return OpenAIBackend.from_settings(settings, model=model, base_url=base_url, tokens=tokens)
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
