"""The schedule section: bad values are reported with file, line and field."""

from __future__ import annotations

from datetime import time
from pathlib import Path

import pytest

from bot.personas import check_paths
from bot.personas.schedule import QuietHours

BASE = """\
version: 1
id: pet
name: Pet
system_prompt: You are a pet.
schedule:
"""


def problems(tmp_path: Path, schedule: str) -> list[str]:
    path = tmp_path / "pet.yaml"
    path.write_text(BASE + schedule, encoding="utf-8")
    return [str(p) for p in check_paths([path])]


def test_valid_schedule_loads(tmp_path: Path) -> None:
    text = (
        "  timezone: Europe/Berlin\n"
        "  habits:\n    - {name: walk, cron: '30 7 * * *', prompt: walk, jitter_minutes: 5}\n"
        "  checkins:\n    - {after_hours: 48, prompt: miss you}\n"
        "  quiet_hours: {start: '22:00', end: '07:00'}\n  daily_cap: 2\n"
    )
    assert problems(tmp_path, text) == []


@pytest.mark.parametrize(
    ("schedule", "line", "field", "message"),
    [
        (
            "  habits:\n    - {name: walk, cron: '61 7 * * *', prompt: x}\n",
            7,
            "schedule.habits.0.cron",
            "not a valid cron",
        ),
        (
            "  habits:\n    - {name: walk, cron: '7 * *', prompt: x}\n",
            7,
            "schedule.habits.0.cron",
            "5 fields",
        ),
        ("  timezone: Mars/Olympus\n", 6, "schedule.timezone", "IANA"),
        ("  quiet_hours: {start: '08:00', end: '08:00'}\n", 6, "schedule.quiet_hours", "whole day"),
        (
            "  quiet_hours: {start: '25:00', end: '08:00'}\n",
            6,
            "schedule.quiet_hours.start",
            "HH:MM",
        ),
        ("  daily_cap: 0\n", 6, "schedule.daily_cap", "greater than or equal to 1"),
        (
            "  habits:\n    - {name: a, cron: '0 8 * * *', prompt: x}\n"
            "    - {name: a, cron: '0 9 * * *', prompt: y}\n",
            6,
            "schedule",
            "unique",
        ),
    ],
)
def test_bad_schedules_are_reported_with_line_and_field(
    tmp_path: Path, schedule: str, line: int, field: str, message: str
) -> None:
    [problem] = problems(tmp_path, schedule)
    assert f"pet.yaml:{line}:" in problem and f" {field}: " in problem and message in problem, (
        problem
    )


def test_quiet_hours_across_midnight() -> None:
    quiet = QuietHours(start=time(22), end=time(7))
    assert quiet.contains(time(23, 30)) and quiet.contains(time(6, 59))
    assert not quiet.contains(time(7)) and not quiet.contains(time(12))
    day = QuietHours(start=time(13), end=time(14))
    assert day.contains(time(13, 30)) and not day.contains(time(14, 1))
