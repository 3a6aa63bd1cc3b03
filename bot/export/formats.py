"""The three record shapes a dataset is written in.

    OpenAI chat   {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}
    ShareGPT      {"id": ..., "conversations": [{"from": "system"|"human"|"gpt", "value": ...}]}
    DPO           {"prompt": [messages...], "chosen": [assistant message],
                   "rejected": [assistant message],
                   "source": "feedback"|"regeneration"|"correction"}

The DPO shape is TRL's conversational preference format; `source` says where the
preference came from and is ignored by trainers that do not know it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

__all__ = ["dpo_record", "openai_record", "sharegpt_record", "window_lines"]

# The C string encoder json.dumps(..., ensure_ascii=False) uses: quotes and escapes.
_quote = cast(Any, json.encoder).encode_basestring

_SHAREGPT_FROM = {"system": "system", "user": "human", "assistant": "gpt"}


def openai_record(system: str, turns: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """One OpenAI chat fine-tuning line: the system prompt, then (role, content) turns."""
    messages = [{"role": "system", "content": system}]
    messages.extend({"role": role, "content": content} for role, content in turns)
    return {"messages": messages}


def sharegpt_record(
    record_id: str, system: str, turns: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    """The same window in ShareGPT's shape (as read by Axolotl, LLaMA-Factory, FastChat)."""
    conversations = [{"from": "system", "value": system}]
    conversations.extend({"from": _SHAREGPT_FROM[role], "value": text} for role, text in turns)
    return {"id": record_id, "conversations": conversations}


def dpo_record(
    system: str,
    prompt: Sequence[tuple[str, str]],
    chosen: str,
    rejected: str,
    source: str,
) -> dict[str, Any]:
    """A preference pair: the same prompt, the reply people preferred and the other."""
    return {
        "prompt": openai_record(system, prompt)["messages"],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "source": source,
    }


def window_lines(record_id: str, system: str, turns: Sequence[tuple[str, str]]) -> tuple[str, str]:
    """`openai_record` and `sharegpt_record` of one window as compact JSON lines.

    The same bytes `json.dumps(record, ensure_ascii=False, separators=(",", ":"))`
    gives, but each text is encoded once for both lines: exports spend most of their
    time turning text into JSON.
    """
    quoted_system = _quote(system)
    quoted = [(role, _quote(text)) for role, text in turns]
    openai = (
        '{"messages":[{"role":"system","content":'
        + quoted_system
        + "},"
        + ",".join('{"role":"' + role + '","content":' + text + "}" for role, text in quoted)
        + "]}\n"
    )
    sharegpt = (
        '{"id":'
        + _quote(record_id)
        + ',"conversations":[{"from":"system","value":'
        + quoted_system
        + "},"
        + ",".join(
            '{"from":"' + _SHAREGPT_FROM[role] + '","value":' + text + "}" for role, text in quoted
        )
        + "]}\n"
    )
    return openai, sharegpt
