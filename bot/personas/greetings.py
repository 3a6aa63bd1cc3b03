"""Which first message a persona sends someone: its greeting, one of an imported
card's alternate greetings, or in a group one of the card's group-only greetings.

    DM       the persona's `greeting` and the card's `alternate_greetings`
    group    the card's `group_only_greetings` when it has any, else as in a DM

The pick is a hash of the persona, the platform, the place (in a group) and the
person: the same person gets the same greeting after a restart and on every
worker, and different people get different ones. The card's greetings are card
text (macros as the card wrote them, `card.alternate_greetings` in the persona
file); they are turned into templates here the way the importer turns `first_mes`
into `greeting` (`to_template`: only the known macros act, everything else is text)
and rendered in the same sandbox. A card greeting that fails to render gives way
to `greeting`.
"""

from __future__ import annotations

import hashlib

import structlog

from bot.messages import Scope
from bot.personas.cards.macros import MacroContext, to_template
from bot.personas.render import (
    RENDER_LIMITS,
    PersonaTemplateError,
    PromptContext,
    render_greeting_async,
    render_template_async,
)
from bot.personas.schema import Persona

__all__ = ["greeting_choices", "pick_greeting", "render_first_message_async"]

log = structlog.get_logger("bot.personas")


def _macro_context(persona: Persona) -> MacroContext:
    info = persona.card
    fields = {}
    if info is not None:
        fields = {
            "description": info.description,
            "personality": info.personality,
            "scenario": info.scenario,
            "mes_example": info.mes_example,
            "system_prompt": info.system_prompt,
            "post_history_instructions": info.post_history_instructions,
            "persona": "",
        }
    return MacroContext(persona.name, "", fields)


def greeting_choices(persona: Persona, *, group: bool) -> list[tuple[str, str]]:
    """The greetings to choose from, as (field, template source): in a group the
    card's group-only greetings when there are any; else `greeting` (when set) and
    the card's alternate greetings."""
    info = persona.card
    ctx = _macro_context(persona)
    if group and info is not None:
        only = [g for g in info.group_only_greetings if g.strip()]
        if only:
            return [
                (f"card.group_only_greetings.{i}", to_template(g.strip(), ctx))
                for i, g in enumerate(only)
            ]
    choices: list[tuple[str, str]] = []
    if persona.greeting is not None:
        choices.append(("greeting", persona.greeting))
    if info is not None:
        choices.extend(
            (f"card.alternate_greetings.{i}", to_template(g.strip(), ctx))
            for i, g in enumerate(info.alternate_greetings)
            if g.strip()
        )
    return choices


def pick_greeting(persona: Persona, scope: Scope) -> tuple[str, str] | None:
    """The (field, template source) `scope`'s person gets, or None: no greeting.
    Deterministic: a hash of the persona, platform, place (groups) and person."""
    group = not scope.is_direct
    choices = greeting_choices(persona, group=group)
    if not choices:
        return None
    place = f"{scope.space or ''}/{scope.channel}" if group else ""
    seed = "\x00".join((persona.id, scope.platform, place, scope.user))
    digest = hashlib.sha256(seed.encode("utf-8", "surrogatepass")).digest()
    return choices[int.from_bytes(digest[:8], "big") % len(choices)]


async def render_first_message_async(
    persona: Persona, scope: Scope, ctx: PromptContext
) -> str | None:
    """The first message for `scope`'s person, rendered (None: the persona has no
    greeting). A card greeting that fails to render falls back to `greeting`."""
    picked = pick_greeting(persona, scope)
    if picked is None:
        return None
    field, source = picked
    if field == "greeting":
        return await render_greeting_async(persona, ctx)
    try:
        return await render_template_async(persona, field, source, ctx, limits=RENDER_LIMITS)
    except PersonaTemplateError as exc:
        log.warning("greeting.unrenderable", persona=persona.id, field=field, error=exc.reason)
        return await render_greeting_async(persona, ctx)
