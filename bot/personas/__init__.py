"""Personas: the YAML schema, loading with file:line problems, rendering, hot reload.

    schema     `Persona` and its sections; `persona_json_schema()` for editors
    loader     `load_persona`, `check_paths`: every problem as file:line:column
    render     `render_system_prompt`, `render_greeting` in a bounded Jinja2 sandbox
               (`_async`: in a thread), `trial_render` with sample values
    lore       `LoreBook`: the lore entries that apply to a turn, within their budget
    registry   `PersonaRegistry`: serves personas by id, reloads them on change

This package knows nothing about platforms.
"""

from __future__ import annotations

from bot.personas.loader import (
    LoadedPersona,
    check_paths,
    find_persona_files,
    load_persona,
    parse_persona,
)
from bot.personas.lorebook import LoreBlock, LoreBook
from bot.personas.problems import PersonaFileError, Problem
from bot.personas.registry import OnLoaded, PersonaRegistry
from bot.personas.render import (
    RENDER_LIMITS,
    TEMPLATE_VARIABLES,
    PersonaTemplateError,
    PromptContext,
    RenderLimits,
    TemplateLimitError,
    TemplateSecurityError,
    TrialFailure,
    render_greeting,
    render_greeting_async,
    render_system_prompt,
    render_system_prompt_async,
    template_variables,
    trial_render,
)
from bot.personas.schema import (
    SCHEMA_ID,
    Lore,
    LoreEntry,
    Memory,
    ModelChoice,
    Persona,
    Safety,
    Sampling,
    Style,
    Turn,
    persona_json_schema,
    persona_json_schema_text,
)

__all__ = [
    "RENDER_LIMITS",
    "SCHEMA_ID",
    "TEMPLATE_VARIABLES",
    "LoadedPersona",
    "Lore",
    "LoreBlock",
    "LoreBook",
    "LoreEntry",
    "Memory",
    "ModelChoice",
    "OnLoaded",
    "Persona",
    "PersonaFileError",
    "PersonaRegistry",
    "PersonaTemplateError",
    "Problem",
    "PromptContext",
    "RenderLimits",
    "Safety",
    "Sampling",
    "Style",
    "TemplateLimitError",
    "TemplateSecurityError",
    "TrialFailure",
    "Turn",
    "check_paths",
    "find_persona_files",
    "load_persona",
    "parse_persona",
    "persona_json_schema",
    "persona_json_schema_text",
    "render_greeting",
    "render_greeting_async",
    "render_system_prompt",
    "render_system_prompt_async",
    "template_variables",
    "trial_render",
]
