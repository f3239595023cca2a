"""Working calendar: 2026 holidays and 调休, working-hour arithmetic, year boundary, load errors."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gridflow.core.calendar import (
    CalendarError,
    CalendarRangeError,
    WorkingCalendar,
    load_bundled_calendar,
)

CST = ZoneInfo("Asia/Shanghai")
CAL = load_bundled_calendar()


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=CST)


def as_local(t: datetime) -> datetime:
    assert t.tzinfo is UTC
    return t.astimezone(CST)


def plus_hours(start: datetime, hours: float) -> datetime:
    return as_local(CAL.add_working_hours(start, hours))


def plus_days(start: datetime, days: float) -> datetime:
    return as_local(CAL.add_working_days(start, days))


def base_config(**changes: object) -> dict:
    cfg = {
        "timezone": "Asia/Shanghai",
        "working_hours": [["08:30", "12:00"], ["14:00", "17:30"]],
        "weekend": [6, 7],
        "years": {"2026": {"holidays": []}},
    }
    cfg.update(changes)
    return cfg


# --- which days work -------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "working"),
    [
        (date(2026, 1, 1), False),  # 元旦
        (date(2026, 1, 4), True),  # Sunday, 元旦调休上班
        (date(2026, 2, 14), True),  # Saturday, 春节调休上班
        (date(2026, 2, 17), False),  # 春节 (正月初一)
        (date(2026, 2, 23), False),  # Monday, last day of 春节
        (date(2026, 2, 28), True),  # Saturday, 春节调休上班
        (date(2026, 4, 6), False),  # Monday, 清明
        (date(2026, 5, 5), False),  # Tuesday, 劳动节
        (date(2026, 5, 9), True),  # Saturday, 劳动节调休上班
        (date(2026, 6, 19), False),  # Friday, 端午
        (date(2026, 9, 20), True),  # Sunday, 国庆调休上班
        (date(2026, 9, 25), False),  # Friday, 中秋
        (date(2026, 10, 7), False),  # Wednesday, 国庆
        (date(2026, 10, 10), True),  # Saturday, 国庆调休上班
        (date(2026, 10, 17), False),  # plain Saturday
        (date(2026, 11, 23), True),  # plain Monday
    ],
)
def test_2026_state_council_schedule(day: date, working: bool) -> None:
    assert CAL.is_working_day(day) is working


def test_is_working_day_takes_the_local_date_of_an_instant() -> None:
    # 2026-09-30 17:00 UTC is already 10-01 01:00 in Beijing: 国庆.
    assert CAL.is_working_day(datetime(2026, 9, 30, 17, 0, tzinfo=UTC)) is False
    assert CAL.holiday_name(date(2026, 10, 10)) == "国庆节"


# --- add_working_hours -----------------------------------------------------------


def test_accepts_utc_returns_utc_computes_in_local_time() -> None:
    start = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)  # Monday 09:00 Beijing
    due = CAL.add_working_hours(start, 2)
    assert due == datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    assert due.tzinfo is UTC


def test_lunch_break_is_skipped() -> None:
    assert plus_hours(local(2026, 11, 23, 11, 0), 2) == local(2026, 11, 23, 15, 0)


def test_deadline_at_end_of_interval_is_the_earliest_instant() -> None:
    assert plus_hours(local(2026, 11, 23, 10, 0), 2) == local(2026, 11, 23, 12, 0)
    assert plus_hours(local(2026, 11, 23, 8, 30), 7) == local(2026, 11, 23, 17, 30)


def test_fractional_hours() -> None:
    assert plus_hours(local(2026, 11, 23, 8, 30), 1.25) == local(2026, 11, 23, 9, 45)
    # 0.5 h from 11:45: 15 min before lunch, 15 min after.
    assert plus_hours(local(2026, 11, 23, 11, 45), 0.5) == local(2026, 11, 23, 14, 15)


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (local(2026, 11, 23, 6, 0), local(2026, 11, 23, 9, 30)),  # before office hours
        (local(2026, 11, 23, 12, 30), local(2026, 11, 23, 15, 0)),  # during lunch
        (local(2026, 11, 23, 20, 0), local(2026, 11, 24, 9, 30)),  # evening
        (local(2026, 11, 27, 18, 0), local(2026, 11, 30, 9, 30)),  # Friday evening -> Monday
        (local(2026, 11, 28, 10, 0), local(2026, 11, 30, 9, 30)),  # plain Saturday
    ],
)
def test_start_outside_working_hours(start: datetime, expected: datetime) -> None:
    assert plus_hours(start, 1) == expected


def test_start_on_a_holiday() -> None:
    assert plus_hours(local(2026, 10, 3, 10, 0), 2) == local(2026, 10, 8, 10, 30)


def test_hours_across_national_day() -> None:
    # Wednesday 9-30 16:30: one hour left that day, then the first hour after 国庆 (Thursday 10-08).
    assert plus_hours(local(2026, 9, 30, 16, 30), 2) == local(2026, 10, 8, 9, 30)


def test_makeup_sunday_is_worked() -> None:
    # Friday 9-18 17:00 + 1 h: half an hour Friday, half an hour on Sunday 9-20 (调休上班).
    assert plus_hours(local(2026, 9, 18, 17, 0), 1) == local(2026, 9, 20, 9, 0)


def test_zero_and_negative() -> None:
    start = local(2026, 11, 28, 10, 0)  # Saturday: zero working time later is the start itself
    assert CAL.add_working_hours(start, 0) == start
    with pytest.raises(ValueError):
        CAL.add_working_hours(start, -1)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        CAL.add_working_hours(datetime(2026, 11, 23, 9, 0), 1)


# --- add_working_days --------------------------------------------------------------


def test_working_days_across_national_day_and_makeup_saturday() -> None:
    start = local(2026, 9, 30, 15, 0)  # Wednesday before 国庆
    assert plus_days(start, 1) == local(2026, 10, 8, 15, 0)
    assert plus_days(start, 3) == local(2026, 10, 10, 15, 0)  # 调休 Saturday
    assert plus_days(start, 5) == local(2026, 10, 13, 15, 0)  # skips Sun 10-11


def test_working_days_across_spring_festival() -> None:
    # Friday 2-13, then Saturday 2-14 worked, 2-15..2-23 off, back Tuesday 2-24.
    start = local(2026, 2, 13, 10, 0)
    assert plus_days(start, 1) == local(2026, 2, 14, 10, 0)
    assert plus_days(start, 2) == local(2026, 2, 24, 10, 0)


def test_working_days_keep_clock_time_and_define_edges() -> None:
    assert CAL.day_length == timedelta(hours=7)
    monday_close = local(2026, 11, 23, 17, 30)
    assert plus_days(monday_close, 1) == local(2026, 11, 24, 17, 30)
    friday_evening = local(2026, 11, 27, 18, 0)
    assert plus_days(friday_evening, 1) == local(2026, 11, 30, 17, 30)
    lunch = local(2026, 11, 23, 12, 30)  # counts from 14:00; earliest equal instant is 12:00
    assert plus_days(lunch, 1) == local(2026, 11, 24, 12, 0)
    assert plus_days(local(2026, 11, 23, 9, 0), 0.5) == local(2026, 11, 23, 14, 30)


# --- working_seconds_between / next_working_instant ----------------------------------


def test_working_seconds_between() -> None:
    a, b = local(2026, 11, 23, 11, 0), local(2026, 11, 23, 15, 0)
    assert CAL.working_seconds_between(a, b) == 2 * 3600
    assert CAL.working_seconds_between(b, a) == -2 * 3600
    assert CAL.working_seconds_between(a, a) == 0
    # Wednesday 9-30 16:30 to Thursday 10-08 09:30 across the whole of 国庆: 2 h.
    assert (
        CAL.working_seconds_between(local(2026, 9, 30, 16, 30), local(2026, 10, 8, 9, 30)) == 7200
    )


@pytest.mark.parametrize("hours", [0.1, 1, 3.5, 6.99, 7, 7.01, 40, 123.456])
@pytest.mark.parametrize(
    "start",
    [
        local(2026, 9, 29, 7, 0),
        local(2026, 9, 30, 12, 0),
        local(2026, 2, 13, 17, 29),
        local(2026, 5, 8, 23, 0),
    ],
)
def test_add_then_measure_round_trips(start: datetime, hours: float) -> None:
    due = CAL.add_working_hours(start, hours)
    assert CAL.working_time_between(start, due) == timedelta(hours=hours)
    assert CAL.working_time_between(start, due - timedelta(microseconds=1)) < timedelta(hours=hours)


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        (local(2026, 11, 23, 10, 0), local(2026, 11, 23, 10, 0)),
        (local(2026, 11, 23, 12, 0), local(2026, 11, 23, 14, 0)),  # intervals are half-open
        (local(2026, 11, 23, 17, 30), local(2026, 11, 24, 8, 30)),
        (local(2026, 9, 30, 18, 0), local(2026, 10, 8, 8, 30)),
        (local(2026, 9, 19, 9, 0), local(2026, 9, 20, 8, 30)),  # Saturday -> 调休 Sunday
    ],
)
def test_next_working_instant(t: datetime, expected: datetime) -> None:
    assert as_local(CAL.next_working_instant(t)) == expected


def test_cost_is_per_day_spanned() -> None:
    cal = WorkingCalendar.load(base_config(unknown_years="weekdays"))
    start = local(2026, 3, 2, 9, 0)
    due = cal.add_working_days(start, 100)
    spanned = (as_local(due).date() - start.date()).days + 1
    assert len(cal._segments_cache) == spanned  # each day looked at once, no minute stepping


# --- year boundary ---------------------------------------------------------------------


def test_unconfigured_year_is_a_clear_error_by_default() -> None:
    with pytest.raises(CalendarRangeError, match=r"2027-01-01 .*calendar_2027\.json"):
        CAL.add_working_hours(local(2026, 12, 31, 16, 0), 2)
    with pytest.raises(CalendarRangeError):
        CAL.is_working_day(date(2025, 12, 31))
    # Within 2026 the last day still works.
    assert plus_hours(local(2026, 12, 31, 16, 0), 1.5) == local(2026, 12, 31, 17, 30)


def test_covered_until_tells_operators_when_the_next_notice_is_needed() -> None:
    assert CAL.covered_until == date(2026, 12, 31)
    assert WorkingCalendar.load(base_config(unknown_years="weekdays")).covered_until is None


def test_unknown_years_as_plain_weekdays_when_configured() -> None:
    cal = WorkingCalendar.load(base_config(unknown_years="weekdays"))
    # Thursday 12-31 16:00 + 2 h: 1.5 h Thursday, then Friday 2027-01-01 counted as a weekday.
    assert as_local(cal.add_working_hours(local(2026, 12, 31, 16, 0), 2)) == local(2027, 1, 1, 9, 0)


def test_next_year_file_merges_across_the_boundary() -> None:
    next_year = base_config(years={"2027": {"holidays": [{"name": "元旦", "off": ["2027-01-01"]}]}})
    cal = WorkingCalendar.load([CAL_PATH, next_year])
    assert cal.years == frozenset({2026, 2027})
    # Friday 2027-01-01 off, weekend, so Monday 2027-01-04.
    assert as_local(cal.add_working_hours(local(2026, 12, 31, 16, 0), 2)) == local(2027, 1, 4, 9, 0)


CAL_PATH = CAL.sources[0]


# --- load errors name the file and the reason --------------------------------------------


def write(tmp_path, name: str, content: object) -> str:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "not valid JSON"),
        (base_config(timezone="Mars/Olympus"), "unknown timezone"),
        (base_config(working_hours=[["09:00", "12:00"], ["11:00", "17:00"]]), "overlaps"),
        (base_config(working_hours=[["12:00", "09:00"]]), "must end after"),
        (base_config(weekend=[1, 2, 3, 4, 5, 6, 7]), "all seven days"),
        (base_config(hollidays=[]), "unknown keys"),
        (
            base_config(
                years={
                    "2026": {
                        "holidays": [
                            {"name": "X", "off": ["2026-10-01"], "makeup_workdays": ["2026-10-06"]}
                        ]
                    }
                }
            ),
            "not a weekend day",
        ),
        (
            base_config(
                years={
                    "2026": {
                        "holidays": [
                            {"name": "X", "off": ["2026-10-10"], "makeup_workdays": ["2026-10-10"]}
                        ]
                    }
                }
            ),
            "both a day off and a make-up working day",
        ),
        (
            base_config(years={"2026": {"holidays": [{"name": "X", "off": ["2026-13-01"]}]}}),
            "bad date",
        ),
    ],
)
def test_load_errors_name_file_and_reason(tmp_path, content: object, reason: str) -> None:
    path = write(tmp_path, "calendar_bad.json", content)
    with pytest.raises(CalendarError) as info:
        WorkingCalendar.load(path)
    assert "calendar_bad.json" in str(info.value)
    assert reason in str(info.value)


def test_missing_file_and_merge_conflicts(tmp_path) -> None:
    with pytest.raises(CalendarError, match="calendar_none.json: cannot read"):
        WorkingCalendar.load(tmp_path / "calendar_none.json")
    other_hours = write(
        tmp_path,
        "calendar_x.json",
        base_config(years={"2027": {"holidays": []}}, working_hours=[["09:00", "17:00"]]),
    )
    with pytest.raises(CalendarError, match="calendar_x.json: working_hours differs"):
        WorkingCalendar.load([CAL_PATH, other_hours])
    again = write(tmp_path, "calendar_again.json", base_config())
    with pytest.raises(CalendarError, match="calendar_again.json: year 2026 is configured by two"):
        WorkingCalendar.load([CAL_PATH, again])
