"""Quick checks before a chat starts: is the model's source reachable, at once?

Without them an offline laptop waits about a minute while the Hugging Face client
retries, and a chat against a server that never answers sits silent. Each check
here costs at most a few seconds and answers with the project's own errors:

- `prepare_hub_model(model)`: a hub id that is not cached needs the hub; when the
  hub cannot be reached, the process goes offline (`HF_HUB_OFFLINE`) so a cached
  copy loads without retries, and a model that is not cached is a
  `BackendUnavailable` naming what to do.
- `probe_openai_server(...)`: the server answers `/models` within the connect
  timeout, or `BackendUnavailable`; a refused API key is a `BackendError`.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bot.errors import BackendError, BackendUnavailable
from bot.logs import redact_text

__all__ = [
    "hub_is_offline",
    "hub_reachable",
    "is_cached",
    "looks_like_path",
    "prepare_hub_model",
    "probe_openai_server",
]

DEFAULT_HUB = "https://huggingface.co"
_TRUE = ("1", "true", "yes", "on")


def looks_like_path(model: str) -> bool:
    """True for a local directory name rather than a hub id (`org/name`); the same
    rule as the transformers backend's."""
    return model.startswith(("/", "./", "../", "~")) or Path(model).exists() or "\\" in model


def hub_is_offline() -> bool:
    """True when the process was told not to reach the hub (`HF_HUB_OFFLINE`)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def hub_reachable(endpoint: str | None = None, timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to the hub opens within `timeout_s` (DNS included).

    The lookup runs on a daemon thread so that a resolver that hangs cannot hold the
    caller past the timeout.
    """
    url = urlsplit(endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_HUB)
    host = url.hostname or ""
    port = url.port or (80 if url.scheme == "http" else 443)
    result: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=connect, name="hub-check", daemon=True)
    worker.start()
    worker.join(timeout_s + 0.5)
    return bool(result and result[0])


def go_offline() -> None:
    """Make the Hugging Face libraries stop reaching for the network (this process)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    hub = sys.modules.get("huggingface_hub.constants")
    if hub is not None:  # read at import time; already imported: set it there too
        hub.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]


def is_cached(model: str) -> bool:
    """Whether the hub model `model` (its config at least) is in the local cache."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        found = try_to_load_from_cache(model, "config.json")
    except Exception:  # a malformed id, an unreadable cache: not usable offline
        return False
    return isinstance(found, str)


def prepare_hub_model(model: str, *, timeout_s: float = 3.0) -> str:
    """Make sure `model` can load without a long wait; returns what was found:
    "local" (a directory), "offline" (told so, loads from the cache), "hub"
    (reachable), or "cached" (hub unreachable, a cached copy will load).

    Raises `BackendUnavailable` when the model is neither cached nor downloadable.
    """
    if looks_like_path(model):
        return "local"
    if hub_is_offline():
        return "offline"
    if hub_reachable(timeout_s=timeout_s):
        return "hub"
    go_offline()
    if is_cached(model):
        return "cached"
    hub = urlsplit(os.environ.get("HF_ENDPOINT") or DEFAULT_HUB).hostname
    raise BackendUnavailable(
        f"model {model!r} is not on this machine and the Hugging Face hub ({hub}) "
        "cannot be reached: connect once to download it, point --model (or "
        "BOT_LLM__MODEL) at a local model directory, build a tiny test model with "
        "`bot models tiny DIR`, or use a vLLM server with --backend openai --base-url URL"
    )


async def probe_openai_server(
    base_url: str, *, api_key: str | None, model: str, timeout_s: float
) -> str | None:
    """Ask an OpenAI-compatible server for its models, once, within `timeout_s`.

    Returns a warning for the person (the server does not serve `model`), or None.
    Raises `BackendUnavailable` when nothing answers in time, `BackendError` when
    the server refuses the API key.
    """
    shown = redact_text(base_url)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = base_url.rstrip("/") + "/models"
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.get(url, headers=headers)
    except httpx.TimeoutException:
        raise BackendUnavailable(
            f"the server at {shown} did not answer within {timeout_s:g} s; is it running "
            "(and done loading its model)?"
        ) from None
    except (httpx.HTTPError, ValueError) as exc:
        raise BackendUnavailable(
            f"cannot reach an OpenAI-compatible server at {shown}: "
            f"{redact_text(str(exc)) or type(exc).__name__}; start it (e.g. `vllm serve`) "
            "or pass --base-url"
        ) from None
    if response.status_code in (401, 403):
        raise BackendError(
            f"the server at {shown} refused the API key (HTTP {response.status_code}); "
            "set BOT_LLM__API_KEY or llm.api_key_file"
        )
    if response.status_code != 200:
        return None  # some compatible servers have no /models; the first turn will tell
    try:
        served = [str(m.get("id")) for m in response.json().get("data", [])]
    except (ValueError, AttributeError, TypeError):
        return None
    if served and model not in served:
        return (
            f"the server at {shown} does not list model {model!r} "
            f"(it serves: {', '.join(served[:10])}); set --model to one of them"
        )
    return None
