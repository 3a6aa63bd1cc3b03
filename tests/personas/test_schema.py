"""The Persona model: defaults, template checks, example dialogues, JSON Schema."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest
from pydantic import ValidationError

from bot.personas import SCHEMA_ID, Persona, Turn, persona_json_schema, persona_json_schema_text

from .conftest import SHIPPED_DIR

MINIMAL: dict[str, Any] = {"id": "alice", "name": "Alice", "system_prompt": "You are Alice."}


def errors(**fields: Any) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(ValidationError) as info:
        Persona.model_validate({**MINIMAL, **fields})
    return [(tuple(e["loc"]), e["msg"]) for e in info.value.errors()]


def test_minimal_persona_has_documented_defaults() -> None:
    persona = Persona.model_validate(MINIMAL)
    assert persona.version == 1
    assert persona.language == "en"
    assert persona.greeting is None
    assert persona.examples == ()
    assert persona.style.reply_length == "medium"
    assert persona.model.backend is None
    assert persona.memory.history_messages is None
    assert persona.schedule is None and persona.platforms == {}
    assert persona.safety.ai_disclosure


def test_persona_is_frozen() -> None:
    persona = Persona.model_validate(MINIMAL)
    with pytest.raises(ValidationError):
        persona.name = "Bob"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"sampling": {"temperature": 2.5}}, ("sampling", "temperature")),
        ({"sampling": {"top_p": 0}}, ("sampling", "top_p")),
        ({"sampling": {"max_tokens": 8193}}, ("sampling", "max_tokens")),
        ({"model": {"backend": "llama"}}, ("model", "backend")),
        ({"style": {"reply_length": "epic"}}, ("style", "reply_length")),
        ({"language": "english!"}, ("language",)),
        ({"id": "-dash-first"}, ("id",)),
        ({"id": "x" * 65}, ("id",)),
        ({"version": 2}, ("version",)),
        ({"safety": {"ai_disclosure": None}}, ("safety", "ai_disclosure")),
    ],
)
def test_out_of_range_values_are_refused(fields: dict[str, Any], loc: tuple[str, ...]) -> None:
    assert [e[0] for e in errors(**fields)] == [loc]


def test_platforms_section_accepts_any_mapping_and_schedule_is_typed() -> None:
    schedule = {"habits": [{"name": "walk", "cron": "30 7 * * *", "prompt": "walk!"}]}
    persona = Persona.model_validate({**MINIMAL, "schedule": schedule, "platforms": {"x": 1}})
    assert persona.schedule is not None and persona.schedule.habits[0].name == "walk"
    assert [e[0] for e in errors(schedule=["not", "a", "mapping"])] == [("schedule",)]
    assert [e[0] for e in errors(schedule={"anything": 1})] == [("schedule", "anything")]


def test_sampling_extra_passes_through() -> None:
    persona = Persona.model_validate({**MINIMAL, "sampling": {"extra": {"min_p": 0.05}}})
    assert persona.sampling.extra == {"min_p": 0.05}


def test_turns_have_exactly_one_speaker() -> None:
    assert Turn(user="hi").role == "user"
    assert Turn(assistant="hello").content == "hello"
    with pytest.raises(ValidationError, match="exactly one key"):
        Turn(user="a", assistant="b")
    with pytest.raises(ValidationError, match="exactly one key"):
        Turn()


@pytest.mark.parametrize(
    "dialogue",
    [
        [{"user": "only me"}],
        [{"assistant": "me first"}, {"user": "ok"}],
        [{"user": "a"}, {"user": "b"}, {"assistant": "c"}],
        [{"user": "a"}, {"assistant": "b"}, {"user": "c"}],
        [],
    ],
)
def test_dialogues_start_with_user_alternate_and_end_with_assistant(
    dialogue: list[dict[str, str]],
) -> None:
    [(loc, message)] = errors(examples=[[{"user": "hi"}, {"assistant": "hey"}], dialogue])
    assert loc == ("examples", 1)
    assert "starts with 'user', alternates, and ends with 'assistant'" in message


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ user.display_name }", "Jinja2 syntax error"),
        ("{% for x in y %}", "Jinja2 syntax error"),
        ("{{ nme }}", "unknown variable 'nme'"),
        ("{{ name | shout }}", "No filter named 'shout'"),
        ("{{ ''.__class__ }}", "names starting with '_' are private"),
        ("{% import 'x' as y %}", "'import' is not available"),
        ("{% extends 'base' %}", "'extends' is not available"),
    ],
)
@pytest.mark.parametrize("field", ["system_prompt", "greeting"])
def test_templates_are_checked_at_validation(field: str, template: str, expected: str) -> None:
    [(loc, message)] = errors(**{field: template})
    assert loc == (field,)
    assert expected in message


def test_all_template_issues_of_a_field_are_listed() -> None:
    [(_, message)] = errors(system_prompt="{{ a }}\n{{ b.__class__ }}\n{{ c }}")
    assert "'a'" in message and "'__class__'" in message and "'c'" in message
    assert "template line 1" in message and "template line 3" in message


def test_templates_may_use_jinja_features() -> None:
    template = (
        "{% set greeting = 'Hi' %}{{ greeting }} {{ user.display_name | upper }}"
        "{% for t in persona.style.traits %}{{ loop.index }}{{ t }}{% endfor %}"
        "{{ range(3) | list }}{% if is_direct %}!{% endif %}{{ now.strftime('%H') }}"
    )
    assert Persona.model_validate({**MINIMAL, "system_prompt": template})


@pytest.mark.parametrize(
    "template",
    [
        "{{ 'x'|center(1000000000) }}",
        "{{ 'x' * 1000000000 }}",
        "{{ 2 ** 10000000000 }}",
        "{{ '%01000000000d' % 1 }}",
        "{{ 'x'|center(100000)|replace('x', 'xxxxxxxxxx')|replace('x', 'xxxxxxxxxx') }}",
    ],
)
def test_checking_a_template_evaluates_nothing(template: str) -> None:
    # Jinja folds constant expressions while compiling; a check must not allocate
    # what the template would (the render-time sandbox refuses or bounds it).
    tracemalloc.start()
    try:
        Persona.model_validate({**MINIMAL, "system_prompt": template})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000


def test_json_schema_has_identity_and_descriptions() -> None:
    schema = persona_json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == SCHEMA_ID
    assert schema["title"] == "Persona"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"id", "name", "system_prompt"}
    for name, prop in schema["properties"].items():
        assert prop.get("description"), name
    for name, definition in schema["$defs"].items():
        for field, prop in definition["properties"].items():
            assert prop.get("description"), f"{name}.{field}"


def test_json_schema_turn_is_one_string_key() -> None:
    turn = persona_json_schema()["$defs"]["Turn"]
    assert turn["minProperties"] == turn["maxProperties"] == 1
    assert turn["properties"]["user"] == {"type": "string", "description": "What the person says."}


def test_shipped_json_schema_file_matches_the_model() -> None:
    shipped = (SHIPPED_DIR / "persona.schema.json").read_text(encoding="utf-8")
    assert json.loads(shipped) == persona_json_schema(), (
        "personas/persona.schema.json is stale: regenerate it with `bot personas schema`"
    )
    assert shipped == persona_json_schema_text()
