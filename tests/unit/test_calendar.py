"""Working calendar: 2026 holidays and 调休, working-hour arithmetic, year boundary, load errors,
a calendar directory (one file per year) and the warning before its last year ends."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gridflow.core.calendar import (
    REFDATA_DIR,
    CalendarError,
    CalendarRangeError,
    WorkingCalendar,
    calendar_end_warning,
    load_bundled_calendar,
    load_calendar_dir,
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


def test_every_date_appears_once_in_its_year(tmp_path) -> None:
    def year_2026(*festivals: dict) -> dict:
        return base_config(years={"2026": {"holidays": list(festivals)}})

    twice_in_one = year_2026({"name": "国庆节", "off": ["2026-10-01", "2026-10-01"]})
    in_two = year_2026({"name": "国庆节", "off": ["2026-10-01"]},
                       {"name": "中秋节", "off": ["2026-10-01"]})
    makeup_twice = year_2026({"name": "国庆节", "makeup_workdays": ["2026-10-10"]},
                             {"name": "中秋节", "makeup_workdays": ["2026-10-10"]})
    off_and_makeup = year_2026({"name": "国庆节", "off": ["2026-10-10"]},
                               {"name": "中秋节", "makeup_workdays": ["2026-10-10"]})
    other_year = year_2026({"name": "元旦", "off": ["2027-01-01"]})
    makeup_weekday = year_2026({"name": "国庆节", "makeup_workdays": ["2026-10-12"]})
    for content, reason in [
        (twice_in_one, "2026-10-01 appears twice"),
        (in_two, "2026-10-01 appears twice (国庆节 and 中秋节"),
        (makeup_twice, "2026-10-10 appears twice"),
        (off_and_makeup, "2026-10-10 is both a day off and a make-up working day"),
        (other_year, "元旦: day off 2027-01-01 is not in 2026"),
        (makeup_weekday, "make-up working day 2026-10-12 is not a weekend day"),
        ('{"timezone": "Asia/Shanghai", "working_hours": [["08:30", "17:30"]], "years": '
         '{"2026": {"holidays": []}, "2026": {"holidays": []}}}', "'2026' appears twice"),
    ]:
        path = write(tmp_path, "calendar_2026.json", content)
        with pytest.raises(CalendarError) as info:
            WorkingCalendar.load(path)
        assert str(info.value).startswith(path) and reason in str(info.value), str(info.value)


# --- a calendar directory: one file per year, contiguous ------------------------------------

# Test data only: NOT the State Council's notice for 2027, which is not known here.
FICTIONAL_2027 = base_config(years={"2027": {"holidays": [
    {"name": "元旦", "off": ["2027-01-01"], "makeup_workdays": []}]}})


def calendar_dir(tmp_path, **files: object):
    folder = tmp_path / "cal"
    folder.mkdir(exist_ok=True)
    (folder / "calendar_2026.json").write_text(
        Path(CAL_PATH).read_text(encoding="utf-8"), encoding="utf-8")
    for name, content in files.items():
        write(folder, f"{name}.json", content)
    return folder


def test_the_bundled_directory_is_a_valid_calendar_directory() -> None:
    cal = load_calendar_dir(REFDATA_DIR)
    assert cal.years == frozenset({2026}) and cal.holidays == CAL.holidays


def test_a_year_is_added_by_dropping_its_file_into_the_directory(tmp_path) -> None:
    folder = calendar_dir(tmp_path)
    assert load_calendar_dir(folder).years == frozenset({2026})
    write(folder, "calendar_2027.json", FICTIONAL_2027)
    cal = load_calendar_dir(folder)
    assert cal.years == frozenset({2026, 2027})
    assert cal.holiday_name(date(2027, 1, 1)) == "元旦" and not cal.is_working_day(date(2027, 1, 1))
    # Thursday 2026-12-31 16:00 + 2 h: Friday 2027-01-01 off, then Monday.
    assert as_local(cal.add_working_hours(local(2026, 12, 31, 16, 0), 2)) == local(2027, 1, 4, 9, 0)


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({"calendar_2028": base_config(years={"2028": {"holidays": []}})},
         "calendar_2027.json is missing"),
        ({"calendar_2027": base_config(years={"2028": {"holidays": []}})},
         "calendar_2027.json: configures year(s) 2028; calendar_2027.json must configure "
         "exactly the whole year 2027"),
        ({"calendar_2027": base_config(years={"2027": {"holidays": []},
                                              "2028": {"holidays": []}})},
         "configures year(s) 2027, 2028"),
        ({"calendar_2027-draft": FICTIONAL_2027}, "calendar_2027-draft.json: a calendar file is named"),
        ({"calendar_2027": base_config(years={"2027": {"holidays": [
            {"name": "春节", "off": ["2027-02-06", "2027-02-06"]}]}})},
         "calendar_2027.json:1: $.years.2027.holidays[0].off[1]: year 2027: 2027-02-06 "
         "appears twice"),
        ({"calendar_2027": {**FICTIONAL_2027, "working_hours": [["09:00", "17:00"]]}},
         "calendar_2027.json: working_hours differs"),
    ],
)
def test_a_directory_breaking_a_rule_is_refused_naming_file_and_date(tmp_path, files, reason) -> None:
    folder = calendar_dir(tmp_path, **files)
    with pytest.raises(CalendarError) as info:
        load_calendar_dir(folder)
    assert reason in str(info.value), str(info.value)
    assert str(folder) in str(info.value)


def test_a_missing_or_empty_directory_is_refused(tmp_path) -> None:
    with pytest.raises(CalendarError, match="no such calendar directory"):
        load_calendar_dir(tmp_path / "nowhere")
    with pytest.raises(CalendarError, match="no calendar_<year>.json"):
        load_calendar_dir(tmp_path)


# --- the operators' warning before the calendar ends ------------------------------------------

WHERE = "日历目录 /srv/calendar"


@pytest.mark.parametrize("today", [date(2026, 1, 1), date(2026, 7, 1), date(2026, 10, 31)])
def test_no_warning_more_than_60_days_before_the_end(today: date) -> None:
    assert calendar_end_warning(CAL, today, WHERE) is None


@pytest.mark.parametrize(("today", "left"), [(date(2026, 11, 1), 60), (date(2026, 12, 31), 0)])
def test_a_chinese_warning_within_60_days_says_what_to_add_where(today: date, left: int) -> None:
    warning = calendar_end_warning(CAL, today, WHERE)
    assert warning is not None
    assert f"工作日历仅配置到 2026-12-31（还剩 {left} 天）" in warning
    assert "请在日历目录 /srv/calendar添加 calendar_2027.json" in warning
    assert "国务院办公厅关于2027年部分节假日安排的通知" in warning
    assert "2027-01-01 起的期限按周一至周五计算" in warning


def test_after_the_end_the_warning_says_so_and_names_every_missing_year() -> None:
    warning = calendar_end_warning(CAL, date(2027, 1, 5), WHERE)
    assert warning is not None and "已过期 5 天" in warning and "calendar_2027.json" in warning
    later = calendar_end_warning(CAL, date(2028, 2, 1), WHERE)
    assert later is not None and "calendar_2027.json、calendar_2028.json" in later


def test_the_window_follows_the_last_configured_year_and_can_be_set() -> None:
    two_years = WorkingCalendar.load([CAL_PATH, FICTIONAL_2027])
    assert calendar_end_warning(two_years, date(2026, 12, 1), WHERE) is None
    warning = calendar_end_warning(two_years, date(2027, 11, 30), WHERE)
    assert warning is not None and "2027-12-31" in warning and "calendar_2028.json" in warning
    assert calendar_end_warning(CAL, date(2026, 10, 1), WHERE, days_ahead=91) is not None
    assert calendar_end_warning(CAL, date(2026, 10, 1), WHERE, days_ahead=90) is None
