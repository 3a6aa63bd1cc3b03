"""`VLLMAdmin`: loading, unloading and listing LoRA adapters on a running vLLM.

Requests are bounded (timeouts, an answer of at most 1 MiB); the server's refusals
come back as `BackendError` with its own message, a server that cannot be reached
(or answers 5xx) as `BackendUnavailable`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

from bot.errors import BackendError, BackendUnavailable, UsageError
from bot.logs import mask_url_credentials
from bot.train.adapter_files import short

__all__ = ["ServedModel", "VLLMAdmin", "check_base_url"]

#: Bound on what is read from the server.
_MAX_ANSWER_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class ServedModel:
    """One entry of vLLM's `/v1/models`: the base model or a loaded adapter."""

    id: str
    root: str | None = None
    parent: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def check_base_url(url: str) -> str:
    """`url` without a trailing slash if it is an http(s) URL; UsageError otherwise."""
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError, ValueError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise UsageError(
            f"--base-url {short(mask_url_credentials(url), 120)!r}: "
            "an http(s) URL such as http://127.0.0.1:8000/v1"
        )
    return url.strip().rstrip("/")


class VLLMAdmin:
    """Loads, unloads and lists adapters on one vLLM server (`base_url` ends in /v1)."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout_s: float = 60.0):
        self.base_url = check_base_url(base_url)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)), headers=headers
        )

    @property
    def shown_url(self) -> str:
        return mask_url_credentials(self.base_url)

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.base_url}{path}"
        try:
            async with self._client.stream(method, url, json=body) as answer:
                raw = b""
                async for chunk in answer.aiter_bytes():
                    raw += chunk
                    if len(raw) > _MAX_ANSWER_BYTES:
                        raise BackendError(
                            f"vLLM at {self.shown_url}: {path} answered more than "
                            f"{_MAX_ANSWER_BYTES} bytes"
                        )
        except httpx.TimeoutException:
            raise BackendUnavailable(f"vLLM at {self.shown_url}: no answer to {path}") from None
        except httpx.HTTPError as exc:
            why = short(exc, 120) or type(exc).__name__
            raise BackendUnavailable(
                f"vLLM at {self.shown_url} cannot be reached ({why}); is it running?"
            ) from None
        text = raw.decode("utf-8", errors="replace")
        if answer.status_code >= 400:
            raise self._refusal(path, answer.status_code, text)
        try:
            return json.loads(text) if text.strip() else None
        except (ValueError, RecursionError):
            return text  # vLLM answers the LoRA routes with plain text

    def _refusal(self, path: str, status: int, text: str) -> BackendError:
        detail: object = text
        try:
            body = json.loads(text)
            if isinstance(body, dict):
                inner = body.get("error", body)
                detail = inner.get("message", inner) if isinstance(inner, dict) else inner
        except (ValueError, RecursionError):
            pass
        where = f"vLLM at {self.shown_url}: {path}: HTTP {status}"
        if status == 404 and "lora" in path:
            return BackendError(
                f"{where}: the server does not load adapters at run time (start it with "
                "--enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True)"
            )
        error = BackendUnavailable if status >= 500 else BackendError
        return error(f"{where}: {short(detail)}")

    async def models(self) -> list[ServedModel]:
        """What the server serves: its base model(s) and the adapters loaded."""
        answer = await self._call("GET", "/models")
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, list):
            raise BackendError(f"vLLM at {self.shown_url}: /models answered no model list")
        out = []
        for entry in data:
            if isinstance(entry, dict) and isinstance(entry.get("id"), str):
                root, parent = entry.get("root"), entry.get("parent")
                out.append(
                    ServedModel(
                        entry["id"],
                        root if isinstance(root, str) else None,
                        parent if isinstance(parent, str) else None,
                        entry,
                    )
                )
        return out

    async def load(self, name: str, path: str) -> None:
        """Load the adapter at `path` (on the server's disk) as `name`."""
        await self._call("POST", "/load_lora_adapter", {"lora_name": name, "lora_path": path})

    async def unload(self, name: str) -> None:
        """Unload the adapter served as `name`."""
        await self._call("POST", "/unload_lora_adapter", {"lora_name": name})

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> VLLMAdmin:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
