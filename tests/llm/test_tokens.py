"""Token counters: the estimate, the tokenizer-exact counter, and loading one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from bot.llm import (
    ApproxTokenCounter,
    ChatMessage,
    HFTokenCounter,
    TokenCounter,
    load_token_counter,
)

MESSAGES = (
    ChatMessage("system", "You are Samantha, who lives by the sea."),
    ChatMessage("user", "你好！今天天气怎么样？"),
    ChatMessage("assistant", "Sunny, and the tide is low."),
    ChatMessage("user", "Great, let's walk along the beach."),
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_approx_counts_latin_and_cjk() -> None:
    counter = ApproxTokenCounter()
    assert isinstance(counter, TokenCounter)
    assert counter.count_text("") == 0
    assert counter.count_text("hello world!") == 4  # 12 chars at ~3.5 a token, rounded up
    assert counter.count_text("你好世界") == 4
    assert counter.count_messages(MESSAGES) > sum(counter.count_text(m.content) for m in MESSAGES)


def test_hf_counts_text_without_special_tokens(tokenizer: Any) -> None:
    counter = HFTokenCounter(tokenizer)
    assert isinstance(counter, TokenCounter)
    for text in ("", "hello world", "你好，世界", "Samantha 在海边 😊"):
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert counter.count_text(text) == len(ids)
        assert tokenizer.decode(ids) == text


def test_hf_counts_messages_with_the_chat_template(tokenizer: Any) -> None:
    counter = HFTokenCounter(tokenizer)
    rendered = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in MESSAGES],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert rendered.endswith("<|im_start|>assistant\n")
    assert counter.count_messages(MESSAGES) == len(
        tokenizer.encode(rendered, add_special_tokens=False)
    )
    # Template overhead: each message costs more than its bare text.
    assert counter.count_messages(MESSAGES) > sum(counter.count_text(m.content) for m in MESSAGES)


def test_hf_without_chat_template_counts_plain_lines(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    bare = AutoTokenizer.from_pretrained(tiny_model_dir)
    bare.chat_template = None
    counter = HFTokenCounter(bare)
    joined = "".join(f"{m.role}: {m.content}\n" for m in MESSAGES) + "assistant: "
    assert counter.count_messages(MESSAGES) == len(bare.encode(joined))


def test_load_token_counter_from_a_directory(tiny_model_dir: Path) -> None:
    counter = load_token_counter(str(tiny_model_dir))
    assert isinstance(counter, HFTokenCounter)
    assert counter.count_text("hello") >= 1


def test_load_token_counter_without_a_name_estimates() -> None:
    assert isinstance(load_token_counter(None), ApproxTokenCounter)
    assert isinstance(load_token_counter(""), ApproxTokenCounter)


@pytest.mark.parametrize("name", ["no-such-org/no-such-tokenizer", "/no/such/dir"])
def test_load_token_counter_falls_back_with_a_warning(name: str) -> None:
    with capture_logs() as logs:
        counter = load_token_counter(name)
    assert isinstance(counter, ApproxTokenCounter)
    [entry] = [e for e in logs if e["event"] == "tokenizer_unavailable"]
    assert entry["log_level"] == "warning"
    assert entry["tokenizer"] == name
    assert entry["fallback"] == "approximate token counts"


def test_approx_estimates_defused_control_tokens_no_worse_than_prose(tokenizer: Any) -> None:
    # The tiny tokenizer (1,000 tokens) spends more than any real one on everything;
    # what matters is that a prompt full of defused tokens is not underestimated
    # more than ordinary text is, so an attacker cannot push a prompt past the model.
    approx, exact = ApproxTokenCounter(), HFTokenCounter(tokenizer)
    prose = "Hello there, how are you today? I walked along the beach. " * 20
    baseline = approx.count_text(prose) / exact.count_text(prose)
    for text in ("<|im_start|>system " * 50, "[INST] <<SYS>> </s> " * 40, "＜｜User｜＞" * 60):
        assert approx.count_text(text) / exact.count_text(text) >= 0.9 * baseline, text
