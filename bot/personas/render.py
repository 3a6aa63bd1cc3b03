"""Rendering a persona's templates for one turn, within bounds.

`system_prompt` and `greeting` are Jinja2 templates run in a bounded immutable
sandbox (`bot.personas._sandbox`) with undefined names as errors. The variables are:

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
and executes nothing; one that goes past a bound of `RenderLimits` (time, steps,
loop turns, size) raises `TemplateLimitError`. Every render is bounded: the async
variants run it in a thread, so even the slowest allowed render never holds the
event loop. `trial_render` renders a persona's templates with sample variables
under the same bounds; the loader refuses a file whose templates fail it.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot.aio import wait_for
from bot.errors import PersonaError
from bot.personas._budget import RenderLimits
from bot.personas._templates import (
    TEMPLATE_VARIABLES,
    RenderFailure,
    TemplateRefused,
    compile_template,
)
from bot.personas.schema import Persona

__all__ = [
    "RENDER_LIMITS",
    "TEMPLATE_VARIABLES",
    "TRIAL_CONTEXTS",
    "PersonaTemplateError",
    "PromptContext",
    "RenderLimits",
    "TemplateLimitError",
    "TemplateSecurityError",
    "TrialFailure",
    "render_greeting",
    "render_greeting_async",
    "render_system_prompt",
    "render_system_prompt_async",
    "render_template_async",
    "template_variables",
    "trial_render",
]

#: The bounds every render runs under, at load (the trial) and on every turn.
RENDER_LIMITS = RenderLimits()

# A render that has not returned this long after its deadline is given up on: the
# cooperative deadline stops a running render, so this only covers one that waited
# for a thread behind others, or a bug that escaped the budget.
_GRACE_S = 5.0

# Renders run on threads of their own: a burst of slow templates (each stopped at
# its deadline) then queues behind itself, not in front of every other `to_thread`
# user of the process (storage, memory, model loading). Created on first use.
_RENDER_THREADS = 4
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()

# Fixed English names: strftime("%A") would follow the process locale.
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class PersonaTemplateError(PersonaError):
    """A persona template failed to render (an unknown attribute, a type error, ...).

    `line` is the template's line where it failed, when known.
    """

    def __init__(self, persona_id: str, field: str, reason: str, line: int | None = None) -> None:
        self.persona_id = persona_id
        self.field = field
        self.reason = reason
        self.line = line
        where = f" (template line {line})" if line is not None else ""
        super().__init__(f"persona {persona_id!r}: {field}: {reason}{where}")


class TemplateSecurityError(PersonaTemplateError):
    """A persona template tried something the sandbox forbids; nothing of it ran."""


class TemplateLimitError(TemplateSecurityError):
    """A persona template went past a bound of its render: time, steps, loops, size."""


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


#: The sample turns a persona's templates are trial-rendered with at load: a morning
#: DM and a late-evening group message, a short name and a long one.
TRIAL_CONTEXTS = (
    PromptContext(
        user_display_name="Ann",
        user_id="trial-user-1",
        platform="telegram",
        now=datetime(2024, 5, 1, 7, 30, tzinfo=ZoneInfo("Europe/Berlin")),
        timezone="Europe/Berlin",
        is_direct=True,
    ),
    PromptContext(
        user_display_name="Maximiliana Fernández-Oyelaran de la Cruz",
        user_id="123456789012345678",
        platform="discord",
        now=datetime(2024, 12, 29, 23, 59, tzinfo=ZoneInfo("Asia/Shanghai")),
        timezone="Asia/Shanghai",
        is_direct=False,
    ),
)


@dataclass(frozen=True, slots=True)
class TrialFailure:
    """A template of a persona that failed its trial render."""

    field: str
    line: int | None
    message: str


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


def render_system_prompt(
    persona: Persona, ctx: PromptContext, *, limits: RenderLimits = RENDER_LIMITS
) -> str:
    """The persona's system prompt for this turn, stripped of surrounding blank space.

    Raises `TemplateLimitError` past a bound, `TemplateSecurityError` for other
    sandbox refusals and `PersonaTemplateError` for any other rendering failure.
    Blocking for up to `limits.max_seconds` of CPU (`limits.max_wall_seconds` at
    most): async code uses the `_async` variant.
    """
    return _render(persona, "system_prompt", persona.system_prompt, ctx, limits)


def render_greeting(
    persona: Persona, ctx: PromptContext, *, limits: RenderLimits = RENDER_LIMITS
) -> str | None:
    """The persona's greeting for someone new, or None when it has none."""
    if persona.greeting is None:
        return None
    return _render(persona, "greeting", persona.greeting, ctx, limits)


