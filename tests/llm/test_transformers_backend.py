"""TransformersBackend with the tiny random model: real generation, off the event loop."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from bot.errors import BackendError, BackendUnavailable
from bot.llm import ChatMessage, ChatRequest, Completion, LLMBackend, Sampling
from bot.llm.tokens import HFTokenCounter
from bot.llm.transformers_backend import TransformersBackend


def chat(text: str = "Hello there, how are you today?", **sampling: object) -> ChatRequest:
    options = {"max_tokens": 16, "temperature": 0.0, **sampling}
    return ChatRequest(
        messages=(ChatMessage("system", "You are Sam."), ChatMessage("user", text)),
        sampling=Sampling(**options),  # type: ignore[arg-type]
    )


@pytest_asyncio.fixture(loop_scope="function")
async def llm(tiny_model_dir: Path) -> AsyncIterator[TransformersBackend]:
    async with await TransformersBackend.create(str(tiny_model_dir)) as backend:
        yield backend


def a_stop_string(text: str) -> tuple[str, int]:
    """A two-character piece of `text`, first found at index >= 3, and that index."""
    for i in range(3, len(text) - 2):
        piece = text[i : i + 2]
        if "\ufffd" not in piece and text.find(piece) == i:
            return piece, i
    raise AssertionError(f"no usable stop string in {text!r}")


async def test_is_an_llm_backend_with_exact_token_counts(llm: TransformersBackend) -> None:
    assert isinstance(llm, LLMBackend)
    assert isinstance(llm.tokens, HFTokenCounter)
    result = await llm.complete(chat())
    assert result.prompt_tokens == llm.tokens.count_messages(chat().messages)


async def test_generates_up_to_max_tokens(llm: TransformersBackend) -> None:
    result = await llm.complete(chat(max_tokens=12))
    assert result.text
    assert result.completion_tokens == 12
    assert result.finish_reason == "length"
    assert result.model == llm.model


async def test_greedy_is_deterministic(llm: TransformersBackend) -> None:
    first = await llm.complete(chat())
    second = await llm.complete(chat())
    assert first == second


async def test_stream_joins_to_the_completion(llm: TransformersBackend) -> None:
    expected = await llm.complete(chat(max_tokens=24))
    chunks = [chunk async for chunk in llm.stream(chat(max_tokens=24))]
    deltas = [c.delta for c in chunks[:-1]]
    assert len(deltas) >= 3
    assert all(deltas) and all(c.completion is None for c in chunks[:-1])
    final = chunks[-1].completion
    assert final == expected
    assert "".join(deltas) == final.text


async def test_stop_strings_cut_the_text_and_stop_generating(llm: TransformersBackend) -> None:
    full = await llm.complete(chat(max_tokens=24))
    stop, index = a_stop_string(full.text)
    result = await llm.complete(chat(max_tokens=24, stop=("never-appears", stop)))
    assert result.text == full.text[:index]
    assert result.finish_reason == "stop"
    assert result.completion_tokens is not None and result.completion_tokens < 24
    chunks = [chunk async for chunk in llm.stream(chat(max_tokens=24, stop=(stop,)))]
    assert "".join(c.delta for c in chunks) == full.text[:index]
    assert chunks[-1].completion == result


async def test_seed_makes_sampling_repeatable(llm: TransformersBackend) -> None:
    def sampled(seed: int) -> ChatRequest:
        return chat(temperature=1.0, top_p=1.0, seed=seed, max_tokens=16)

    first = await llm.complete(sampled(7))
    again = await llm.complete(sampled(7))
    other = await llm.complete(sampled(8))
    assert first.text == again.text
    assert first.text != other.text


async def test_event_loop_stays_responsive(llm: TransformersBackend) -> None:
    await llm.complete(chat(max_tokens=2))  # warm up
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    try:
        started = time.monotonic()
        await llm.complete(chat(max_tokens=96))
        elapsed = time.monotonic() - started
    finally:
        task.cancel()
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) >= 5, f"{len(ticks)} ticks in {elapsed:.2f} s"
    assert max(gaps) < 0.25


async def test_concurrent_requests_queue_and_both_complete(llm: TransformersBackend) -> None:
    one, two = chat("first question"), chat("second question")
    alone = [await llm.complete(one), await llm.complete(two)]
    together = await asyncio.gather(llm.complete(one), llm.complete(two))
    assert list(together) == alone
    streamed, completed = await asyncio.gather(_joined(llm, one), llm.complete(two))
    assert streamed == alone[0].text
    assert completed == alone[1]


async def _joined(llm: TransformersBackend, request: ChatRequest) -> str:
    return "".join([chunk.delta async for chunk in llm.stream(request)])


async def test_leaving_a_stream_early_frees_the_worker(llm: TransformersBackend) -> None:
    async for _ in llm.stream(chat(max_tokens=200)):
        break
    result = await asyncio.wait_for(llm.complete(chat(max_tokens=4)), timeout=10)
    assert result.completion_tokens == 4


async def test_lora_adapter_changes_the_output(
    llm: TransformersBackend, tiny_lora_dir: Path
) -> None:
    base = await llm.complete(chat())
    adapted = await llm.complete(
        ChatRequest(chat().messages, chat().sampling, adapter=str(tiny_lora_dir))
    )
    assert adapted.text != base.text
    assert adapted.model == str(tiny_lora_dir)
    # The adapter is off again for requests without one.
    assert await llm.complete(chat()) == base


async def test_adapter_name_that_is_not_a_directory_uses_the_base_model(
    llm: TransformersBackend,
) -> None:
    base = await llm.complete(chat())
    request = ChatRequest(chat().messages, chat().sampling, adapter="sam-lora")
    with capture_logs() as logs:
        first = await llm.complete(request)
        second = await llm.complete(request)
    assert first == second == base  # and it says so: the model is the base model
    warnings = [e for e in logs if e["event"] == "llm_adapter_skipped"]
    assert len(warnings) == 1
    assert warnings[0]["adapter"] == "sam-lora"
    assert warnings[0]["log_level"] == "warning"


async def test_other_model_in_request_is_an_error(llm: TransformersBackend) -> None:
    with pytest.raises(BackendError, match="create a backend for that model"):
        await llm.complete(ChatRequest(chat().messages, model="someone/else"))


async def test_too_long_prompt_is_an_error(llm: TransformersBackend) -> None:
    with pytest.raises(BackendError, match="exceeds the context"):
        await llm.complete(chat(max_tokens=2040))


async def test_missing_model_directory_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match=r"no such directory.*bot models tiny DIR"):
        await TransformersBackend.create(str(tmp_path / "nowhere"))


async def test_unknown_hub_model_offline_is_unavailable() -> None:
    with pytest.raises(BackendUnavailable, match=r"not a local model directory.*bot models tiny"):
        await TransformersBackend.create("no-such-org/no-such-model")


async def test_closed_backend_refuses_requests(tiny_model_dir: Path) -> None:
    backend = await TransformersBackend.create(str(tiny_model_dir))
    await backend.aclose()
    await backend.aclose()  # idempotent
    with pytest.raises(BackendUnavailable, match="closed"):
        await backend.complete(chat())


async def test_loads_lazily_on_first_request(tiny_model_dir: Path) -> None:
    backend = TransformersBackend(str(tiny_model_dir))
    try:
        result: Completion = await backend.complete(chat(max_tokens=3))
    finally:
        await backend.aclose()
    assert result.completion_tokens == 3
