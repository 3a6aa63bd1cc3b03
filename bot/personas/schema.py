"""The typed shape of a persona YAML file (schema version 1).

A file is parsed into a frozen `Persona` once, at load; nothing downstream reads raw
YAML. Unknown fields are errors, so a typo (`temprature:`) is caught instead of
silently ignored. Every field carries a description: `persona_json_schema()` turns
them into the JSON Schema that editors use for completion and hover help.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bot.groups.policy import SpeakPolicy
from bot.personas._sampling import ModelChoice, Sampling, SamplingExtra
from bot.personas._sampling import Section as _Section
from bot.personas._templates import check_template
from bot.personas.cards.section import CardInfo
from bot.personas.lorebook.schema import Lore, LoreEntry
from bot.personas.schedule import Schedule

__all__ = [
    "SCHEMA_ID",
    "ExampleDialogue",
    "Lore",
    "LoreEntry",
    "Memory",
    "ModelChoice",
    "Persona",
    "Safety",
    "Sampling",
    "SamplingExtra",
    "Style",
    "Turn",
    "persona_json_schema",
    "persona_json_schema_text",
]

#: Identifies the persona JSON Schema (`$id`); bump the version with `Persona.version`.
SCHEMA_ID = "urn:personabot:persona:1"

#: The pydantic error type of template problems; its context has `template_line`.
TEMPLATE_ERROR = "persona_template"

PersonaId = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description=(
            "Stable identifier: lowercase letters, digits, '-' and '_', at most 64 characters. "
            "Memories and training data are keyed by it, so do not rename a persona in use."
        ),
        examples=["samantha"],
    ),
]


class Style(_Section):
    """How the persona talks."""

    traits: tuple[str, ...] = Field(
        default=(), description="Personality traits, e.g. 'curious', 'playful'."
    )
    tone: str = Field(default="", description="The overall tone, e.g. 'warm and teasing'.")
    reply_length: Literal["short", "medium", "long"] = Field(
        default="medium", description="How long replies usually are."
    )


class Safety(_Section):
    """What the persona tells people about itself and what it will not discuss."""

    ai_disclosure: str = Field(
        default="You are talking with an AI character, not a person.",
        description="Shown to people so they know they are talking with an AI.",
    )
    decline_topics: tuple[str, ...] = Field(
        default=(), description="Topics the persona declines to discuss."
    )
    decline_message: str = Field(
        default="That's not something I can talk about. Can we talk about something else?",
        description="What the persona says when it declines.",
    )
    apology: str | None = Field(
        default=None,
        description="What the persona says when it fails to produce a reply; unset: the "
        "bot's engine.apology.",
    )
    away_message: str | None = Field(
        default=None,
        max_length=500,
        description="Sent once to a person whose messages went unanswered too long while "
        "the bot was down (they are not answered late); unset: nothing is sent.",
    )
    blocklist: tuple[Annotated[str, Field(min_length=1, max_length=200)], ...] = Field(
        default=(),
        max_length=5000,
        description="Words and phrases a reply must never contain (matched whatever the "
        "case, width, accents or spacing); a reply holding one is regenerated once, then "
        "replaced by decline_message.",
    )
    content_rating: Literal["general", "teen", "mature"] = Field(
        default="general",
        description="Who the persona is for. 'mature': only in Discord's age-restricted "
        "channels, and in Telegram after the person confirmed their age.",
    )
    limit_message: str | None = Field(
        default=None,
        max_length=500,
        description="Said when a person reaches a message or token limit; unset: the "
        "bot's safety.limits.message.",
    )
    age_gate_message: str = Field(
        default="Before we talk: this character is for adults only. Are you 18 or older? "
        "Answer yes or no.",
        max_length=500,
        description="What a mature persona asks first in Telegram (and in other places "
        "without an age-restricted flag).",
    )


class Memory(_Section):
    """How much of the past the persona sees; unset fields use the engine's settings."""

    history_messages: int | None = Field(
        default=None, ge=0, le=1000, description="Recent messages included in each prompt."
    )
    budget_tokens: int | None = Field(
        default=None, ge=0, description="Token budget for recalled memories."
    )


class Turn(_Section):
    """One turn of an example dialogue: exactly one of `user` or `assistant`."""

    model_config = ConfigDict(
        json_schema_extra=lambda schema: _one_of_turn_schema(schema),
    )

    user: str | None = Field(default=None, description="What the person says.")
    assistant: str | None = Field(default=None, description="What the persona answers.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Turn:
        if (self.user is None) == (self.assistant is None):
            raise ValueError("a turn has exactly one key: 'user' or 'assistant'")
        return self

    @property
    def role(self) -> Literal["user", "assistant"]:
        """Who speaks this turn."""
        return "user" if self.user is not None else "assistant"

    @property
    def content(self) -> str:
        """What is said."""
        return self.user if self.user is not None else (self.assistant or "")


def _one_of_turn_schema(schema: dict[str, Any]) -> None:
    # Editors should see "one string-valued key", not two optional nullable ones.
    for key in ("user", "assistant"):
        prop = schema["properties"][key]
        schema["properties"][key] = {"type": "string", "description": prop["description"]}
    schema["minProperties"] = 1
    schema["maxProperties"] = 1


def _check_dialogue(dialogue: tuple[Turn, ...]) -> tuple[Turn, ...]:
    # Chat templates of many models reject two turns of one role in a row.
    roles = [turn.role for turn in dialogue]
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(roles))]
    if len(roles) < 2 or roles != expected or roles[-1] != "assistant":
        raise PydanticCustomError(
            "persona_dialogue",
            "a dialogue starts with 'user', alternates, and ends with 'assistant' (got {roles})",
            {"roles": ", ".join(roles) or "no turns"},
        )
    return dialogue