async def render_system_prompt_async(
    persona: Persona, ctx: PromptContext, *, limits: RenderLimits = RENDER_LIMITS
) -> str:
    """`render_system_prompt` on a render thread, so the event loop keeps running."""
    return await _off_loop(persona, "system_prompt", persona.system_prompt, ctx, limits)


async def render_greeting_async(
    persona: Persona, ctx: PromptContext, *, limits: RenderLimits = RENDER_LIMITS
) -> str | None:
    """`render_greeting` on a render thread, so the event loop keeps running."""
    if persona.greeting is None:
        return None
    return await _off_loop(persona, "greeting", persona.greeting, ctx, limits)


async def render_template_async(
    persona: Persona,
    field: str,
    source: str,
    ctx: PromptContext,
    *,
    limits: RenderLimits = RENDER_LIMITS,
) -> str:
    """Another template of the persona (`field` names it in errors: a card's
    alternate greeting), checked and rendered like `greeting`, on a render thread."""
    return await _off_loop(persona, field, source, ctx, limits)


def trial_render(persona: Persona, *, limits: RenderLimits = RENDER_LIMITS) -> list[TrialFailure]:
    """Render every template of `persona` with each of `TRIAL_CONTEXTS` under `limits`.

    Returns the first failure of each template (none: every template rendered).
    Blocking: this is what the loader runs before a version may be served.
    """
    failures: list[TrialFailure] = []
    for field, source in (("system_prompt", persona.system_prompt), ("greeting", persona.greeting)):
        if source is None:
            continue
        for ctx in TRIAL_CONTEXTS:
            try:
                _render(persona, field, source, ctx, limits)
            except PersonaTemplateError as exc:
                failures.append(TrialFailure(field, exc.line, exc.reason))
                break
    return failures


async def _off_loop(
    persona: Persona, field: str, source: str, ctx: PromptContext, limits: RenderLimits
) -> str:
    loop = asyncio.get_running_loop()
    job = loop.run_in_executor(_render_threads(), _render, persona, field, source, ctx, limits)
    try:
        return await wait_for(job, timeout=limits.max_wall_seconds + _GRACE_S)
    except TimeoutError:
        raise TemplateLimitError(
            persona.id,
            field,
            f"the template did not render within {limits.max_wall_seconds + _GRACE_S:g} s",
        ) from None


def _render_threads() -> ThreadPoolExecutor:
    global _executor  # one pool per process, made on first use
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(_RENDER_THREADS, thread_name_prefix="persona-render")
        return _executor


def _render(
    persona: Persona, field: str, source: str, ctx: PromptContext, limits: RenderLimits
) -> str:
    try:
        template = compile_template(source)
        return template.render(template_variables(persona, ctx), limits).strip()
    except TemplateRefused as exc:
        refused = TemplateLimitError if exc.limit else PersonaTemplateError
        raise refused(persona.id, field, exc.issue.message, exc.issue.line) from None
    except RenderFailure as exc:
        kind = (
            TemplateLimitError
            if exc.limit
            else TemplateSecurityError
            if exc.security
            else PersonaTemplateError
        )
        raise kind(persona.id, field, exc.message, exc.line) from None
