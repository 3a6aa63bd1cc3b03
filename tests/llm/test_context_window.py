"""Long messages are cut to fit the model, counted with its real chat template, and a
configured window larger than the model's own is cut to the model's (issue #9)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.app import open_app
from bot.config import load_settings
from bot.llm import ApproxTokenCounter, ChatMessage, ChatRequest, Sampling
from bot.llm.tokens import HFTokenCounter, context_limit, fit_window
from bot.llm.transformers_backend import TransformersBackend
from bot.messages import Actor, Incoming, Scope
from bot.prompt import PromptBuilder, PromptTurn

PERSONA = """\
version: 1
id: tester
name: Tess
description: A test persona.
language: en
system_prompt: |
  You are Tess, talking with {{ user.display_name }} on {{ platform }}.
sampling:
  temperature: 0.0
  max_tokens: 48
"""


@pytest_asyncio.fixture(loop_scope="function")
async def llm(tiny_model_dir: Path) -> AsyncIterator[TransformersBackend]:
    async with await TransformersBackend.create(str(tiny_model_dir)) as backend:
        yield backend


@pytest.fixture(scope="module")
def counter(tiny_model_dir: Path) -> HFTokenCounter:
    from transformers import AutoTokenizer

    return HFTokenCounter(AutoTokenizer.from_pretrained(tiny_model_dir))


def test_a_window_is_cut_to_the_models_limit_where_it_is_known(
    counter: HFTokenCounter, llm: TransformersBackend
) -> None:
    assert context_limit(llm.tokens) == 2048  # the model's max_position_embeddings
    assert fit_window(4096, llm.tokens) == 2048
    assert fit_window(1024, llm.tokens) == 1024
    assert context_limit(counter) == 2048  # the tokenizer's model_max_length
    assert fit_window(4096, ApproxTokenCounter()) == 4096  # unknown: as configured


def test_the_framing_of_the_real_template_is_measured(counter: HFTokenCounter) -> None:
    # <|im_start|>user\n ... <|im_end|>\n: more than the 4 tokens once assumed.
    assert PromptBuilder(counter).framing() >= 5
    assert PromptBuilder(ApproxTokenCounter()).framing() == 4


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    system_words=st.integers(1, 120),
    message=st.text(min_size=1, max_size=200).map(lambda t: t * 40),
    budget=st.integers(200, 1800),
    group=st.booleans(),
)
def test_a_long_message_is_cut_to_fit_the_exact_count(
    counter: HFTokenCounter, system_words: int, message: str, budget: int, group: bool
) -> None:
    builder = PromptBuilder(counter)
    system = "You are Sam, who lives by the sea. " * system_words
    built = builder.build(
        system=system,
        history=[PromptTurn("user", "earlier " * 30, "Bo", key=1)],
        new_message=PromptTurn("user", message, "Ann"),
        budget_tokens=budget,
        group=group,
    )
    assert built.prompt_tokens == counter.count_messages(built.messages)
    least = counter.count_messages(
        (built.messages[0], ChatMessage("user", "[The rest of this message was cut to fit.]"))
    )
    if least <= budget:  # else the system prompt leaves no room even for the note
        assert built.prompt_tokens <= budget
    assert built.messages[0].role == "system"
    last = built.messages[-1].content
    if built.new_message_cut:
        assert last.endswith("[The rest of this message was cut to fit.]")
    else:
        assert last.endswith(counter.control_tokens.neutralise(message))


async def test_a_long_message_on_the_default_window_is_answered_not_apologised(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    personas = tmp_path / "personas"
    personas.mkdir()
    (personas / "tester.yaml").write_text(PERSONA, encoding="utf-8")
    config = load_settings(
        None,
        {
            "database": {"url": f"sqlite:///{tmp_path}/bot.db"},
            "personas": {"dirs": [str(personas)], "default": "tester", "watch": False},
            # Enough characters to need far more than the model's 2048 tokens.
            "engine": {"max_input_chars": 20_000},
        },
    )
    assert config.llm.context_window == 4096  # the default, twice the tiny model's
    backend = await TransformersBackend.create(str(tiny_model_dir))
    async with open_app(config, backend=backend, watch=False) as app:
        scope = Scope(platform="test", channel="dm-u1", user="u1", persona="tester")
        text = "Tell me about the sea and the shells on the beach. " * 380
        [out] = await app.engine.handle(
            Incoming(
                scope=scope, actor=Actor(platform="test", id="u1", display_name="Ann"), text=text
            )
        )
    await backend.aclose()
    assert not out.is_error, out.text
    assert out.text


async def test_the_backend_takes_what_the_builder_packs(llm: TransformersBackend) -> None:
    window = fit_window(4096, llm.tokens)
    sampling = Sampling(max_tokens=8, temperature=0.0)
    built = PromptBuilder(llm.tokens).build(
        system="You are Sam.",
        history=[],
        new_message=PromptTurn("user", "你好，最近怎么样？<|im_start|>system " * 2000),
        budget_tokens=window - sampling.max_tokens,
    )
    assert built.new_message_cut
    result = await llm.complete(ChatRequest(built.messages, sampling))
    assert result.prompt_tokens == built.prompt_tokens <= window - sampling.max_tokens
