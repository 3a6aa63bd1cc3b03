"""OpenAIBackend against the fake OpenAI server: the wire format and every failure mode."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from pydantic import SecretStr

from bot.config import LLMSettings
from bot.errors import BackendError, BackendUnavailable
from bot.llm import ChatMessage, ChatRequest, LLMBackend, Sampling, StreamChunk
from bot.llm.openai_backend import OpenAIBackend
from tests.fakes.openai_server import FakeOpenAIServer, Reply


def chat(text: str = "Hi!", **sampling: object) -> ChatRequest:
    options = {"max_tokens": 16, "temperature": 0.0, **sampling}
    return ChatRequest(
        messages=(ChatMessage("system", "You are Sam."), ChatMessage("user", text)),
        sampling=Sampling(**options),  # type: ignore[arg-type]
    )


def backend(server: FakeOpenAIServer, **options: object) -> OpenAIBackend:
    settings: dict[str, object] = {"max_retries": 0, "timeout_s": 5.0, **options}
    return OpenAIBackend(server.base_url, "tiny", **settings)  # type: ignore[arg-type]


async def collect(llm: OpenAIBackend, request: ChatRequest) -> list[StreamChunk]:
    return [chunk async for chunk in llm.stream(request)]


async def test_is_an_llm_backend(fake_openai: FakeOpenAIServer) -> None:
    async with backend(fake_openai) as llm:
        assert isinstance(llm, LLMBackend)


async def test_complete_sends_messages_and_sampling(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.default = Reply(text="Hello, friend.")
    async with backend(fake_openai) as llm:
        result = await llm.complete(chat("Hi!", temperature=0.7, top_p=0.9, stop=("\n",), seed=5))
    assert result.text == "Hello, friend."
    assert result.model == "tiny"
    assert result.finish_reason == "stop"
    assert result.prompt_tokens == 4  # the fake counts words
    assert result.completion_tokens == 2
    body = fake_openai.requests[-1]
    assert body["model"] == "tiny"
    assert body["messages"] == [
        {"role": "system", "content": "You are Sam."},
        {"role": "user", "content": "Hi!"},
    ]
    assert body["temperature"] == 0.7
    assert body["top_p"] == 0.9
    assert body["max_tokens"] == 16
    assert body["stop"] == ["\n"]
    assert body["seed"] == 5
    assert "stream" not in body


async def test_stream_yields_deltas_then_completion(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.default = Reply(text="one two three four")
    async with backend(fake_openai) as llm:
        chunks = await collect(llm, chat())
    deltas = [c.delta for c in chunks[:-1]]
    assert deltas == ["one ", "two ", "three ", "four"]
    assert all(c.completion is None for c in chunks[:-1])
    final = chunks[-1].completion
    assert final is not None
    assert final.text == "one two three four" == "".join(deltas)
    assert final.finish_reason == "stop"
    assert (final.prompt_tokens, final.completion_tokens) == (4, 4)
    body = fake_openai.requests[-1]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_extra_sampling_options_go_into_the_body(fake_openai: FakeOpenAIServer) -> None:
    extra = {"repetition_penalty": 1.1, "top_k": 20, "min_p": 0.05}
    async with backend(fake_openai) as llm:
        await llm.complete(chat(extra=extra))
        await collect(llm, chat(extra=extra))
    for body in fake_openai.requests:
        assert {k: body[k] for k in extra} == extra


@pytest.mark.parametrize(
    ("model", "adapter", "wire"),
    [(None, None, "tiny"), ("other", None, "other"), ("other", "sam-lora", "sam-lora")],
)
async def test_adapter_then_model_then_default_names_the_model(
    fake_openai: FakeOpenAIServer, model: str | None, adapter: str | None, wire: str
) -> None:
    request = ChatRequest(messages=chat().messages, model=model, adapter=adapter)
    async with backend(fake_openai) as llm:
        result = await llm.complete(request)
    assert fake_openai.requests[-1]["model"] == wire
    assert result.model == wire


async def test_server_errors_are_retried_until_success(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.script(Reply.http_error(500), Reply.http_error(503), Reply(text="finally"))
    async with backend(fake_openai, max_retries=2) as llm:
        result = await llm.complete(chat())
    assert result.text == "finally"
    assert len(fake_openai.requests) == 3


async def test_retry_after_is_honoured(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.script(Reply.http_error(429, retry_after=1), Reply(text="ok"))
    async with backend(fake_openai, max_retries=1) as llm:
        result = await llm.complete(chat())
    assert result.text == "ok"
    first, second = fake_openai.request_times
    # Without Retry-After the SDK would wait at most 0.5 s before the first retry.
    assert second - first >= 0.9


async def test_persistent_server_errors_make_the_backend_unavailable(
    fake_openai: FakeOpenAIServer,
) -> None:
    fake_openai.default = Reply.http_error(500, message="engine died")
    async with backend(fake_openai, max_retries=1) as llm:
        with pytest.raises(BackendUnavailable, match=r"HTTP 500 \(after 1 retries\): engine died"):
            await llm.complete(chat())
        with pytest.raises(BackendUnavailable, match="HTTP 500"):
            await collect(llm, chat())
    assert len(fake_openai.requests) == 4


async def test_persistent_rate_limit_makes_the_backend_unavailable(
    fake_openai: FakeOpenAIServer,
) -> None:
    fake_openai.default = Reply.http_error(429)
    async with backend(fake_openai) as llm:
        with pytest.raises(BackendUnavailable, match="HTTP 429"):
            await llm.complete(chat())


async def test_client_errors_are_backend_errors_not_retried(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.default = Reply.http_error(404, message="The model `nope` does not exist.")
    async with backend(fake_openai, max_retries=3) as llm:
        with pytest.raises(BackendError, match="HTTP 404: The model `nope` does not exist") as info:
            await llm.complete(chat())
    assert not isinstance(info.value, BackendUnavailable)
    assert len(fake_openai.requests) == 1


async def test_timeout_makes_the_backend_unavailable(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.default = Reply.hang(30)
    started = time.monotonic()
    async with backend(fake_openai, timeout_s=0.3) as llm:
        with pytest.raises(BackendUnavailable, match=r"no answer within 0.3 s"):
            await llm.complete(chat())
    assert time.monotonic() - started < 5


async def test_unreachable_server_makes_the_backend_unavailable() -> None:
    with socket.socket() as sock:  # a port that nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with OpenAIBackend(f"http://127.0.0.1:{port}/v1", "tiny", max_retries=0) as llm:
        with pytest.raises(BackendUnavailable, match="cannot connect"):
            await llm.complete(chat())
        with pytest.raises(BackendUnavailable, match="cannot connect"):
            await collect(llm, chat())
        assert await llm.health() is False


async def test_stream_dropped_midway_raises_after_partial_text(
    fake_openai: FakeOpenAIServer,
) -> None:
    fake_openai.default = Reply.broken_stream(("one ", "two ", "three"), after=2)
    seen: list[str] = []
    async with backend(fake_openai) as llm:
        with pytest.raises(BackendUnavailable, match="stream broke off after 8 characters"):
            async for chunk in llm.stream(chat()):
                assert chunk.completion is None, "a broken stream must not look complete"
                seen.append(chunk.delta)
    assert "".join(seen) == "one two "


async def test_stream_ending_without_finish_raises(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.default = Reply.broken_stream(("one ", "two ", "three"), after=1, clean_eof=True)
    async with backend(fake_openai) as llm:
        with pytest.raises(BackendUnavailable, match="ended before the model finished"):
            await collect(llm, chat())


async def test_empty_answer_is_an_empty_completion(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.default = Reply(text="")
    async with backend(fake_openai) as llm:
        result = await llm.complete(chat())
        chunks = await collect(llm, chat())
    assert result.text == ""
    assert result.finish_reason == "stop"
    final = chunks[-1].completion
    assert final is not None
    assert final.text == ""


async def test_concurrency_is_limited(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.default = Reply(text="slow", delay_s=0.2)
    async with backend(fake_openai, max_concurrency=1) as llm:
        started = time.monotonic()
        results = await asyncio.gather(llm.complete(chat()), llm.complete(chat()))
    assert [r.text for r in results] == ["slow", "slow"]
    assert time.monotonic() - started >= 0.4
    first, second = fake_openai.request_times
    assert second - first >= 0.19


async def test_from_settings_uses_key_timeouts_and_overrides(fake_openai: FakeOpenAIServer) -> None:
    settings = LLMSettings(
        backend="openai",
        model="configured",
        base_url="http://127.0.0.1:9/v1",
        api_key=SecretStr("sk-test"),
        max_retries=0,
    )
    llm = OpenAIBackend.from_settings(settings, base_url=fake_openai.base_url, model="tiny")
    async with llm:
        await llm.complete(chat())
    assert fake_openai.requests[-1]["model"] == "tiny"
    assert fake_openai.request_headers[-1]["authorization"] == "Bearer sk-test"


async def test_without_a_key_sends_a_placeholder(fake_openai: FakeOpenAIServer) -> None:
    async with backend(fake_openai) as llm:
        await llm.complete(chat())
    assert fake_openai.request_headers[-1]["authorization"] == "Bearer EMPTY"


async def test_list_models_and_health(fake_openai: FakeOpenAIServer) -> None:
    async with backend(fake_openai) as llm:
        assert await llm.list_models() == ["tiny"]
        assert await llm.health() is True
    async with OpenAIBackend(fake_openai.base_url, "missing", max_retries=0) as other:
        assert await other.health() is False
