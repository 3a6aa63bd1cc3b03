"""The `schedule` section of a persona: when it speaks first, and how often at most.

Times are in each person's own time zone: a habit at "30 7 * * *" fires at 07:30
for someone in Berlin and at 07:30 for someone in New York. Validated at load like
the rest of the file, so `bot personas check` reports a bad cron expression or
quiet hours that cover the whole day with its line.
"""

from __future__ import annotations

from datetime import time
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

__all__ = ["CheckIn", "Habit", "QuietHours", "Schedule"]

Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
# Editors read "format: time" as HH:MM:SS with an offset; people write "22:00".
Clock = Annotated[time, WithJsonSchema({"type": "string", "pattern": r"^([01]\d|2[0-3]):[0-5]\d$"})]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _parse_clock(value: object) -> object:
    if isinstance(value, int | float) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 22:00 as 22 * 60 + 0 = 1320 (base 60); pydantic
        # would then take it as seconds and serve 00:22.
        raise ValueError(f"a time of day is text in quotes, like '22:00', not the number {value!r}")
    if isinstance(value, str):
        try:
            hours, minutes = value.split(":")
            return time(int(hours), int(minutes))
        except ValueError:
            raise ValueError(f"a time of day as HH:MM, not {value!r}") from None
    return value


class Habit(_Section):
    """Something the persona does at fixed times: a morning greeting, a walk, dinner."""

    name: Slug = Field(description="Identifier of the habit, e.g. 'walk'.")
    cron: str = Field(
        description="When, as a 5-field cron expression in the person's time zone "
        "(minute hour day month weekday), e.g. '30 7 * * *' for 07:30 every day.",
        examples=["30 7 * * *", "0 18 * * mon-fri"],
    )
    prompt: str = Field(
        min_length=1,
        description="What the persona should do, told to it as an instruction, e.g. "
        "'It is walk time; remind your human, excitedly.'",
    )
    jitter_minutes: int = Field(
        default=0, ge=0, le=120, description="Fire up to this many minutes late, at random."
    )

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        fields = value.split()
        if len(fields) != 5:
            raise ValueError(
                f"a cron expression has 5 fields (minute hour day month weekday), not {len(fields)}"
            )
        try:
            CronTrigger.from_crontab(value, timezone="UTC")
        except ValueError as exc:
            raise ValueError(f"not a valid cron expression: {exc}") from None
        return value


class CheckIn(_Section):
    """Reach out when a person has been quiet for a while."""

    after_hours: float = Field(gt=0, le=24 * 90, description="Hours of silence before it fires.")
    prompt: str = Field(min_length=1, description="What the persona should do, as an instruction.")


class QuietHours(_Section):
    """Hours in the person's own zone when the persona never speaks first."""

    start: Clock = Field(description="Start, HH:MM, e.g. '22:00'.")
    end: Clock = Field(description="End, HH:MM, e.g. '08:00' (may be after midnight).")

    _clock = field_validator("start", "end", mode="before")(_parse_clock)

    @model_validator(mode="after")
    def _not_all_day(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError(
                "quiet hours that start when they end cover the whole day; "
                "to stop proactive messages remove the schedule section instead"
            )
        return self

    def contains(self, at: time) -> bool:
        """Whether a local time of day falls within the quiet hours."""
        if self.start < self.end:
            return self.start <= at < self.end
        return at >= self.start or at < self.end


class Schedule(_Section):
    """When the persona speaks first, within limits that keep it welcome."""

    timezone: str | None = Field(
        default=None,
        description="IANA zone for people who have not set theirs with /timezone "
        "(default: the bot's engine.timezone).",
        examples=["Europe/Berlin"],
    )
    habits: tuple[Habit, ...] = Field(default=(), description="Messages at fixed local times.")
    checkins: tuple[CheckIn, ...] = Field(default=(), description="Messages after silence.")
    follow_ups: bool = Field(
        default=True,
        description="Let the persona note things to ask about later ('how did the exam go?').",
    )
    quiet_hours: QuietHours | None = Field(
        default=None, description="Never speak first in these local hours."
    )
    daily_cap: int = Field(
        default=3,
        ge=1,
        le=48,
        description="At most this many proactive messages a person a day (at least 1; "
        "remove the schedule section to send none).",
    )
    max_unanswered: int = Field(
        default=2,
        ge=1,
        le=20,
        description="Stop after this many proactive messages in a row without an answer.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"not a known IANA time zone: {value!r}") from None
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> Schedule:
        names = [h.name for h in self.habits]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"habit names must be unique: {', '.join(duplicates)}")
        return self
