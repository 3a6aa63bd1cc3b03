"""Whether the persona may speak first to a person now: one pure decision.

Everything it needs is passed in (the person's state, the persona's schedule, the
time), so the rules are tested across time zones and DST changes without a clock
or a database.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.personas.schedule import Schedule

__all__ = ["Decision", "PersonState", "decide", "local_day_start"]


@dataclass(frozen=True, slots=True)
class PersonState:
    """What the bot knows about a person that bears on speaking first."""

    started: bool  # they have written to the persona in a direct conversation
    opted_out: bool
    unreachable: bool
    timezone: str
    sent_today: int  # proactive messages since local midnight
    unanswered_in_row: int  # proactive messages since their last message
    #: After a crisis (bot/safety) the persona does not speak first until then.
    paused_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """Yes or no, and why (the reason is logged and shown by `bot schedule list`)."""

    allowed: bool
    reason: str


def local_day_start(now: datetime, zone: str) -> datetime:
    """Midnight of the person's current day, as an aware datetime in their zone."""
    local = now.astimezone(ZoneInfo(zone))
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def decide(state: PersonState, schedule: Schedule, now: datetime) -> Decision:
    """May a proactive message go to this person at `now`? Checks, in order: they
    started the conversation, did not opt out, can be reached, no safety pause (after
    a crisis), it is not their quiet hours, the daily cap, and the run of unanswered
    messages."""
    if not state.started:
        return Decision(False, "never wrote to the persona")
    if state.opted_out:
        return Decision(False, "opted out")
    if state.unreachable:
        return Decision(False, "unreachable on this platform")
    if state.paused_until is not None and now < state.paused_until:
        until = state.paused_until.astimezone(ZoneInfo("UTC"))
        return Decision(False, f"paused after a crisis until {until:%Y-%m-%d %H:%M} UTC")
    local = now.astimezone(ZoneInfo(state.timezone))
    if schedule.quiet_hours is not None and schedule.quiet_hours.contains(local.time()):
        return Decision(False, f"quiet hours ({local:%H:%M} {state.timezone})")
    if state.sent_today >= schedule.daily_cap:
        return Decision(False, f"daily cap of {schedule.daily_cap} reached")
    if state.unanswered_in_row >= schedule.max_unanswered:
        return Decision(False, f"{state.unanswered_in_row} proactive messages unanswered")
    return Decision(True, "ok")
