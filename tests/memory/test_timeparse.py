from datetime import UTC, datetime

import pytest

from bot.memory.timeparse import parse_time_range

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("what did I say yesterday?", "2026-11-24", "2026-11-25"),
        ("昨天我说了什么", "2026-11-24", "2026-11-25"),
        ("anything last week", "2026-11-16", "2026-11-23"),
        ("上周的事情", "2026-11-16", "2026-11-23"),
        ("in May", "2026-05-01", "2026-06-01"),
        ("back in December", "2025-12-01", "2026-01-01"),
        ("in May 2024", "2024-05-01", "2024-06-01"),
        ("5月的时候", "2026-05-01", "2026-06-01"),
        ("last month", "2026-10-01", "2026-11-01"),
        ("去年", "2025-01-01", "2026-01-01"),
        ("last monday", "2026-11-23", "2026-11-24"),
    ],
)
def test_time_expressions(text: str, start: str, end: str) -> None:
    period = parse_time_range(text, NOW)
    assert period is not None
    assert (period.start.date().isoformat(), period.end.date().isoformat()) == (start, end)


def test_ago_is_a_window_around_the_day() -> None:
    period = parse_time_range("two weeks ago", NOW)
    assert period is not None and period.contains(datetime(2026, 11, 11, tzinfo=UTC))


@pytest.mark.parametrize("text", ["", "may I ask you something", "I like maybe", "🙂", "x" * 10000])
def test_no_time_expression(text: str) -> None:
    assert parse_time_range(text, NOW) is None
