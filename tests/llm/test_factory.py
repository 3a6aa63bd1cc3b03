"""create_backend: each configured kind, and overrides."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bot.config import LLMSettings
from bot.errors import BackendUnavailable, ConfigError
from bot.llm import (
    ApproxTokenCounter,
    ChatMessage,
    ChatRequest,
    HFTokenCounter,
    MockBackend,
    Sampling,
    create_backend,
)
from bot.llm.openai_backend import OpenAIBackend
from bot.llm.tokens import context_limit, fit_window
from bot.llm.transformers_backend import TransformersBackend
from tests.fakes.openai_server import FakeOpenAIServer

REQUEST = ChatRequest((ChatMessage("user", "hi"),), Sampling(max_tokens=4, temperature=0))


async def test_openai_with_overrides_and_tokenizer(
    fake_openai: FakeOpenAIServer, tiny_model_dir: Path
) -> None:
    settings = LLMSettings(backend="transformers", model="x", tokenizer=str(tiny_model_dir))
    llm = await create_backend(
        settings, backend="openai", model="tiny", base_url=fake_openai.base_url
    )
    try:
        assert isinstance(llm, OpenAIBackend)
        assert isinstance(llm.tokens, HFTokenCounter)
        assert (await llm.complete(REQUEST)).text
    finally:
        await llm.aclose()
    assert fake_openai.requests[-1]["model"] == "tiny"


async def test_openai_without_tokenizer_estimates() -> None:
    llm = await create_backend(LLMSettings(backend="openai"))
    try:
        assert isinstance(llm.tokens, ApproxTokenCounter)
    finally:
        await llm.aclose()


async def test_transformers_is_loaded(tiny_model_dir: Path) -> None:
    llm = await create_backend(LLMSettings(backend="transformers", model=str(tiny_model_dir)))
    try:
        assert isinstance(llm, TransformersBackend)
        assert (await llm.complete(REQUEST)).completion_tokens == 4
    finally:
        await llm.aclose()


async def test_transformers_missing_model_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match="no such directory"):
        await create_backend(LLMSettings(), model=str(tmp_path / "none"))


async def test_mock_and_unknown() -> None:
    llm = await create_backend(LLMSettings(), backend="mock")
    assert isinstance(llm, MockBackend)
    with pytest.raises(ConfigError, match=r"llm\.backend = 'nope'"):
        await create_backend(LLMSettings(), backend="nope")


async def test_openai_learns_no_limit_from_a_server_that_does_not_say(
    fake_openai: FakeOpenAIServer,
) -> None:
    settings = LLMSettings(backend="openai", model="tiny", base_url=fake_openai.base_url)
    llm = await create_backend(settings)
    try:
        assert context_limit(llm.tokens) is None
        assert fit_window(4096, llm.tokens) == 4096
    finally:
        await llm.aclose()


async def test_openai_with_the_server_down_is_created_at_once() -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    llm = await create_backend(
        LLMSettings(backend="openai", base_url=f"http://127.0.0.1:{port}/v1")
    )
    try:
        assert context_limit(llm.tokens) is None
        assert time.monotonic() - started < 5
    finally:
        await llm.aclose()
