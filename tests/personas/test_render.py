"""Rendering persona templates: the variables, the sandbox, and the cache."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.errors import PersonaError
from bot.personas import (
    TEMPLATE_VARIABLES,
    Persona,
    PersonaTemplateError,
    PromptContext,
    TemplateSecurityError,
    render_greeting,
    render_system_prompt,
    template_variables,
)
from bot.personas._templates import compile_template

BASE: dict[str, Any] = {
    "id": "alice",
    "name": "Alice",
    "description": "A test persona.",
    "system_prompt": "You are {{ persona.name }}.",
    "style": {"traits": ["kind", "dry"], "tone": "calm"},
}


def persona(system_prompt: str = BASE["system_prompt"], **fields: Any) -> Persona:
    return Persona.model_validate({**BASE, "system_prompt": system_prompt, **fields})


def unchecked(template: str) -> Persona:
    """A persona whose template skipped the load-time checks (model_copy validates nothing).

    The sandbox must hold on its own, whatever got past the loader.
    """
    return persona().model_copy(update={"system_prompt": template})


def test_every_variable_renders(ctx: PromptContext) -> None:
    template = (
        "{{ persona.id }}|{{ persona.name }}|{{ persona.description }}|{{ persona.language }}|"
        "{{ persona.style.traits | join(',') }}|{{ persona.style.tone }}|"
        "{{ persona.style.reply_length }}|{{ persona.safety.decline_topics | length }}|"
        "{{ user.display_name }}|{{ user.id }}|{{ platform }}|{{ now.isoformat() }}|{{ date }}|"
        "{{ time }}|{{ weekday }}|{{ timezone }}|{{ is_direct }}"
    )
    assert render_system_prompt(persona(template), ctx) == (
        "alice|Alice|A test persona.|en|kind,dry|calm|medium|0|Ann|u-1|discord|"
        "2024-05-01T07:30:00+08:00|2024-05-01|07:30|Wednesday|Asia/Shanghai|True"
    )
    assert set(template_variables(persona(), ctx)) == TEMPLATE_VARIABLES


def test_time_variables_follow_the_users_zone() -> None:
    now = datetime(2024, 5, 1, 23, 5, tzinfo=ZoneInfo("UTC")).astimezone(ZoneInfo("Asia/Tokyo"))
    ctx = PromptContext("Ann", "u", "telegram", now, "Asia/Tokyo", False)
    assert render_system_prompt(persona("{{ weekday }} {{ date }} {{ time }}"), ctx) == (
        "Thursday 2024-05-02 08:05"
    )


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        PromptContext("Ann", "u", "console", datetime(2024, 5, 1), "UTC", True)


def test_greeting_renders_or_is_none(ctx: PromptContext) -> None:
    assert render_greeting(persona(greeting="Hi {{ user.display_name }}!"), ctx) == "Hi Ann!"
    assert render_greeting(persona(), ctx) is None


def test_output_is_stripped(ctx: PromptContext) -> None:
    assert render_system_prompt(persona("\n\n  Hello.\n\n"), ctx) == "Hello."


ESCAPES = [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__.os.system('touch {marker}') }}",
    "{{ range.__globals__['os'].system('touch {marker}') }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ ()|attr('__class__') }}",
    "{{ user['__class__'] }}",
    "{{ now.__class__.__subclasses__() }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ '{0.__class__}'.format(user) }}",
    "{{ user.update({'id': 'root'}) }}",
    "{{ persona.style.traits.append('evil') }}",
    "{{ 2 ** 10000000000 }}",
    "{{ (10 ** 64) ** 64 ** 64 ** 64 }}",
    "{% set x = 2 ** 60000 %}{{ x * x }}",
    "{{ 'x' * 1000000000 }}",
    "{{ '%0999999999d' % 1 }}",
    "{{ '%*d' % (999999999, 1) }}",
]


@pytest.mark.parametrize("template", ESCAPES)
def test_sandbox_escapes_fail_without_executing(
    template: str, ctx: PromptContext, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    evil = unchecked(template.replace("{marker}", str(marker)))
    with pytest.raises(TemplateSecurityError) as info:
        render_system_prompt(evil, ctx)
    assert isinstance(info.value, PersonaError)
    assert info.value.persona_id == "alice" and info.value.field == "system_prompt"
    assert not marker.exists()


def test_sandbox_escape_in_greeting(ctx: PromptContext) -> None:
    evil = persona().model_copy(update={"greeting": "{{ cycler.__init__.__globals__ }}"})
    with pytest.raises(TemplateSecurityError, match="greeting"):
        render_greeting(evil, ctx)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ user.nickname }}", "has no attribute 'nickname'"),
        ("{{ nobody }}", "'nobody' is undefined"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{{ 'a' + 1 }}", "TypeError"),
        ("{% include 'x.txt' %}", "no loader"),
        # lipsum(n) writes n paragraphs: not available at all.
        ("{{ lipsum(10**9) }}", "'lipsum' is undefined"),
    ],
)
def test_runtime_failures_are_persona_errors(
    template: str, expected: str, ctx: PromptContext
) -> None:
    with pytest.raises(PersonaTemplateError, match=expected) as info:
        render_system_prompt(unchecked(template), ctx)
    assert not isinstance(info.value, TemplateSecurityError)


@given(st.text(max_size=80))
def test_display_names_are_data_not_template_code(name: str) -> None:
    ctx = PromptContext(name, "u", "discord", datetime.now(ZoneInfo("UTC")), "UTC", True)
    greeting = persona(greeting="<{{ user.display_name }}>")
    assert render_greeting(greeting, ctx) == f"<{name}>"


def test_template_code_in_a_display_name_is_not_run(ctx: PromptContext) -> None:
    for name in ["{{ 7*7 }}", "{% raw %}", "{{ ''.__class__ }}", "}}{{"]:
        hostile = PromptContext(name, "u", "discord", ctx.now, ctx.timezone, True)
        assert render_system_prompt(persona("{{ user.display_name }}"), hostile) == name


def test_templates_compile_once_and_render_fast(ctx: PromptContext) -> None:
    fresh = persona("Unique {{ user.display_name }} {{ time }} " + "text " * 200)
    render_system_prompt(fresh, ctx)
    before = compile_template.cache_info()
    started = time.perf_counter()
    for _ in range(200):
        render_system_prompt(fresh, ctx)
    per_render = (time.perf_counter() - started) / 200
    after = compile_template.cache_info()
    assert after.misses == before.misses
    assert after.hits == before.hits + 200
    # Typically ~20µs; the bound only catches recompiling (milliseconds) on every turn.
    assert per_render < 0.0005
