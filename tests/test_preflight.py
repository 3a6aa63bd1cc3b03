"""The quick checks before a chat: the hub and OpenAI-compatible servers, all on
127.0.0.1 (a closed port, a socket that never answers, the fake server)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.errors import BackendError, BackendUnavailable
from bot.preflight import (
    hub_reachable,
    is_cached,
    looks_like_path,
    prepare_hub_model,
    probe_openai_server,
)
from tests.fakes.openai_server import FakeOpenAIServer


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there now


@pytest.fixture
def silent() -> Iterator[str]:
    """A base URL whose socket accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"


@pytest.fixture
def refusing() -> Iterator[str]:
    """A base URL whose server answers every request with 401."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    stop.set()
    thread.join(2)
    listener.close()


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Not told to be offline, the hub at a closed local port, an empty cache."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    return cache


def test_paths_and_hub_ids(tmp_path: Path) -> None:
    assert looks_like_path(str(tmp_path)) and looks_like_path("./models/x")
    assert looks_like_path("~/models/x") and not looks_like_path("Qwen/Qwen2.5-0.5B-Instruct")


def test_an_unreachable_hub_is_noticed_at_once() -> None:
    started = time.monotonic()
    assert not hub_reachable(f"http://127.0.0.1:{closed_port()}", timeout_s=3)
    assert time.monotonic() - started < 2
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        assert hub_reachable(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout_s=3)


def test_told_offline_nothing_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://192.0.2.1")  # would hang if it were tried
    assert prepare_hub_model("org/anything") == "offline"


def test_offline_without_the_model_is_a_clear_error_in_seconds(online: Path) -> None:
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match=r"not on this machine.*cannot be reached"):
        prepare_hub_model("org/not-cached")
    assert time.monotonic() - started < 5
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # the libraries stop retrying too


def test_offline_with_a_cached_model_goes_on_offline(online: Path) -> None:
    snapshot = online / "models--org--cached" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}", encoding="utf-8")
    (online / "models--org--cached" / "refs").mkdir()
    (online / "models--org--cached" / "refs" / "main").write_text("abc123", encoding="utf-8")
    assert is_cached("org/cached") and not is_cached("org/other")
    assert prepare_hub_model("org/cached") == "cached"
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_a_local_directory_needs_no_hub(online: Path, tmp_path: Path) -> None:
    assert prepare_hub_model(str(tmp_path)) == "local"


def probe(url: str, model: str = "tiny", timeout_s: float = 1.0) -> str | None:
    return asyncio.run(probe_openai_server(url, api_key="k", model=model, timeout_s=timeout_s))


def test_probe_a_server_that_serves_the_model(fake_openai: FakeOpenAIServer) -> None:
    assert probe(fake_openai.base_url) is None
    warning = probe(fake_openai.base_url, model="other")
    assert warning is not None and "does not list model 'other'" in warning and "tiny" in warning
    assert fake_openai.request_headers == []  # /models is not a chat request


def test_probe_nothing_listening() -> None:
    with pytest.raises(BackendUnavailable, match=r"cannot reach an OpenAI-compatible server"):
        probe(f"http://127.0.0.1:{closed_port()}/v1")


def test_probe_a_server_that_never_answers_is_bounded(silent: str) -> None:
    started = time.monotonic()
    with pytest.raises(BackendUnavailable, match=r"did not answer within 1 s"):
        probe(silent)
    assert time.monotonic() - started < 5


def test_probe_a_refused_key(refusing: str) -> None:
    with pytest.raises(BackendError, match=r"refused the API key \(HTTP 401\)"):
        probe(refusing)


def test_probe_masks_credentials_in_the_url() -> None:
    with pytest.raises(BackendUnavailable) as err:
        probe(f"http://bot:hunter2-pass@127.0.0.1:{closed_port()}/v1")
    assert "hunter2-pass" not in str(err.value)
