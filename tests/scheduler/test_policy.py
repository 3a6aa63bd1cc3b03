"""When the persona may speak first, across zones and DST changes (no clock, no DB)."""

from __future__ import annotations

from datetime import UTC, datetime, time

from bot.personas.schedule import QuietHours, Schedule
from bot.scheduler import PersonState, decide, habit_trigger


def state(**kw: object) -> PersonState:
    base: dict[str, object] = {
        "started": True,
        "opted_out": False,
        "unreachable": False,
        "timezone": "Europe/Berlin",
        "sent_today": 0,
        "unanswered_in_row": 0,
    }
    base.update(kw)
    return PersonState(**base)  # type: ignore[arg-type]


SCHEDULE = Schedule(
    quiet_hours=QuietHours(start=time(22), end=time(7)), daily_cap=2, max_unanswered=2
)


def fires(cron: str, zone: str, start: datetime, n: int) -> list[str]:
    trigger = habit_trigger(cron, zone)
    out, previous, now = [], None, start
    for _ in range(n):
        nxt = trigger.get_next_fire_time(previous, now)
        out.append(nxt.astimezone(UTC).strftime("%m-%d %H:%M"))
        previous, now = nxt, nxt
    return out


def test_habit_keeps_local_time_across_berlin_dst_in_march_and_october() -> None:
    # Clocks go forward on 2026-03-29 and back on 2026-10-25 in Europe/Berlin.
    assert fires("30 7 * * *", "Europe/Berlin", datetime(2026, 3, 27, tzinfo=UTC), 4) == [
        "03-27 06:30",
        "03-28 06:30",
        "03-29 05:30",
        "03-30 05:30",
    ]
    assert fires("30 7 * * *", "Europe/Berlin", datetime(2026, 10, 24, tzinfo=UTC), 3) == [
        "10-24 05:30",
        "10-25 06:30",
        "10-26 06:30",
    ]


def test_habit_in_new_york_across_its_own_dst_dates() -> None:
    # America/New_York: forward 2026-03-08, back 2026-11-01.
    assert fires("0 18 * * *", "America/New_York", datetime(2026, 3, 7, tzinfo=UTC), 2) == [
        "03-07 23:00",
        "03-08 22:00",
    ]
    assert fires("0 18 * * *", "America/New_York", datetime(2026, 10, 31, tzinfo=UTC), 2) == [
        "10-31 22:00",
        "11-01 23:00",
    ]


def test_people_in_different_zones_get_their_own_local_time() -> None:
    start = datetime(2026, 6, 1, tzinfo=UTC)
    assert fires("0 8 * * *", "Asia/Shanghai", start, 1) == ["06-01 00:00"]
    assert fires("0 8 * * *", "Europe/Berlin", start, 1) == ["06-01 06:00"]
    assert fires("0 8 * * *", "America/Los_Angeles", start, 1) == ["06-01 15:00"]


def test_a_time_that_does_not_exist_on_the_spring_forward_day_fires_at_most_once() -> None:
    days = fires("30 2 * * *", "Europe/Berlin", datetime(2026, 3, 27, tzinfo=UTC), 4)
    assert len(set(d[:5] for d in days)) == len(days)  # never twice on one day


def test_quiet_hours_are_the_persons_own() -> None:
    late_in_berlin = datetime(2026, 1, 10, 22, 30, tzinfo=UTC)  # 23:30 in Berlin
    assert decide(state(), SCHEDULE, late_in_berlin).reason.startswith("quiet hours (23:30")
    assert decide(
        state(timezone="America/New_York"), SCHEDULE, late_in_berlin
    ).allowed  # 17:30 there


def test_quiet_hours_follow_dst() -> None:
    # 06:30 local is quiet; in summer that is 04:30 UTC, in winter 05:30 UTC.
    assert not decide(state(), SCHEDULE, datetime(2026, 7, 1, 4, 30, tzinfo=UTC)).allowed
    assert decide(state(), SCHEDULE, datetime(2026, 7, 1, 5, 30, tzinfo=UTC)).allowed
    assert not decide(state(), SCHEDULE, datetime(2026, 1, 10, 5, 30, tzinfo=UTC)).allowed


def test_caps_optout_unreachable_and_strangers() -> None:
    noon = datetime(2026, 5, 5, 10, 0, tzinfo=UTC)
    assert decide(state(sent_today=2), SCHEDULE, noon).reason == "daily cap of 2 reached"
    assert "unanswered" in decide(state(unanswered_in_row=2), SCHEDULE, noon).reason
    assert decide(state(opted_out=True), SCHEDULE, noon).reason == "opted out"
    assert decide(state(unreachable=True), SCHEDULE, noon).reason.startswith("unreachable")
    assert decide(state(started=False), SCHEDULE, noon).reason == "never wrote to the persona"
    assert decide(state(sent_today=1, unanswered_in_row=1), SCHEDULE, noon).allowed
