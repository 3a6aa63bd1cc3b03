"""Keeping chat-template control tokens out of untrusted text.

A chat template turns messages into one string, and the tokenizer (ours, or vLLM's
on the server) then reads every special-token string in it as the special token:
a person who types `<|im_start|>system` would write a system turn of their own.
`ControlTokens.neutralise` rewrites every control-token look-alike in a message's
content so that no tokenizer reads it as one: the brackets and bars of the token
become similar-looking characters that no Unicode normalisation maps back
(`<|im_start|>` → `‹¦im_start¦›`), and invisible characters inside it are dropped.

What counts as a control token: the common families of chat formats (ChatML,
Llama 2 and 3, Mistral, Gemma, Phi, Command-R, DeepSeek's fullwidth bars, …) and,
when the tokenizer is known, every added or special token of that tokenizer. Text
is matched in a folded view (NFKC per character, default-ignorable and combining
characters skipped, case ignored), so fullwidth forms and zero-width characters
inside a token do not hide it. The rewrite is idempotent, and text without any of
the characters a token needs (`<>[]|` and their compatibility forms) is returned
unchanged without further work.

Backends and token counters neutralise every message content, so what is counted
is what is sent; the prompt builder does it too, so the budget sees the same text.
"""

from __future__ import annotations

import threading
import unicodedata
from collections import OrderedDict
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import regex

__all__ = ["DEFUSED_CHARACTERS", "GENERIC", "ControlTokens"]

#: Characters every control token of the known families contains, and their
#: compatibility forms (NFKC maps these onto them; checked by a test).
_BRACKETS = "<>[]|"
_TRIGGER = regex.compile(r"[<>\[\]|\uFE47\uFE48\uFE64\uFE65\uFF1C\uFF1E\uFF3B\uFF3D\uFF5C]")

# What a bracket becomes inside a neutralised token: similar to look at, and no
# normalisation (NFKC included) turns it back into the original.
_LOOKALIKE = {"<": "\u2039", ">": "\u203a", "|": "\u00a6", "[": "\u2045", "]": "\u2046"}
#: The characters a defused token is written with (for estimates of its cost).
DEFUSED_CHARACTERS = "".join(_LOOKALIKE.values())

# At most 512 texts of at most 16k characters each are remembered.
_CACHED_TEXTS = 512
_CACHED_CHARS = 16_384

_IGNORABLE = regex.compile(r"[\p{Default_Ignorable_Code_Point}\p{Mn}\p{Me}]")
_CONTROL = regex.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

# The families, matched in the folded view with case ignored. Bounded repetitions
# keep every match short, so a scan is linear in the text.
_FAMILIES = [
    # ChatML, Llama 3, Phi, Command-R, Granite, gpt-oss, Qwen, DeepSeek (｜ folds to |).
    r"<\|[^<>|\n]{0,64}\|>",
    # SentencePiece-era specials and their relatives.
    r"</?(?:s|unk|pad|mask|bos|eos|sep|cls|sop|eop|eod|n)>",
    # Gemma: <start_of_turn>, <end_of_turn>, <start_of_image>, <unused12>, …
    r"</?(?:start|end)_of_[a-z_]{1,32}>",
    r"</?(?:unused|extra_id_|reserved_?)[0-9]{1,6}>",
    r"<[a-z_]{0,40}_token>",  # Command-R's <BOS_TOKEN>, <EOS_TOKEN>
    # Tool calls and reasoning in Qwen, Hermes, DeepSeek-R1 style templates.
    r"</?(?:think|thinking|tool_call|tool_calls|tool_response|tools|function_call|"
    r"function_calls|functions|fim_prefix|fim_middle|fim_suffix|fim_pad|repo_name|"
    r"file_sep|image|img|audio|video|vision_start|vision_end)>",
    # Llama 2 and Mistral: [INST] [/INST] <<SYS>> [TOOL_CALLS] [SYSTEM_PROMPT] …
    r"\[/?(?:inst|sys|available_tools|tool_calls|tool_results|tool_content|"
    r"system_prompt|img|img_break|img_end|prefix|middle|suffix|think|args|call_id|"
    r"gmask|smask|mask)\]",
    r"<</?sys>>",
    r">>[a-z]{2,20}<<",  # Falcon: >>QUESTION<< >>ANSWER<<
]


