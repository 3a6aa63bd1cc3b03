"""LLM backends behind one protocol: OpenAI-compatible HTTP (vLLM) and local transformers.

Importing this package is cheap: the `openai` SDK, torch and transformers are
imported when a backend that needs them is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bot.llm.base import (
    ChatMessage,
    ChatRequest,
    Completion,
    LLMBackend,
    Sampling,
    StreamChunk,
    TokenCounter,
)
from bot.llm.control_tokens import ControlTokens
from bot.llm.factory import BACKENDS, create_backend
from bot.llm.mock import MockBackend, echo_handler
from bot.llm.tokens import ApproxTokenCounter, HFTokenCounter, fit_window, load_token_counter

if TYPE_CHECKING:
    from bot.llm.openai_backend import OpenAIBackend
    from bot.llm.tiny import build_tiny_lora, build_tiny_model
    from bot.llm.transformers_backend import TransformersBackend

__all__ = [
    "BACKENDS",
    "ApproxTokenCounter",
    "ChatMessage",
    "ChatRequest",
    "Completion",
    "ControlTokens",
    "HFTokenCounter",
    "LLMBackend",
    "MockBackend",
    "OpenAIBackend",
    "Sampling",
    "StreamChunk",
    "TokenCounter",
    "TransformersBackend",
    "build_tiny_lora",
    "build_tiny_model",
    "create_backend",
    "echo_handler",
    "fit_window",
    "load_token_counter",
]

# Public names whose modules are imported on first access (they pull in heavy packages).
_LAZY = {
    "OpenAIBackend": "bot.llm.openai_backend",
    "TransformersBackend": "bot.llm.transformers_backend",
    "build_tiny_model": "bot.llm.tiny",
    "build_tiny_lora": "bot.llm.tiny",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'bot.llm' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
