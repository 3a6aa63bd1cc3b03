"""Token counters: exact ones from the model's tokenizer, and an estimate without one.

Both count message contents as the backends send them: with control-token
look-alikes neutralised (`bot.llm.control_tokens`), so a budget is never off by
what neutralising changed.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import structlog

from bot.llm.base import ChatMessage, TokenCounter
from bot.llm.control_tokens import DEFUSED_CHARACTERS, GENERIC, ControlTokens

__all__ = [
    "ApproxTokenCounter",
    "HFTokenCounter",
    "context_limit",
    "control_tokens",
    "encode_chat",
    "fit_window",
    "load_token_counter",
    "neutralise_messages",
]

# transformers says "no limit" with a huge model_max_length (int(1e30)).
_NO_LIMIT = 10_000_000

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
    CJK character, three a character of a defused control token, 4 tokens of template
    overhead a message) so a prompt budgeted with it fits the real model.
    `context_limit` is the model's context length when something told us.
    """

    per_message_overhead = 4
    control_tokens: ControlTokens = GENERIC

    def __init__(self, *, context_limit: int | None = None) -> None:
        self.context_limit = context_limit

    def count_text(self, text: str) -> int:
        """Estimated tokens in `text`."""
        text = self.control_tokens.neutralise(text)
        if text.isascii():
            return (len(text) * 2 + 6) // 7
        wide = sum(1 for ch in text if _is_wide(ch))
        # These rare marks may cost a byte-level tokenizer a token per UTF-8 byte (3).
        defused = sum(text.count(ch) for ch in DEFUSED_CHARACTERS)
        return wide + 3 * defused + ((len(text) - wide - defused) * 2 + 6) // 7

    def count_messages(self, messages: Sequence[ChatMessage]) -> int:
        """Estimated tokens of the rendered chat, including the generation prompt."""
        return 3 + sum(self.per_message_overhead + self.count_text(m.content) for m in messages)


class HFTokenCounter:
    """Exact counts from a transformers tokenizer and its chat template.

    Without a chat template, messages are counted as `role: content` lines, which is
    close for most templates but not exact. Contents are counted neutralised with
    this tokenizer's control tokens (`control_tokens`), as every backend sends them.
    `context_limit` is the model's context length where known: given, or the
    tokenizer's `model_max_length` when that is a real limit.
    """

    def __init__(self, tokenizer: Any, *, context_limit: int | None = None) -> None:
        self.tokenizer = tokenizer
        self.control_tokens = ControlTokens.for_tokenizer(tokenizer)
        if context_limit is None:
            declared = getattr(tokenizer, "model_max_length", None)
            if isinstance(declared, int) and 0 < declared < _NO_LIMIT:
                context_limit = declared
        self.context_limit = context_limit

    def count_text(self, text: str) -> int:
        """Tokens in `text` (neutralised), without special tokens."""
        text = self.control_tokens.neutralise(text)
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def count_messages(self, messages: Sequence[ChatMessage]) -> int:
        """Tokens of `messages` rendered with the chat template and the generation prompt."""
        return len(self.encode_messages(messages))

    def encode_messages(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The token ids of `messages` as a backend with this tokenizer sends them."""
        return encode_chat(self.tokenizer, messages, self.control_tokens)


def encode_chat(
    tokenizer: Any, messages: Sequence[ChatMessage], control: ControlTokens
) -> list[int]:
    """Token ids of `messages` (contents neutralised) in the chat template, with the
    generation prompt: what the transformers backend generates from, and what vLLM
    builds from the same messages with the same tokenizer.

    Without a chat template, messages become `role: content` lines.
    """
    messages = neutralise_messages(messages, control)
    if getattr(tokenizer, "chat_template", None):
        encoded = tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=True,
            tokenize=True,
            # Explicit: transformers 4 returns a bare list by default, 5 a dict.
            return_dict=True,
        )
        return list(encoded["input_ids"])
    joined = "".join(f"{m.role}: {m.content}\n" for m in messages) + "assistant: "
    return list(tokenizer.encode(joined, add_special_tokens=True))


def neutralise_messages(
    messages: Sequence[ChatMessage], control: ControlTokens
) -> tuple[ChatMessage, ...]:
    """`messages` with every content neutralised (the same objects where nothing changed)."""
    out = []
    for message in messages:
        content = control.neutralise(message.content)
        out.append(message if content == message.content else ChatMessage(message.role, content))
    return tuple(out)


def control_tokens(counter: TokenCounter) -> ControlTokens:
    """The control tokens `counter` neutralises: its tokenizer's, or the common families."""
    found = getattr(counter, "control_tokens", None)
    return found if isinstance(found, ControlTokens) else GENERIC


def context_limit(counter: TokenCounter) -> int | None:
    """The model's context length as `counter` knows it, or None."""
    found = getattr(counter, "context_limit", None)
    return found if isinstance(found, int) and found > 0 else None


def fit_window(window: int, counter: TokenCounter) -> int:
    """`window` (a configured context size) cut to the model's own limit where known.

    A persona or config that says 4096 on a 2048-token model would otherwise budget
    prompts the model cannot take.
    """
    limit = context_limit(counter)
    return min(window, limit) if limit is not None else window


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