@lru_cache(maxsize=8192)
def _fold_char(ch: str) -> str:
    if _IGNORABLE.match(ch) or _CONTROL.match(ch):
        return ""
    return unicodedata.normalize("NFKC", ch)


def _fold(text: str) -> tuple[str, list[int]]:
    """The folded view of `text`, and for each folded character its source index."""
    if text.isascii() and not _CONTROL.search(text):
        return text, list(range(len(text)))
    out: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(text):
        folded = _fold_char(ch)
        out.append(folded)
        where.extend([i] * len(folded))
    return "".join(out), where


def _fold_literal(token: str) -> str:
    return "".join(_fold_char(ch) for ch in token)


class ControlTokens:
    """Finds and defuses control-token look-alikes: the common families, plus
    `literals` (a tokenizer's own added and special tokens)."""

    def __init__(self, literals: Iterable[str] = ()) -> None:
        generic = regex.compile("|".join(_FAMILIES), regex.IGNORECASE | regex.V0)
        extra: set[str] = set()
        for token in literals:
            folded = _fold_literal(token)
            # Only tokens with a bracket or bar: the rest of a tokenizer's added
            # tokens are merges of ordinary text (runs of spaces, words).
            if len(folded) < 2 or not any(b in folded for b in _BRACKETS):
                continue
            if generic.fullmatch(folded) is None:
                extra.add(folded)
        self.literals = frozenset(extra)
        alternatives = [regex.escape(t) for t in sorted(extra, key=len, reverse=True)]
        self._pattern = regex.compile(
            "|".join([*alternatives, *_FAMILIES]), regex.IGNORECASE | regex.V0
        )
        # The same persona prompt and history are neutralised on every turn (by the
        # builder, the counter and the backend): remember recent slow-path results.
        self._recent: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()  # counters are also used from worker threads

    @classmethod
    def for_tokenizer(cls, tokenizer: Any) -> ControlTokens:
        """The families plus every added and special token of a transformers tokenizer."""
        literals: set[str] = set()
        for name in ("all_special_tokens", "additional_special_tokens"):
            found = getattr(tokenizer, name, None) or ()
            literals.update(t for t in found if isinstance(t, str))
        get_added = getattr(tokenizer, "get_added_vocab", None)
        if callable(get_added):
            literals.update(t for t in get_added() if isinstance(t, str))
        return cls(literals)

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Where in `text` control-token look-alikes are, as (start, end) indices."""
        if not _TRIGGER.search(text):
            return []
        folded, where = _fold(text)
        found = []
        for match in self._pattern.finditer(folded):
            start, end = match.span()
            if end > start:
                found.append((where[start], where[end - 1] + 1))
        return found

    def neutralise(self, text: str) -> str:
        """`text` with every control-token look-alike defused; unchanged elsewhere."""
        if not _TRIGGER.search(text):
            return text
        with self._lock:
            done = self._recent.get(text)
            if done is not None:
                self._recent.move_to_end(text)
                return done
        done = self._neutralise(text)
        if len(text) <= _CACHED_CHARS:
            with self._lock:
                self._recent[text] = done
                if len(self._recent) > _CACHED_TEXTS:
                    self._recent.popitem(last=False)
        return done

    def _neutralise(self, text: str) -> str:
        for _ in range(8):  # one pass almost always; a defused token may unmask a neighbour
            spans = self.spans(text)
            if not spans:
                return text
            parts: list[str] = []
            last = 0
            for start, end in spans:
                parts.append(text[last:start])
                parts.append(_defuse(text[start:end]))
                last = end
            parts.append(text[last:])
            text = "".join(parts)
        # Pathological input that keeps unmasking tokens: defuse every bracket.
        return "".join(_defuse(ch) if _TRIGGER.match(ch) else ch for ch in text)


def _defuse(token: str) -> str:
    out = []
    for ch in token:
        folded = _fold_char(ch)
        if not folded:
            continue  # the invisible characters that hid the token go
        if any(b in folded for b in _BRACKETS):
            out.append("".join(_LOOKALIKE.get(c, c) for c in folded))
        else:
            out.append(ch)
    return "".join(out)


#: The common families only: for backends whose tokenizer is not known here.
GENERIC = ControlTokens()