ExampleDialogue = Annotated[
    tuple[Turn, ...],
    # The length is checked by _check_dialogue, after the turns: pydantic's own
    # min_length would also fire, confusingly, when a turn is invalid.
    Field(
        json_schema_extra={"minItems": 2},
        description="A short exchange that starts with 'user', alternates, and ends with "
        "'assistant'.",
    ),
    AfterValidator(_check_dialogue),
]


class Persona(_Section):
    """A persona file: who the persona is, how it speaks, and what it runs on.

    `system_prompt` and `greeting` are Jinja2 templates rendered in a sandbox; see
    `bot.personas.render` for their variables. `platforms` is reserved: any
    mapping is accepted for now and a later schema addition will type it.
    """

    model_config = ConfigDict(
        title="Persona",
        json_schema_extra={
            "description": "A persona for personabot. system_prompt and greeting are Jinja2 "
            "templates with the variables persona, user (display_name, id), platform, now, "
            "date, time, weekday, timezone and is_direct."
        },
    )

    version: Literal[1] = Field(
        default=1, description="Schema version of this file; this bot reads version 1."
    )
    id: PersonaId
    name: str = Field(min_length=1, max_length=100, description="Display name.")
    description: str = Field(
        default="", description="One or two sentences for people choosing a persona."
    )
    language: str = Field(
        default="en",
        pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$",
        description="Main language as a BCP 47 tag, e.g. 'en', 'zh', 'pt-BR'.",
    )
    system_prompt: str = Field(
        min_length=1,
        description="Jinja2 template of the system prompt: who the persona is and how it "
        "behaves. Put the parts that use per-turn variables (user, now, ...) last, so the "
        "model server can reuse the cached prefix across turns and people.",
    )
    greeting: str | None = Field(
        default=None,
        description="Jinja2 template of the first message to someone new; unset: no greeting.",
    )
    examples: tuple[ExampleDialogue, ...] = Field(
        default=(),
        description="Example dialogues shown to the model after the system prompt.",
    )
    style: Style = Field(
        default_factory=Style, description="How the persona talks: traits, tone, reply length."
    )
    sampling: Sampling = Field(default_factory=Sampling, description="Sampling options.")
    model: ModelChoice = Field(
        default_factory=ModelChoice, description="Model overrides for this persona."
    )
    safety: Safety = Field(default_factory=Safety, description="Disclosure and declined topics.")
    memory: Memory = Field(default_factory=Memory, description="History and memory budgets.")
    lore: Lore = Field(
        default_factory=Lore,
        description="What the persona knows: entries shown always or when their keywords "
        "come up, within a token budget of their own.",
    )
    groups: SpeakPolicy = Field(
        default_factory=SpeakPolicy,
        description="When it speaks in group channels: addressed, always or talkative, "
        "its nicknames and keywords, whether it answers bots (docs/groups.md).",
    )
    schedule: Schedule | None = Field(
        default=None,
        description="When the persona speaks first: habits at local times, check-ins after "
        "silence, follow-ups, quiet hours and caps. Unset: it only answers.",
    )
    platforms: dict[str, Any] = Field(
        default_factory=dict,
        description="Reserved: per-platform settings (any mapping for now; a later schema "
        "version types it).",
    )
    card: CardInfo | None = Field(
        default=None,
        description="The character card this persona was imported from, as the card wrote "
        "it (kept for `bot personas export`); the bot speaks from the fields above.",
    )

    @field_validator("system_prompt", "greeting")
    @classmethod
    def _valid_template(cls, value: str | None) -> str | None:
        if value is None:
            return value
        issues = check_template(value)
        if issues:
            raise PydanticCustomError(
                TEMPLATE_ERROR,
                "{detail}",
                {
                    "detail": "; ".join(f"{i.message} (template line {i.line})" for i in issues),
                    "template_line": issues[0].line,
                },
            )
        return value


def persona_json_schema() -> dict[str, Any]:
    """The JSON Schema of persona files, for editors (`bot personas schema` writes it)."""
    schema = Persona.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
    }


def persona_json_schema_text() -> str:
    """`persona_json_schema()` as the exact text of `personas/persona.schema.json`."""
    return json.dumps(persona_json_schema(), indent=2, ensure_ascii=False) + "\n"
