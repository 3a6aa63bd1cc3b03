"""Fact extraction: our prompt, the JSON schema the model answers in, and its parser.

The model sees the person's recent messages, each with its ledger id, and the facts
already known (with ids). It answers `{"facts": [{"text", "source_ids",
"confidence", "importance", "replaces"}]}`. The parser trusts nothing: invalid or
truncated JSON yields no facts (and a reason), source ids that were not shown are
dropped (a fact left without a source is dropped), `replaces` may only name facts
that were shown, and duplicates of known facts are reported as such.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.llm.base import ChatMessage, ChatRequest, Sampling
from bot.text import strip_controls

__all__ = [
    "EXTRACTION_SCHEMA",
    "ExtractedFact",
    "Extraction",
    "KnownFact",
    "SourceMessage",
    "build_request",
    "normalise",
    "parse_extraction",
]

SYSTEM_PROMPT = """You keep a careful notebook about one person for a chat companion.
Read the messages and write down durable facts about the person: names of people and
pets, where they live and work, plans with dates, preferences, important events.
Rules:
- One short third-person sentence per fact, e.g. "Has a dog named Rex."
- Only facts the person stated about themselves; ignore the companion's lines.
- source_ids: the [ids] of the messages the fact comes from.
- If a fact updates or contradicts a known fact, put that fact's id in "replaces".
- Do not repeat known facts unchanged. If nothing new, answer {"facts": []}.
Answer with JSON only."""

#: The JSON schema the answer must follow (vLLM guided decoding enforces it).
EXTRACTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "facts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "text": {"type": "string"},
                    "source_ids": {"type": "array", "items": {"type": "integer"}},
                    "confidence": {"type": "number"},
                    "importance": {"type": "number"},
                    "replaces": {"type": "array", "items": {"type": "integer"}},
                },
                "required": ["text", "source_ids"],
            },
        }
    },
    "required": ["facts"],
}


@dataclass(frozen=True, slots=True)
class SourceMessage:
    """A message shown to the extractor."""

    id: int
    speaker: str
    text: str
    from_person: bool


@dataclass(frozen=True, slots=True)
class KnownFact:
    """A fact already stored, shown so the model can replace it."""

    id: int
    text: str


@dataclass(frozen=True, slots=True)
class ExtractedFact:
    """A fact the parser accepted."""

    text: str
    source_ids: tuple[int, ...]
    confidence: float
    importance: float
    replaces: tuple[int, ...] = ()
    #: The id of a known fact with the same text (nothing new to store).
    duplicate_of: int | None = None


@dataclass(frozen=True, slots=True)
class Extraction:
    """What the parser made of an answer; `problems` says what it dropped and why."""

    facts: tuple[ExtractedFact, ...]
    problems: tuple[str, ...] = field(default=())


class _RawFact(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str = Field(min_length=1, max_length=500)
    source_ids: list[int] = Field(default_factory=list)
    confidence: float = 0.8
    importance: float = 0.5
    replaces: list[int] | None = None


class _RawAnswer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    facts: list[Any]


def normalise(text: str) -> str:
    """A fact's text for duplicate detection: lower-case words only."""
    return " ".join(re.findall(r"\w+", text.lower()))


def build_request(
    messages: Sequence[SourceMessage],
    known: Sequence[KnownFact],
    *,
    model: str | None = None,
    max_tokens: int = 512,
) -> ChatRequest:
    """The chat request for one extraction (temperature 0, JSON schema enforced)."""
    lines = ["Known facts:"]
    lines += [f"- [{f.id}] {f.text}" for f in known] or ["(none)"]
    lines.append("")
    lines.append("Messages:")
    for m in messages:
        who = m.speaker if m.from_person else f"{m.speaker} (companion)"
        lines.append(f"[{m.id}] {who}: {m.text}")
    return ChatRequest(
        messages=(
            ChatMessage("system", SYSTEM_PROMPT),
            ChatMessage("user", "\n".join(lines)),
        ),
        sampling=Sampling(
            temperature=0.0,
            top_p=1.0,
            max_tokens=max_tokens,
            extra={
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "facts", "schema": EXTRACTION_SCHEMA},
                }
            },
        ),
        model=model,
    )


def _json_text(text: str) -> str:
    # Models like to wrap JSON in a code fence even when told not to.
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    return (fenced.group(1) if fenced else text).strip()


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value)) if value == value else 0.5  # NaN → neutral


def parse_extraction(
    text: str, shown: Sequence[SourceMessage], known: Sequence[KnownFact]
) -> Extraction:
    """The facts an answer holds, checked against what the model was shown."""
    problems: list[str] = []
    try:
        raw = _RawAnswer.model_validate(json.loads(_json_text(text)))
    except json.JSONDecodeError as exc:
        return Extraction((), (f"not valid JSON ({exc.msg} at {exc.pos})",))
    except ValidationError as exc:
        return Extraction((), (f"not the expected shape: {exc.errors()[0]['msg']}",))
    person_ids = {m.id for m in shown if m.from_person}
    known_ids = {f.id: normalise(f.text) for f in known}
    by_text = {v: k for k, v in known_ids.items()}
    accepted: dict[str, ExtractedFact] = {}
    for i, item in enumerate(raw.facts):
        try:
            fact = _RawFact.model_validate(item)
        except ValidationError as exc:
            problems.append(f"fact {i}: {exc.errors()[0]['msg']}")
            continue
        sources = tuple(dict.fromkeys(s for s in fact.source_ids if s in person_ids))
        unknown = [s for s in fact.source_ids if s not in person_ids]
        if unknown:
            problems.append(f"fact {i}: source ids {unknown} were not messages of the person")
        if not sources:
            problems.append(f"fact {i}: no valid source id; dropped")
            continue
        replaces = tuple(r for r in dict.fromkeys(fact.replaces or ()) if r in known_ids)
        if fact.replaces and len(replaces) != len(set(fact.replaces)):
            problems.append(f"fact {i}: replaces unknown fact ids; ignored those")
        key = normalise(fact.text)
        if not key:
            problems.append(f"fact {i}: empty text")
            continue
        duplicate = by_text.get(key)
        if key in accepted:
            continue
        accepted[key] = ExtractedFact(
            text=strip_controls(fact.text).strip(),  # model output: no controls
            source_ids=sources,
            confidence=_clamp(fact.confidence),
            importance=_clamp(fact.importance),
            replaces=tuple(r for r in replaces if r != duplicate),
            duplicate_of=duplicate,
        )
    return Extraction(tuple(accepted.values()), tuple(problems))
