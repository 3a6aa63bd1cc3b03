"""An in-process backend driven by a function: the `MockTransport` of LLMs.

`MockBackend(handler)` answers each request with whatever `handler(request)` returns
(a string, or an awaitable of one). Tests script answers with it and the benchmarks
use it as the instant backend that measures the framework's own overhead.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from bot.llm.base import ChatMessage, ChatRequest, Completion, StreamChunk, TokenCounter
from bot.llm.tokens import ApproxTokenCounter

__all__ = ["MockBackend", "echo_handler"]

Handler = Callable[[ChatRequest], str | Awaitable[str]]


def echo_handler(request: ChatRequest) -> str:
    """Answers with the last user message: the cheapest plausible reply."""
    last = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
    return f"You said: {last[:200]}"


class MockBackend:
    """A backend whose answers come from `handler`; streams them word by word."""

    name = "mock"

    def __init__(self, handler: Handler = echo_handler, *, model: str = "mock") -> None:
        self._handler = handler
        self.model = model
        self.tokens: TokenCounter = ApproxTokenCounter()
        self.requests: list[ChatRequest] = []

    async def _text(self, request: ChatRequest) -> str:
        self.requests.append(request)
        result = self._handler(request)
        if inspect.isawaitable(result):
            result = await result
        return result

    def _completion(self, request: ChatRequest, text: str) -> Completion:
        prompt: Sequence[ChatMessage] = request.messages
        return Completion(
            text=text,
            model=request.adapter or request.model or self.model,
            prompt_tokens=self.tokens.count_messages(prompt),
            completion_tokens=self.tokens.count_text(text),
            finish_reason="stop",
        )

    async def complete(self, request: ChatRequest) -> Completion:
        """Whatever the handler says, as one completion."""
        return self._completion(request, await self._text(request))

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        """The handler's answer in word-sized chunks, then the completion."""
        text = await self._text(request)
        pieces = text.split(" ")
        for i, piece in enumerate(pieces):
            yield StreamChunk(delta=piece if i == len(pieces) - 1 else piece + " ")
        yield StreamChunk(delta="", completion=self._completion(request, text))

    async def aclose(self) -> None:
        """Nothing to release."""
