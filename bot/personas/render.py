"""Rendering a persona's templates for one turn.

`system_prompt` and `greeting` are Jinja2 templates run in an immutable sandbox
with undefined names as errors. The variables are:

    persona      id, name, description, language,
                 style (traits, tone, reply_length),
                 safety (ai_disclosure, decline_topics, decline_message)
    user         display_name, id
    platform     "discord", "telegram", "console", ...
    now          the current time as an aware datetime in the user's zone
    date         now as ISO date, "2024-05-01"
    time         now as "HH:MM" (24-hour)
    weekday      English weekday name, "Wednesday"
    timezone     the IANA zone name, "Europe/Berlin"
    is_direct    true in a one-to-one conversation

Values are data, never template code: a display name like `{{ 7*7 }}` renders as
itself. A template that reaches for Python internals raises `TemplateSecurityError`
and executes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jinja2 import TemplateError
from jinja2.exceptions import SecurityError

from bot.errors import PersonaError
from bot.personas._templates import TEMPLATE_VARIABLES, compile_template
from bot.personas.schema import Persona

__all__ = [
    "TEMPLATE_VARIABLES",
    "PersonaTemplateError",
    "PromptContext",
    "TemplateSecurityError",
    "render_greeting",
    "render_system_prompt",
    "template_variables",
]

# Fixed English names: strftime("%A") would follow the process locale.
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class PersonaTemplateError(PersonaError):
    """A persona template failed to render (an unknown attribute, a type error, ...)."""

    def __init__(self, persona_id: str, field: str, reason: str) -> None:
        self.persona_id = persona_id
        self.field = field
        super().__init__(f"persona {persona_id!r}: {field}: {reason}")


class TemplateSecurityError(PersonaTemplateError):
    """A persona template tried something the sandbox forbids; nothing of it ran."""


@dataclass(frozen=True, slots=True)
class PromptContext:
    """Who the persona is talking to, where, and when: the per-turn template input.

    `now` must be timezone-aware and already in the user's zone (`timezone` names
    that zone), so templates can say "good morning" at the user's morning.
    """

    user_display_name: str
    user_id: str
    platform: str
    now: datetime
    timezone: str
    is_direct: bool

    def __post_init__(self) -> None:
        if self.now.tzinfo is None or self.now.utcoffset() is None:
            raise ValueError("PromptContext.now must be timezone-aware")


def template_variables(persona: Persona, ctx: PromptContext) -> dict[str, Any]:
    """The variables a persona template sees for this turn (fresh plain data per call)."""
    now = ctx.now
    return {
        "persona": {
            "id": persona.id,
            "name": persona.name,
            "description": persona.description,
            "language": persona.language,
            "style": {
                "traits": list(persona.style.traits),
                "tone": persona.style.tone,
                "reply_length": persona.style.reply_length,
            },
            "safety": {
                "ai_disclosure": persona.safety.ai_disclosure,
                "decline_topics": list(persona.safety.decline_topics),
                "decline_message": persona.safety.decline_message,
            },
        },
        "user": {"display_name": ctx.user_display_name, "id": ctx.user_id},
        "platform": ctx.platform,
        "now": now,
        "date": now.date().isoformat(),
        "time": f"{now.hour:02d}:{now.minute:02d}",
        "weekday": _WEEKDAYS[now.weekday()],
        "timezone": ctx.timezone,
        "is_direct": ctx.is_direct,
    }


def render_system_prompt(persona: Persona, ctx: PromptContext) -> str:
    """The persona's system prompt for this turn, stripped of surrounding blank space.

    Raises `TemplateSecurityError` for sandbox violations and `PersonaTemplateError`
    for any other rendering failure.
    """
    return _render(persona, "system_prompt", persona.system_prompt, ctx)


def render_greeting(persona: Persona, ctx: PromptContext) -> str | None:
    """The persona's greeting for someone new, or None when it has none."""
    if persona.greeting is None:
        return None
    return _render(persona, "greeting", persona.greeting, ctx)


def _render(persona: Persona, field: str, source: str, ctx: PromptContext) -> str:
    try:
        template = compile_template(source)
        return template.render(template_variables(persona, ctx)).strip()
    except SecurityError as exc:
        raise TemplateSecurityError(persona.id, field, str(exc)) from None
    except TemplateError as exc:
        raise PersonaTemplateError(persona.id, field, exc.message or type(exc).__name__) from None
    except (ArithmeticError, TypeError, ValueError, LookupError, RecursionError) as exc:
        # Operations inside the template (`{{ 1/0 }}`, `{{ 'a' + 1 }}`) raise plain Python
        # errors; they are the template's fault, so they become the persona's error.
        raise PersonaTemplateError(persona.id, field, f"{type(exc).__name__}: {exc}") from None
