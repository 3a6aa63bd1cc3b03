"""The safety sections: reply moderation, per-person limits, and the crisis, disclosure
and alert settings that hold them.

Re-exported by `bot.config`; callers keep importing them from there.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from bot.config_core import _Section

__all__ = ["LimitSettings", "ModerationSettings", "SafetySettings"]


class ModerationSettings(_Section):
    """Checks on every reply before it is stored or sent (bot/safety/moderation.py)."""

    declined_topics: bool = True
    #: Block replies holding someone else's personal data (the export scrubber's finds).
    personal_data: bool = True
    #: Terms no reply may hold, by place: "*", "discord", "discord:GUILD",
    #: "telegram:CHAT", "discord:CHANNEL" (all that apply are checked).
    blocklists: dict[str, list[str]] = Field(default_factory=dict)
    #: A model check: "openai" posts to {base_url}/moderations, "llama_guard" asks a
    #: safety model through the chat API.
    model: Literal["off", "openai", "llama_guard"] = "off"
    base_url: str | None = Field(default=None, description="Unset: llm.base_url.")
    model_name: str | None = Field(default=None, description="Unset: the server's default.")
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    #: When the model check fails (timeout, error, garbage): "open" lets the reply
    #: through (logged, counted), "closed" blocks it.
    fail: Literal["open", "closed"] = "open"
    #: Only these categories block ("harassment", or Llama Guard's "S10"); empty: any.
    categories: list[str] = Field(default_factory=list)

    @field_validator("blocklists")
    @classmethod
    def _bounded_lists(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        # The bounds of bot/safety/moderation.py, said here so a bad list is a config
        # error at start-up (exit 2), not a failure at the first reply.
        for place, terms in value.items():
            if len(terms) > 20_000:
                raise ValueError(f"{place!r}: at most 20000 terms, got {len(terms)}")
            long = next((t for t in terms if len(t) > 200), None)
            if long is not None:
                raise ValueError(f"{place!r}: a term is at most 200 characters: {long[:40]!r}…")
        return value


class LimitSettings(_Section):
    """Messages per minute and tokens per day, per person (bot/safety/limits.py)."""

    #: Answered messages per person and persona in any 60 s; 0: no limit (20 is a
    #: good start for a public bot).
    messages_per_minute: int = Field(default=0, ge=0, le=100_000)
    #: Answered messages per channel (everyone in it) in any 60 s; 0: no limit.
    channel_messages_per_minute: int = Field(default=0, ge=0, le=100_000)
    #: Tokens the model read and wrote for one person and persona per UTC day; 0: none.
    tokens_per_day: int = Field(default=0, ge=0)
    #: Said (once per minute or day) when a limit is reached; a persona's
    #: safety.limit_message wins.
    message: str = Field(
        default="I need a little break. Let's continue in a bit!", min_length=1, max_length=500
    )


class SafetySettings(_Section):
    """Crisis replies, disclosure and moderation (bot/safety; docs/safety.md)."""

    #: Help shown in the crisis reply, by language ("de") or region ("de-AT"), and
    #: "default"; unset keys use the built-in texts (bot/safety/resources.py).
    crisis_resources: dict[str, str] = Field(default_factory=dict)
    #: The crisis reply itself per language, with `{resources}` where the help goes.
    crisis_replies: dict[str, str] = Field(default_factory=dict)
    region: str | None = Field(
        default=None, max_length=16, description="Region for resources, e.g. 'GB', 'AT'."
    )
    default_language: str = Field(default="en", min_length=2, max_length=16)
    proactive_pause_hours: float = Field(
        default=72.0, ge=0, le=24 * 365, description="No proactive messages after a crisis."
    )
    #: The first reply to a person starts with the persona's disclosure text.
    disclose_first_contact: bool = True
    #: Platforms without the first-contact notice: the console is the operator's own
    #: terminal (disclosure questions, crisis replies and output checks still apply).
    first_contact_exempt: list[str] = Field(default_factory=lambda: ["console"])
    #: Where crisis alerts go: a channel (or a moderator's DM chat) on one platform.
    alert_platform: str | None = Field(default=None, max_length=32)
    alert_channel: str | None = Field(default=None, max_length=256)
    alert_user: str | None = Field(default=None, max_length=256)
    alert_space: str | None = Field(default=None, max_length=256)
    #: The optional second layer: "structured" asks a model with a JSON schema,
    #: "llama_guard" a safety model such as Llama Guard on vLLM.
    classifier: Literal["off", "structured", "llama_guard"] = "off"
    #: Ask the classifier about messages the patterns found worrying, or all of them.
    classify: Literal["uncertain", "always"] = "uncertain"
    classifier_base_url: str | None = Field(
        default=None, description="OpenAI-compatible server; unset: llm.base_url."
    )
    classifier_model: str | None = Field(default=None, description="Unset: llm.model.")
    classifier_timeout_s: float = Field(default=5.0, gt=0, le=120)
    max_scan_chars: int = Field(default=20_000, ge=1000, le=1_000_000)
    moderation: ModerationSettings = Field(default_factory=ModerationSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
