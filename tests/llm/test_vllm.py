"""OpenAIBackend against the real vLLM server on the CPU, serving the tiny model.

Slow to start (about 30 s, once per session); run or skip with `-m vllm` / `-m "not vllm"`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import BackendError, BackendUnavailable
from bot.llm import ChatMessage, ChatRequest, Sampling, load_token_counter
from bot.llm.openai_backend import OpenAIBackend

pytestmark = pytest.mark.vllm


def chat(text: str = "Hello there, how are you today?", **sampling: object) -> ChatRequest:
    options = {"max_tokens": 16, "temperature": 0.0, **sampling}
    return ChatRequest(
        messages=(ChatMessage("system", "You are Sam."), ChatMessage("user", text)),
        sampling=Sampling(**options),  # type: ignore[arg-type]
    )


def backend(url: str, model: str, tiny_model_dir: Path) -> OpenAIBackend:
    return OpenAIBackend(
        url, model, max_retries=0, timeout_s=30, tokens=load_token_counter(str(tiny_model_dir))
    )


async def test_chat(vllm_server: str, vllm_model_name: str, tiny_model_dir: Path) -> None:
    async with backend(vllm_server, vllm_model_name, tiny_model_dir) as llm:
        assert await llm.health()
        result = await llm.complete(chat(max_tokens=12))
        assert result.text
        assert result.model == vllm_model_name
        assert result.completion_tokens == 12
        assert result.finish_reason == "length"
        # Our counter renders the chat template exactly as the server does.
        assert result.prompt_tokens == llm.tokens.count_messages(chat().messages)


async def test_streaming_matches_complete(
    vllm_server: str, vllm_model_name: str, tiny_model_dir: Path
) -> None:
    async with backend(vllm_server, vllm_model_name, tiny_model_dir) as llm:
        expected = await llm.complete(chat(max_tokens=24))
        chunks = [chunk async for chunk in llm.stream(chat(max_tokens=24))]
    final = chunks[-1].completion
    assert final is not None
    assert len(chunks) > 3
    assert "".join(c.delta for c in chunks) == final.text == expected.text
    assert (final.prompt_tokens, final.completion_tokens) == (
        expected.prompt_tokens,
        expected.completion_tokens,
    )


async def test_seed_makes_sampling_repeatable(
    vllm_server: str, vllm_model_name: str, tiny_model_dir: Path
) -> None:
    async with backend(vllm_server, vllm_model_name, tiny_model_dir) as llm:
        first = await llm.complete(chat(temperature=1.0, top_p=1.0, seed=7))
        again = await llm.complete(chat(temperature=1.0, top_p=1.0, seed=7))
        other = await llm.complete(chat(temperature=1.0, top_p=1.0, seed=8))
    assert first.text == again.text
    assert first.text != other.text


async def test_extra_body_reaches_vllm(
    vllm_server: str, vllm_model_name: str, tiny_model_dir: Path
) -> None:
    async with backend(vllm_server, vllm_model_name, tiny_model_dir) as llm:
        greedy = await llm.complete(chat())
        # top_k=1 is not an OpenAI parameter: only via extra_body does it make sampling greedy.
        top1 = await llm.complete(chat(temperature=1.0, seed=3, extra={"top_k": 1}))
    assert top1.text == greedy.text


async def test_stop_string(vllm_server: str, vllm_model_name: str, tiny_model_dir: Path) -> None:
    async with backend(vllm_server, vllm_model_name, tiny_model_dir) as llm:
        full = await llm.complete(chat(max_tokens=24))
        stop = next(
            full.text[i : i + 2]
            for i in range(3, len(full.text) - 2)
            if "\ufffd" not in full.text[i : i + 2] and full.text.find(full.text[i : i + 2]) == i
        )
        cut = await llm.complete(chat(max_tokens=24, stop=(stop,)))
    assert cut.text == full.text[: full.text.index(stop)]
    assert cut.finish_reason == "stop"


async def test_lora_adapter_loaded_at_runtime(
    vllm_server: str, vllm_model_name: str, tiny_model_dir: Path, tiny_lora_dir: Path
) -> None:
    async with backend(vllm_server, vllm_model_name, tiny_model_dir) as llm:
        await llm.load_lora_adapter("sam-lora", str(tiny_lora_dir))
        try:
            assert "sam-lora" in await llm.list_models()
            base = await llm.complete(chat())
            adapted = await llm.complete(
                ChatRequest(chat().messages, chat().sampling, adapter="sam-lora")
            )
            streamed = [
                c
                async for c in llm.stream(
                    ChatRequest(chat().messages, chat().sampling, adapter="sam-lora")
                )
            ]
        finally:
            await llm.unload_lora_adapter("sam-lora")
        assert adapted.model == "sam-lora"
        assert adapted.text != base.text
        assert "".join(c.delta for c in streamed) == adapted.text
        with pytest.raises(BackendError, match="HTTP 404") as info:
            await llm.complete(ChatRequest(chat().messages, adapter="sam-lora"))
        assert not isinstance(info.value, BackendUnavailable)
