"""Token counters: exact ones from the model's tokenizer, and an estimate without one."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import structlog

from bot.llm.base import ChatMessage, TokenCounter

__all__ = ["ApproxTokenCounter", "HFTokenCounter", "load_token_counter"]

_log = structlog.get_logger(__name__)


def _is_wide(ch: str) -> bool:
    # CJK ideographs, kana and hangul are roughly one token each in common tokenizers.
    code = ord(ch)
    return (
        0x3040 <= code <= 0x30FF
        or 0x3400 <= code <= 0x9FFF
        or 0xAC00 <= code <= 0xD7AF
        or 0xF900 <= code <= 0xFAFF
        or 0x20000 <= code <= 0x2FFFF
    )


class ApproxTokenCounter:
    """Estimates tokens when the model's tokenizer is not at hand.

    Errs on the high side (about 3.5 characters a token for Latin text, one token a
    CJK character, 4 tokens of template overhead a message) so a prompt budgeted
    with it fits the real model.
    """

    per_message_overhead = 4

    def count_text(self, text: str) -> int:
        """Estimated tokens in `text`."""
        if text.isascii():
            return (len(text) * 2 + 6) // 7
        wide = sum(1 for ch in text if _is_wide(ch))
        return wide + ((len(text) - wide) * 2 + 6) // 7

    def count_messages(self, messages: Sequence[ChatMessage]) -> int:
        """Estimated tokens of the rendered chat, including the generation prompt."""
        return 3 + sum(self.per_message_overhead + self.count_text(m.content) for m in messages)


class HFTokenCounter:
    """Exact counts from a transformers tokenizer and its chat template.

    Without a chat template, messages are counted as `role: content` lines, which is
    close for most templates but not exact.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def count_text(self, text: str) -> int:
        """Tokens in `text`, without special tokens."""
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def count_messages(self, messages: Sequence[ChatMessage]) -> int:
        """Tokens of `messages` rendered with the chat template and the generation prompt."""
        if getattr(self.tokenizer, "chat_template", None):
            encoded = self.tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in messages],
                add_generation_prompt=True,
                tokenize=True,
                # Explicit: transformers 4 returns a bare list by default, 5 a dict.
                return_dict=True,
            )
            return len(encoded["input_ids"])
        joined = "".join(f"{m.role}: {m.content}\n" for m in messages) + "assistant: "
        return len(self.tokenizer.encode(joined, add_special_tokens=True))


def load_token_counter(name_or_path: str | None) -> TokenCounter:
    """An `HFTokenCounter` for a tokenizer directory or hub id, else an estimate.

    Blocking (reads files, may use the network unless `HF_HUB_OFFLINE=1`): call it
    from a worker thread in async code. Never raises: when transformers is missing or
    the tokenizer cannot be loaded, it logs a warning and returns `ApproxTokenCounter`.
    """
    if not name_or_path:
        return ApproxTokenCounter()
    try:
        # transformers is optional (the `local` extra): imported here, on use.
        transformers: Any = importlib.import_module("transformers")
        tokenizer = transformers.AutoTokenizer.from_pretrained(name_or_path)
    except ImportError:
        _log.warning(
            "tokenizer_unavailable",
            tokenizer=name_or_path,
            reason="transformers is not installed (pip install 'personabot[local]')",
            fallback="approximate token counts",
        )
        return ApproxTokenCounter()
    except Exception as exc:  # any load failure falls back to the estimate
        _log.warning(
            "tokenizer_unavailable",
            tokenizer=name_or_path,
            reason=f"{type(exc).__name__}: {exc}",
            fallback="approximate token counts",
        )
        return ApproxTokenCounter()
    return HFTokenCounter(tokenizer)
