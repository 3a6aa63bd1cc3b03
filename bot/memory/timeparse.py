"""Time expressions in a query ("last week", "in May", "yesterday", "上周", "昨天").

`parse_time_range(text, now)` returns the half-open UTC range `[start, end)` the
text points at, or None. It is deliberately small: a handful of patterns people
use when they ask about their past, in English and Chinese. Time is an argument
(`now`), so results never depend on the clock. Imports nothing of the project.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = ["TimeRange", "parse_time_range"]

_MONTHS = {
    name: i + 1
    for i, names in enumerate(
        [
            ("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"),
            ("may",), ("june", "jun"), ("july", "jul"), ("august", "aug"),
            ("september", "sep", "sept"), ("october", "oct"), ("november", "nov"),
            ("december", "dec"),
        ]
    )
    for name in names
}  # fmt: skip
_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_UNITS = {"day": 1, "week": 7, "month": 30, "year": 365}
_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}

_MONTH_RE = re.compile(
    r"\b(?:in|during|since|on|of|back in)\s+(" + "|".join(sorted(_MONTHS, key=len, reverse=True))
    + r")\b(?:\s+(\d{4}))?",
    re.IGNORECASE,
)  # fmt: skip
_AGO_RE = re.compile(r"\b(\d+|a|an|one|two|three|four|five|six)\s+(day|week|month|year)s?\s+ago\b")
_LAST_DAY_RE = re.compile(r"\blast\s+(" + "|".join(_WEEKDAYS) + r")\b")
_ZH_MONTH_RE = re.compile(r"(\d{1,2}|[一二三四五六七八九十]{1,2})月")
_ZH_DIGITS = {"一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}


@dataclass(frozen=True, slots=True)
class TimeRange:
    """A half-open range of time, `[start, end)`, in UTC."""

    start: datetime
    end: datetime

    def contains(self, moment: datetime) -> bool:
        """True when `moment` (aware or naive UTC) falls in the range."""
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return self.start <= moment < self.end


def _day(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def _month_range(year: int, month: int) -> TimeRange:
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return TimeRange(start, end)


def _zh_number(text: str) -> int:
    if text.isdigit():
        return int(text)
    if text == "十":
        return 10
    if text.startswith("十"):
        return 10 + _ZH_DIGITS.get(text[1:], 0)
    return _ZH_DIGITS.get(text, 0)


def _recent_month(now: datetime, month: int, year: int | None) -> TimeRange:
    # "in May" without a year means the latest May that has begun.
    if year is None:
        year = now.year if month <= now.month else now.year - 1
    return _month_range(year, month)


def parse_time_range(text: str, now: datetime) -> TimeRange | None:
    """The period `text` refers to, relative to `now`; None when it names none."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    now = now.astimezone(UTC)
    lower = text.lower()
    today = _day(now)
    week_start = today - timedelta(days=today.weekday())
    day = timedelta(days=1)
    fixed: list[tuple[tuple[str, ...], TimeRange]] = [
        (("day before yesterday", "前天"), TimeRange(today - 2 * day, today - day)),
        (("yesterday", "last night", "昨天", "昨晚", "昨日"), TimeRange(today - day, today)),
        (("today", "this morning", "tonight", "今天", "今日"), TimeRange(today, today + day)),
        (("last week", "上周", "上星期", "上个星期", "先週"),
         TimeRange(week_start - 7 * day, week_start)),
        (("this week", "这周", "本周", "今週"), TimeRange(week_start, week_start + 7 * day)),
        (("last weekend", "上周末"),
         TimeRange(week_start - 2 * day, week_start)),
        (("last month", "上个月", "上月", "先月"),
         _month_range(now.year - (now.month == 1), (now.month - 2) % 12 + 1)),
        (("this month", "这个月", "本月", "今月"), _month_range(now.year, now.month)),
        (("last year", "去年", "昨年"),
         TimeRange(datetime(now.year - 1, 1, 1, tzinfo=UTC), datetime(now.year, 1, 1, tzinfo=UTC))),
        (("this year", "今年"),
         TimeRange(datetime(now.year, 1, 1, tzinfo=UTC), datetime(now.year + 1, 1, 1, tzinfo=UTC))),
    ]  # fmt: skip
    for phrases, period in fixed:
        if any(p in lower for p in phrases):
            return period
    if match := _AGO_RE.search(lower):
        count = _NUMBERS.get(match.group(1)) or int(match.group(1))
        span = _UNITS[match.group(2)]
        center = today - timedelta(days=count * span)
        half = timedelta(days=max(1, span // 2))
        return TimeRange(center - half, center + half + day)
    if match := _LAST_DAY_RE.search(lower):
        target = _WEEKDAYS.index(match.group(1))
        back = (today.weekday() - target) % 7 or 7
        start = today - timedelta(days=back)
        return TimeRange(start, start + day)
    if match := _MONTH_RE.search(text):
        month = _MONTHS[match.group(1).lower()]
        year = int(match.group(2)) if match.group(2) else None
        return _recent_month(now, month, year)
    if match := _ZH_MONTH_RE.search(text):
        month = _zh_number(match.group(1))
        if 1 <= month <= 12:
            return _recent_month(now, month, None)
    return None
