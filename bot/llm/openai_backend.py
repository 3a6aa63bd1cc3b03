"""The backend for OpenAI-compatible chat servers, first of all vLLM's `vllm serve`.

Retries are the `openai` SDK's own: connection errors, timeouts, 408/409/429 and 5xx
are retried `max_retries` times with exponential backoff (0.5 s doubling, at most
8 s, with jitter) that honours `Retry-After` up to two minutes. What still fails is
mapped onto the project's errors:

- cannot connect, timed out, 408/409/429 or 5xx after the retries → `BackendUnavailable`
- any other error answer (bad request, unknown model, auth) → `BackendError`
- a stream that breaks off before the model finished → `BackendUnavailable`
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

import openai
import structlog

from bot.errors import BackendError, BackendUnavailable
from bot.llm.base import ChatRequest, Completion, StreamChunk, TokenCounter
from bot.llm.tokens import (
    ApproxTokenCounter,
    control_tokens,
    load_token_counter,
    neutralise_messages,
)

if TYPE_CHECKING:
    from bot.config import LLMSettings

__all__ = ["OpenAIBackend"]

_log = structlog.get_logger(__name__)

# HTTP status codes the SDK retries; failing with one of them means "try again later".
_TRANSIENT_STATUS = frozenset({408, 409, 429})


def _transport_errors() -> tuple[type[Exception], ...]:
    # A stream that breaks while it is read may raise the HTTP library's own error,
    # not the SDK's: httpx for openai 1.x, httpx2 for later versions.
    found: list[type[Exception]] = []
    for name in ("httpx2", "httpx"):
        try:
            found.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(found)


_TRANSPORT_ERRORS = _transport_errors()
_ERRORS: tuple[type[Exception], ...] = (openai.APIError, *_TRANSPORT_ERRORS)
_BROKEN: tuple[type[Exception], ...] = (openai.APIConnectionError, *_TRANSPORT_ERRORS)


def _short(text: object, limit: int = 300) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class OpenAIBackend:
    """Chat completions from an OpenAI-compatible server.

    A request's model is, first found: `request.adapter` (vLLM serves a LoRA adapter
    under its own model name), `request.model`, the backend's `model`. `Sampling.extra`
    goes into the request body as-is (vLLM's `repetition_penalty`, `top_k`, `min_p`, …).
    At most `max_concurrency` requests are in flight at once; the rest wait their turn.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        max_retries: int = 3,
        max_concurrency: int = 16,
        tokens: TokenCounter | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.tokens: TokenCounter = tokens if tokens is not None else ApproxTokenCounter()
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url,
            # vLLM accepts any key unless started with --api-key; the SDK insists on one.
            api_key=api_key or "EMPTY",
            timeout=openai.Timeout(timeout_s, connect=connect_timeout_s),
            max_retries=max_retries,
        )
        self._slots = asyncio.Semaphore(max_concurrency)

    @classmethod
    def from_settings(
        cls,
        settings: LLMSettings,
        *,
        model: str | None = None,
        base_url: str | None = None,
        tokens: TokenCounter | None = None,
    ) -> OpenAIBackend:
        """A backend configured by `settings`, with `model`/`base_url` overriding them.

        Without `tokens`, loads `settings.tokenizer` (blocking; the async
        `create_backend` loads it in a thread instead).
        """
        key = settings.resolved_api_key()
        return cls(
            base_url or settings.base_url,
            model or settings.model,
            api_key=key.get_secret_value() if key is not None else None,
            timeout_s=settings.timeout_s,
            connect_timeout_s=settings.connect_timeout_s,
            max_retries=settings.max_retries,
            max_concurrency=settings.max_concurrency,
            tokens=tokens if tokens is not None else load_token_counter(settings.tokenizer),
        )

    # -- requests --------------------------------------------------------------------

    def _model_for(self, request: ChatRequest) -> str:
        return request.adapter or request.model or self.model

    def _params(self, request: ChatRequest) -> dict[str, Any]:
        sampling = request.sampling
        # vLLM renders the chat template and reads special tokens in the result: every
        # content goes out with control-token look-alikes defused, the served model's
        # own tokens included when `tokens` has its tokenizer (as it counted them).
        messages = neutralise_messages(request.messages, control_tokens(self.tokens))
        params: dict[str, Any] = {
            "model": self._model_for(request),
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
        }
        if sampling.stop:
            params["stop"] = list(sampling.stop)
        if sampling.seed is not None:
            params["seed"] = sampling.seed
        if sampling.extra:
            params["extra_body"] = dict(sampling.extra)
        return params

    def _error(self, exc: Exception, model: str) -> BackendError:
        """The project's error for an SDK or transport failure (retries already spent)."""
        where = f"{self.base_url} (model {model!r})"
        retries = f"after {self.max_retries} retries" if self.max_retries else "no retries"
        if isinstance(exc, openai.APITimeoutError):
            return BackendUnavailable(f"{where}: no answer within {self.timeout_s:g} s ({retries})")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return BackendUnavailable(f"{where}: cannot connect ({retries}): {_short(cause)}")
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            body = exc.body
            message = body.get("message") if isinstance(body, dict) else None
            detail = _short(message or exc.message)
            if status in _TRANSIENT_STATUS or status >= 500:
                return BackendUnavailable(f"{where}: HTTP {status} ({retries}): {detail}")
            return BackendError(f"{where}: HTTP {status}: {detail}")
        if isinstance(exc, _TRANSPORT_ERRORS):
            return BackendUnavailable(
                f"{where}: connection broke: {_short(exc) or type(exc).__name__}"
            )
        return BackendError(f"{where}: {type(exc).__name__}: {_short(exc)}")

    async def complete(self, request: ChatRequest) -> Completion:
        """The whole answer; an empty answer is a `Completion` with empty text."""
        params = self._params(request)
        async with self._slots:
            try:
                response = await self._client.chat.completions.create(**params)
            except _ERRORS as exc:
                raise self._error(exc, params["model"]) from exc
        if not response.choices:
            raise BackendError(f"{self.base_url}: the answer has no choices")
        choice = response.choices[0]
        usage = response.usage
        return Completion(
            text=choice.message.content or "",
            model=response.model or params["model"],
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            finish_reason=choice.finish_reason,
        )

    async def stream(self, request: ChatRequest) -> AsyncIterator[StreamChunk]:
        """The answer as the server streams it; the last chunk carries the `Completion`.

        Raises `BackendUnavailable` when the stream breaks off or ends before the
        model finished, even after some deltas were yielded.
        """
        params = self._params(request)
        model = params["model"]
        async with self._slots:
            try:
                stream = await self._client.chat.completions.create(
                    **params, stream=True, stream_options={"include_usage": True}
                )
            except _ERRORS as exc:
                raise self._error(exc, model) from exc
            parts: list[str] = []
            finish: str | None = None
            prompt_tokens: int | None = None
            completion_tokens: int | None = None
            try:
                async with stream:
                    async for chunk in stream:
                        model = chunk.model or model
                        if chunk.usage is not None:
                            prompt_tokens = chunk.usage.prompt_tokens
                            completion_tokens = chunk.usage.completion_tokens
                        for choice in chunk.choices:
                            if choice.index != 0:
                                continue
                            if choice.delta.content:
                                parts.append(choice.delta.content)
                                yield StreamChunk(delta=choice.delta.content)
                            if choice.finish_reason is not None:
                                finish = choice.finish_reason
            except _BROKEN as exc:
                cause = exc.__cause__ or exc
                raise BackendUnavailable(
                    f"{self.base_url} (model {model!r}): the stream broke off after "
                    f"{len(''.join(parts))} characters: {_short(cause)}"
                ) from exc
            except openai.APIError as exc:
                raise self._error(exc, model) from exc
            if finish is None:
                # The SDK ends quietly when the body ends without [DONE]; an answer
                # without a finish reason was cut off, not finished.
                raise BackendUnavailable(
                    f"{self.base_url} (model {model!r}): the stream ended before the model "
                    f"finished ({len(''.join(parts))} characters received)"
                )
            yield StreamChunk(
                delta="",
                completion=Completion(
                    text="".join(parts),
                    model=model,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    finish_reason=finish,
                ),
            )

    # -- server helpers --------------------------------------------------------------

    async def list_models(self) -> list[str]:
        """The model names the server serves (for vLLM: the base model and loaded adapters)."""
        try:
            page = await self._client.models.list()
        except _ERRORS as exc:
            raise self._error(exc, self.model) from exc
        return [m.id async for m in page]

    async def served_context_length(self, timeout_s: float = 2.0) -> int | None:
        """The served model's context length as vLLM reports it (`max_model_len` in
        `/models`), or None: another server, no answer within `timeout_s`, no such model.

        One request, no retries, never raises: it is asked once when the backend is
        created, and a server that is down then is not an error yet.
        """
        client = self._client.with_options(max_retries=0, timeout=timeout_s)
        try:
            page = await client.models.list()
            async for served in page:
                if served.id == self.model:
                    value = (served.model_extra or {}).get("max_model_len")
                    return value if isinstance(value, int) and value > 0 else None
        except _ERRORS as exc:
            _log.info("llm_context_unknown", base_url=self.base_url, reason=_short(exc))
        return None

    async def health(self) -> bool:
        """True when the server answers `/models` and serves this backend's model."""
        try:
            return self.model in await self.list_models()
        except BackendError as exc:
            _log.info("llm_health_failed", base_url=self.base_url, reason=str(exc))
            return False

    async def load_lora_adapter(self, name: str, path: str) -> None:
        """Ask vLLM to load the LoRA adapter in `path` (on the server's disk) as model `name`.

        Needs a server started with `--enable-lora` and
        `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`.
        """
        await self._post("/load_lora_adapter", {"lora_name": name, "lora_path": path})

    async def unload_lora_adapter(self, name: str) -> None:
        """Ask vLLM to unload the LoRA adapter served as `name`."""
        await self._post("/unload_lora_adapter", {"lora_name": name})

    async def _post(self, path: str, body: dict[str, Any]) -> None:
        try:
            # vLLM answers these with plain text, so ask for the raw response.
            await self._client.post(path, body=body, cast_to=str)
        except _ERRORS as exc:
            raise self._error(exc, str(body.get("lora_name"))) from exc

    # -- lifecycle -------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._client.close()

    async def __aenter__(self) -> OpenAIBackend:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
