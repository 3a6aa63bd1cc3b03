"""The protocol every LLM backend implements, and the types it speaks.

A backend turns a `ChatRequest` (chat messages plus sampling options) into text,
whole or streamed. It holds no conversation state: everything it needs is in the
request. Raw provider dicts live only inside the backend that sends them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "Completion",
    "LLMBackend",
    "Sampling",
    "StreamChunk",
    "TokenCounter",
]

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a chat prompt."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class Sampling:
    """Sampling options; `extra` goes to the server as-is (vLLM's `extra_body`)."""

    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """Everything a backend needs for one completion.

    `model` overrides the backend's configured model; `adapter` names a LoRA adapter
    (for vLLM: the served name of an adapter loaded with `--lora-modules` or at run time).
    """

    messages: tuple[ChatMessage, ...]
    sampling: Sampling = Sampling()
    model: str | None = None
    adapter: str | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """The backend's answer with what it cost."""

    text: str
    model: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """A piece of a streamed answer; the last chunk carries the whole `Completion`."""

    delta: str
    completion: Completion | None = None


@runtime_checkable
class TokenCounter(Protocol):
    """Counts tokens the way the model will see them."""

    def count_text(self, text: str) -> int:
        """Tokens in a bare string."""
        ...

    def count_messages(self, messages: Sequence[ChatMessage]) -> int:
        """Tokens of the messages rendered with the chat template (with generation prompt)."""
        ...


@runtime_checkable
class LLMBackend(Protocol):
    """A source of chat completions.

    Implementations raise `BackendUnavailable` when the server cannot be reached or
    keeps failing after retries, and `BackendError` for other failures. They never
    return partial text as if it were complete: a stream that breaks raises.
    """

    name: str
    model: str
    tokens: TokenCounter

    async def complete(self, request: ChatRequest) -> Completion:
        """The whole answer at once."""
        ...

    def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        """The answer as it is generated; the final chunk carries the `Completion`."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads and models."""
        ...
