"""Values YAML and backends take too readily: `sampling.extra` takes only known,
bounded options, and an unquoted time (`22:00`, read by YAML as 1320) is refused
with the hint to quote it, wherever it is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bot.personas import Persona, check_paths
from bot.personas.schema import SamplingExtra

MINIMAL: dict[str, Any] = {"id": "alice", "name": "Alice", "system_prompt": "Hi."}


def extra_errors(extra: Any, **sampling: Any) -> list[tuple[Any, ...]]:
    with pytest.raises(ValidationError) as info:
        Persona.model_validate({**MINIMAL, "sampling": {"extra": extra, **sampling}})
    return [tuple(e["loc"]) for e in info.value.errors()]


def test_known_options_pass_through_as_a_plain_mapping() -> None:
    extra = {
        "top_k": 40,
        "min_p": 0.05,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "min_tokens": 4,
        "stop_token_ids": [2, 7],
    }
    persona = Persona.model_validate({**MINIMAL, "sampling": {"extra": extra}})
    assert persona.sampling.extra == {**extra, "stop_token_ids": (2, 7)}
    assert Persona.model_validate(MINIMAL).sampling.extra == {}


@pytest.mark.parametrize(
    "key", ["num_beams", "best_of", "n", "logits_processors", "skip_special_tokens", "max_tokens"]
)
def test_unknown_options_are_refused(key: str) -> None:
    assert extra_errors({key: 100000}) == [("sampling", "extra", key)]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("top_k", 0),
        ("top_k", -1),
        ("top_k", 100000),
        ("min_p", 1.5),
        ("min_p", -0.1),
        ("presence_penalty", 3),
        ("frequency_penalty", -2.5),
        ("min_tokens", 10**9),
        ("stop_token_ids", [-1]),
        ("stop_token_ids", list(range(33))),
        ("top_k", "many"),
        ("min_p", float("nan")),
    ],
)
def test_out_of_range_options_are_refused(key: str, value: Any) -> None:
    locs = extra_errors({key: value})
    assert locs and all(loc[:3] == ("sampling", "extra", key) for loc in locs)


def test_min_tokens_may_not_exceed_max_tokens() -> None:
    assert extra_errors({"min_tokens": 100}, max_tokens=50) == [("sampling",)]


@pytest.mark.parametrize("value", [[], "top_k: 5", 7, None])
def test_extra_is_a_mapping(value: Any) -> None:
    assert extra_errors(value) == [("sampling", "extra")]


@pytest.mark.parametrize(
    ("field", "value"), [("repetition_penalty", 50.0), ("seed", -1), ("seed", 2**64)]
)
def test_other_sampling_values_are_bounded(field: str, value: Any) -> None:
    with pytest.raises(ValidationError) as info:
        Persona.model_validate({**MINIMAL, "sampling": {field: value}})
    assert [tuple(e["loc"]) for e in info.value.errors()] == [("sampling", field)]


@given(
    st.dictionaries(
        st.text(max_size=20),
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
        max_size=4,
    )
)
def test_whatever_extra_holds_only_bounded_known_options_arrive(extra: dict[str, Any]) -> None:
    try:
        persona = Persona.model_validate({**MINIMAL, "sampling": {"extra": extra}})
    except ValidationError:
        return
    arrived = persona.sampling.extra
    assert set(arrived) <= set(SamplingExtra.model_fields)
    SamplingExtra.model_validate(arrived)  # what arrives is valid by itself


def test_an_unknown_option_is_reported_at_its_line_with_the_allowed_ones(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "id: p\nname: P\nsystem_prompt: Hi.\nsampling:\n  extra:\n    num_beams: 100000\n",
        encoding="utf-8",
    )
    [problem] = check_paths([path])
    assert (problem.line, problem.column, problem.field) == (6, 5, "sampling.extra.num_beams")
    assert "allowed: top_k, min_p" in problem.message


# -- unquoted times -------------------------------------------------------------------------


def test_yaml_reads_an_unquoted_time_as_a_number() -> None:
    # Why this matters: YAML 1.1 reads 22:00 in base 60.
    assert yaml.safe_load("t: 22:00") == {"t": 1320}


SCHEDULE = "id: pet\nname: Pet\nsystem_prompt: You are a pet.\nschedule:\n"


@pytest.mark.parametrize(
    ("yaml_text", "line", "field", "written"),
    [
        ("  quiet_hours: {start: 22:00, end: '07:00'}\n", 5, "schedule.quiet_hours.start", "22:00"),
        ("  quiet_hours: {start: '22:00', end: 7:30}\n", 5, "schedule.quiet_hours.end", "7:30"),
        (
            "  quiet_hours:\n    start: 22:30\n    end: '08:00'\n",
            6,
            "schedule.quiet_hours.start",
            "22:30",
        ),
        (
            "  habits:\n    - {name: walk, cron: 7:30, prompt: go}\n",
            6,
            "schedule.habits.0.cron",
            "7:30",
        ),
        ("  timezone: 1:00\n", 5, "schedule.timezone", "1:00"),
    ],
)
def test_an_unquoted_time_is_refused_with_the_hint_to_quote_it(
    tmp_path: Path, yaml_text: str, line: int, field: str, written: str
) -> None:
    path = tmp_path / "pet.yaml"
    path.write_text(SCHEDULE + yaml_text, encoding="utf-8")
    [problem] = check_paths([path])
    assert (problem.line, problem.field) == (line, field)
    assert f"quote it, '{written}'" in problem.message


@pytest.mark.parametrize("value", ["22:00", "1:30:00", "190:20:30.15"])
def test_an_unquoted_time_anywhere_a_text_is_expected_gets_the_hint(
    tmp_path: Path, value: str
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(f"id: p\nname: P\nsystem_prompt: Hi.\ndescription: {value}\n", "utf-8")
    [problem] = check_paths([path])
    assert (problem.line, problem.field) == (4, "description")
    assert f"quote it, '{value}'" in problem.message


def test_a_number_is_not_taken_as_a_time_of_day() -> None:
    with pytest.raises(ValidationError, match="text in quotes"):
        Persona.model_validate(
            {**MINIMAL, "schedule": {"quiet_hours": {"start": 1320, "end": "08:00"}}}
        )


def test_quoted_times_load() -> None:
    persona = Persona.model_validate(
        {**MINIMAL, "schedule": {"quiet_hours": {"start": "22:00", "end": "07:00"}}}
    )
    assert persona.schedule is not None and persona.schedule.quiet_hours is not None
    assert persona.schedule.quiet_hours.start.hour == 22
