"""Working calendar: which instants are office working time, and exact arithmetic over them.

Pure: timezone, working hours, weekends, holidays and 调休 make-up days are configuration;
every operation costs O(calendar days spanned) and never steps minute by minute.

Conventions
-----------
* Every datetime argument must be timezone-aware; results are UTC-aware. Working time is
  computed in the calendar's local zone (Asia/Shanghai for the bundled calendars).
* Working intervals are half-open, ``[08:30, 12:00)``: 12:00 itself is not working time.
* ``add_working_hours(start, h)`` is the *earliest* instant ``t >= start`` with exactly ``h``
  hours of working time in ``[start, t)``. A deadline therefore lands at 17:30 (close of
  business), never at 08:30 the next working day, and a start outside working hours
  effectively begins at the next working instant.
* ``add_working_days(start, n)`` adds ``n × day_length`` of working time (day_length = the sum
  of the daily working intervals, 7 h for 08:30–12:00 + 14:00–17:30). From a working instant
  that is the same clock time on the n-th following working day; from outside working hours
  it counts from the next working instant, so 1 working day from Friday 18:00 is Monday
  17:30, and from 12:30 (lunch) it is 12:00 the next working day. ``n`` may be fractional.
* Dates in years that no loaded file configures raise ``CalendarRangeError`` (the default,
  ``"unknown_years": "error"``): a deadline computed without the State Council's notice for
  that year could be days off. ``"unknown_years": "weekdays"`` treats such years as plain
  Monday–Friday (minus the configured weekend) instead.

Calendar directory
------------------
A deployment's calendar is a directory of ``calendar_<year>.json`` files, one per year
(`load_calendar_dir`; the bundled one is gridflow/refdata). Each file configures exactly its
own year, whole; the years follow each other without a gap; every date appears once, in its
file's year; make-up working days (调休) fall on weekend days. A file that breaks a rule is
refused with its path and the date. `calendar_end_warning` tells operators, 60 days ahead,
that the last configured year is ending and which file to add (see docs/CALENDAR.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict

from gridflow.core.configfile import ConfigError, JsonDoc, JsonPath, doc_of, read_json

REFDATA_DIR = Path(__file__).resolve().parent.parent / "refdata"
WARN_DAYS_AHEAD = 60  # operators are told this many days before the calendar's last day
_FILE_NAME = re.compile(r"calendar_(\d{4})\.json")
UNKNOWN_YEARS_ERROR = "error"
UNKNOWN_YEARS_WEEKDAYS = "weekdays"
_MAX_SCAN_DAYS = (
    3 * 366
)  # no deadline spans this far; guards against a calendar with no working day

CalendarSource = str | Path | Mapping[str, Any]


class CalendarError(ValueError):
    """A calendar file that cannot be loaded; the message names the file and the reason."""


class CalendarRangeError(ValueError):
    """A date in a year that no loaded calendar configures (with ``unknown_years: error``)."""


@dataclass(frozen=True)
class WorkingCalendar:
    """A working calendar; build it with `WorkingCalendar.load` or `load_bundled_calendar`."""

    timezone: str
    working_hours: tuple[tuple[time, time], ...]
    weekend: frozenset[int]  # ISO weekdays, 1 = Monday ... 7 = Sunday
    holidays: Mapping[date, str]  # day off -> festival name (放假)
    makeup_workdays: Mapping[date, str]  # weekend day worked -> festival name (调休上班)
    years: frozenset[int]
    unknown_years: str = UNKNOWN_YEARS_ERROR
    sources: tuple[str, ...] = ()
    _tz: ZoneInfo = field(init=False, repr=False, compare=False)
    _segments_cache: dict[date, tuple[tuple[datetime, datetime], ...]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tz", ZoneInfo(self.timezone))

    # --- loading ---------------------------------------------------------------

    @classmethod
    def load(cls, source: CalendarSource | Sequence[CalendarSource]) -> WorkingCalendar:
        """Load one calendar (a JSON file path or an already-parsed dict) or several, merged.

        Several sources must agree on timezone, working hours, weekend and unknown_years;
        each configures its own years (a year configured twice is an error).
        """
        if isinstance(source, (str, Path, Mapping)):
            sources: list[CalendarSource] = [source]
        else:
            sources = list(source)
        if not sources:
            raise CalendarError("no calendar sources given")
        parts = [_parse_source(s) for s in sources]
        return _merge(parts)

    # --- days ----------------------------------------------------------------------

    @property
    def tzinfo(self) -> ZoneInfo:
        return self._tz

    @property
    def day_length(self) -> timedelta:
        """Working time in one working day (the unit of `add_working_days`)."""
        return sum((_wall(e) - _wall(s) for s, e in self.working_hours), timedelta(0))

    @property
    def covered_until(self) -> date | None:
        """The last day of the latest configured year (None when unknown years are weekdays).

        Deadlines past it raise `CalendarRangeError`; check it at start-up to warn in time.
        """
        if self.unknown_years == UNKNOWN_YEARS_WEEKDAYS:
            return None
        return date(max(self.years), 12, 31) if self.years else date.min

    def covers(self, day: date) -> bool:
        """Whether `day` is in a configured year (or unknown years are plain weekdays)."""
        return day.year in self.years or self.unknown_years == UNKNOWN_YEARS_WEEKDAYS

    def is_working_day(self, day: date | datetime) -> bool:
        """A make-up day (调休上班) works; a holiday does not; otherwise the weekend rule."""
        d = self._local_date(day) if isinstance(day, datetime) else day
        self._check_covered(d)
        if d in self.makeup_workdays:
            return True
        if d in self.holidays:
            return False
        return d.isoweekday() not in self.weekend

    def holiday_name(self, day: date) -> str | None:
        """The festival a day off or a make-up working day belongs to, if any."""
        return self.holidays.get(day) or self.makeup_workdays.get(day)

    # --- instants ----------------------------------------------------------------

    def next_working_instant(self, t: datetime) -> datetime:
        """`t` itself if it is working time, else the start of the next working interval."""
        cursor = _utc(t)
        day = self._local_date(t)
        for _ in range(_MAX_SCAN_DAYS):
            for seg_start, seg_end in self._segments(day):
                if cursor < seg_end:
                    return max(seg_start, cursor)
            day += timedelta(days=1)
        raise CalendarRangeError(f"no working time within {_MAX_SCAN_DAYS} days after {t}")

    def add_working_time(self, start: datetime, amount: timedelta) -> datetime:
        """The earliest instant with exactly `amount` of working time since `start`."""
        if amount < timedelta(0):
            raise ValueError(f"working time to add must not be negative, got {amount}")
        cursor = _utc(start)
        if amount == timedelta(0):
            return cursor
        remaining = amount
        day = self._local_date(start)
        for _ in range(_MAX_SCAN_DAYS):
            for seg_start, seg_end in self._segments(day):
                if seg_end <= cursor:
                    continue
                begin = max(seg_start, cursor)
                available = seg_end - begin
                if remaining <= available:
                    return begin + remaining
                remaining -= available
            day += timedelta(days=1)
        raise CalendarRangeError(f"no deadline within {_MAX_SCAN_DAYS} days after {start}")

    def add_working_hours(self, start: datetime, hours: float) -> datetime:
        """`start` plus `hours` (may be fractional) of working time; see module conventions."""
        return self.add_working_time(start, timedelta(hours=hours))

    def add_working_days(self, start: datetime, days: float) -> datetime:
        """`start` plus `days` × day_length of working time: same clock time, n working days on."""
        if days < 0:
            raise ValueError(f"working days to add must not be negative, got {days}")
        return self.add_working_time(start, self.day_length * days)

    def working_time_between(self, a: datetime, b: datetime) -> timedelta:
        """Working time in [a, b); negative when b is before a."""
        if b < a:
            return -self.working_time_between(b, a)
        lo, hi = _utc(a), _utc(b)
        total = timedelta(0)
        day, last = self._local_date(a), self._local_date(b)
        while day <= last:
            for seg_start, seg_end in self._segments(day):
                overlap = min(seg_end, hi) - max(seg_start, lo)
                if overlap > timedelta(0):
                    total += overlap
            day += timedelta(days=1)
        return total

    def working_seconds_between(self, a: datetime, b: datetime) -> float:
        """Working seconds in [a, b); negative when b is before a."""
        return self.working_time_between(a, b).total_seconds()

    # --- internals -------------------------------------------------------------

    def _local_date(self, t: datetime) -> date:
        return _require_aware(t).astimezone(self._tz).date()

    def _check_covered(self, d: date) -> None:
        if not self.covers(d):
            configured = ", ".join(str(y) for y in sorted(self.years)) or "none"
            raise CalendarRangeError(
                f"{d.isoformat()} is outside the configured calendar years ({configured}): "
                f"add calendar_{d.year}.json to the calendar directory (GRIDFLOW_CALENDAR_DIR, "
                f"docs/CALENDAR.md) from the State Council's holiday notice for {d.year}, "
                f'or set "unknown_years": "weekdays"'
            )

    def _segments(self, day: date) -> tuple[tuple[datetime, datetime], ...]:
        """The day's working intervals as UTC instants; empty on a non-working day."""
        cached = self._segments_cache.get(day)
        if cached is not None:
            return cached
        segments: tuple[tuple[datetime, datetime], ...] = ()
        if self.is_working_day(day):
            segments = tuple(
                (
                    datetime.combine(day, s, self._tz).astimezone(UTC),
                    datetime.combine(day, e, self._tz).astimezone(UTC),
                )
                for s, e in self.working_hours
            )
        self._segments_cache[day] = segments
        return segments


def load_bundled_calendar(years: Sequence[int] | None = None) -> WorkingCalendar:
    """The calendars shipped in gridflow/refdata (calendar_<year>.json), merged."""
    if years is None:
        return load_calendar_dir(REFDATA_DIR)
    wanted = {f"calendar_{y}.json" for y in years}
    paths = [p for p in sorted(REFDATA_DIR.glob("calendar_*.json")) if p.name in wanted]
    if not paths:
        raise CalendarError(f"no calendar_*.json for years {years} in {REFDATA_DIR}")
    return WorkingCalendar.load(paths)


def load_calendar_dir(directory: str | Path) -> WorkingCalendar:
    """Every ``calendar_<year>.json`` in `directory`, checked and merged.

    On top of what every calendar file must satisfy (each date once and in its year, make-up
    working days on weekend days): each file configures exactly the year its name says, and
    the years follow each other without a gap. Errors name the file (or the directory, for a
    missing year) and the date.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise CalendarError(f"{folder}: no such calendar directory")
    paths = sorted(folder.glob("calendar_*.json"))
    if not paths:
        raise CalendarError(f"{folder}: no calendar_<year>.json in the calendar directory")
    parts: list[_Parsed] = []
    for path in paths:
        match = _FILE_NAME.fullmatch(path.name)
        if match is None:
            raise CalendarError(f"{path}: a calendar file is named calendar_<year>.json, "
                                "e.g. calendar_2027.json")
        year = int(match.group(1))
        part = _parse_source(path)
        if part.years != {year}:
            got = ", ".join(str(y) for y in sorted(part.years)) or "none"
            raise CalendarError(f"{path}: configures year(s) {got}; calendar_{year}.json "
                                f'must configure exactly the whole year {year} ("years": '
                                f'{{"{year}": ...}}), one file per year')
        parts.append(part)
    years = sorted(y for part in parts for y in part.years)
    for before, after in zip(years, years[1:], strict=False):
        if after != before + 1:
            raise CalendarError(f"{folder}: calendar_{before + 1}.json is missing: the years "
                                f"must follow each other ({before}, then {after}); dates from "
                                f"{before + 1}-01-01 would have no holidays")
    return _merge(parts)


def calendar_end_warning(calendar: WorkingCalendar, today: date, where: str,
                         days_ahead: int = WARN_DAYS_AHEAD) -> str | None:
    """The operators' notice, in Chinese, that the configured years end soon (or have ended)
    and which file to add `where` (a Chinese phrase naming the calendar directory); None while
    the last configured day is more than `days_ahead` days after `today`. Pure: the caller
    passes its clock's date (in the calendar's zone)."""
    if not calendar.years:
        return (f"工作日历未配置任何年份，请在{where}添加 calendar_{today.year}.json"
                f"（依据国务院办公厅关于{today.year}年部分节假日安排的通知）")
    ending = _calendar_ending(calendar, today, days_ahead)
    if ending is None:
        return None
    end, when, needed = ending
    files = "、".join(f"calendar_{y}.json" for y in needed)
    notices = "、".join(f"{y}年" for y in needed)
    return (f"工作日历仅配置到 {end.isoformat()}（{when}），请在{where}添加 {files}"
            f"（依据国务院办公厅关于{notices}部分节假日安排的通知，格式同 calendar_{end.year}.json，"
            f"见 docs/CALENDAR.md），再重启 worker。未添加前，{end.year + 1}-01-01 起的期限按"
            f"周一至周五计算，不计法定节假日和调休。")


def calendar_end_notice_for_staff(calendar: WorkingCalendar, today: date,
                                  days_ahead: int = WARN_DAYS_AHEAD) -> str | None:
    """The same notice for the people on the pages (supervisors, departments): what it means
    for their deadlines and who fixes it, without the server's directories and files, which
    are the operators' (`calendar_end_warning`, `gridflow status`)."""
    if not calendar.years:
        return "工作日历未配置任何年份，期限无法按工作日计算，请联系系统管理员补充。"
    ending = _calendar_ending(calendar, today, days_ahead)
    if ending is None:
        return None
    end, when, needed = ending
    years = "、".join(f"{y}年" for y in needed)
    return (f"工作日历仅配置到 {end.isoformat()}（{when}），请系统管理员依据国务院办公厅关于"
            f"{years}部分节假日安排的通知补充{years}的工作日历。补充前，{end.year + 1}-01-01 起的"
            f"期限按周一至周五计算，不计法定节假日和调休。")


def _calendar_ending(calendar: WorkingCalendar, today: date, days_ahead: int
                     ) -> tuple[date, str, list[int]] | None:
    """The last configured day, how far `today` is from it (Chinese) and the years to add;
    None while that day is more than `days_ahead` days away."""
    last_year = max(calendar.years)
    end = date(last_year, 12, 31)
    left = (end - today).days
    if left > days_ahead:
        return None
    needed = list(range(last_year + 1, max(today.year, last_year + 1) + 1))
    when = f"还剩 {left} 天" if left >= 0 else f"已过期 {-left} 天"
    return end, when, needed


# --- parsing -------------------------------------------------------------------


@dataclass
class _Parsed:
    origin: str
    timezone: str
    working_hours: tuple[tuple[time, time], ...]
    weekend: frozenset[int]
    unknown_years: str
    years: frozenset[int]
    holidays: dict[date, str]
    makeup_workdays: dict[date, str]


class _Festival(BaseModel):
    name: str
    off: list[Any] = []  # dates are checked one by one below ("bad date", "appears twice")
    makeup_workdays: list[Any] = []


class _Year(BaseModel):
    model_config = ConfigDict(extra="forbid")

    holidays: list[_Festival] = []
    source: Any = None
    note: Any = None


class _CalendarFile(BaseModel):
    """calendar_<year>.json's shape (what each value must be is checked in _parse_fields)."""

    model_config = ConfigDict(extra="forbid")

    source: Any = None
    note: Any = None
    timezone: str = "Asia/Shanghai"
    working_hours: list[Any] = []
    weekend: list[Any] = [6, 7]
    unknown_years: str = UNKNOWN_YEARS_ERROR
    years: dict[str, _Year] = {}


class _At(ValueError):
    """A value of a calendar refused, with the JSON path where it stands."""

    def __init__(self, path: JsonPath, reason: str) -> None:
        super().__init__(reason)
        self.path = path


def _parse_source(source: CalendarSource) -> _Parsed:
    if isinstance(source, Mapping):
        return _parse(source, "<calendar dict>")
    try:
        doc = read_json(source)
        doc.validate(_CalendarFile)
    except ConfigError as exc:  # the file, the line, the JSON path and why
        raise CalendarError(str(exc)) from exc
    return _parse(doc.root, str(source), doc)


def _parse(raw: Mapping[str, Any], origin: str, doc: JsonDoc | None = None) -> _Parsed:
    try:
        return _parse_fields(raw, origin)
    except CalendarError:
        raise
    except _At as exc:  # file:line: $.path: reason (no line for a calendar given as a dict)
        where = doc if doc is not None else doc_of(raw, origin)
        raise CalendarError(str(where.error(exc.path, str(exc)))) from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise CalendarError(f"{origin}: {exc}") from exc


def _parse_fields(raw: Mapping[str, Any], origin: str) -> _Parsed:
    allowed = {"source", "note", "timezone", "working_hours", "weekend", "unknown_years", "years"}
    unknown = set(raw) - allowed
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} (allowed: {sorted(allowed)})")
    tz_name = raw.get("timezone", "Asia/Shanghai")
    try:
        ZoneInfo(str(tz_name))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise _At(("timezone",), f"unknown timezone {tz_name!r}") from exc
    unknown_years = str(raw.get("unknown_years", UNKNOWN_YEARS_ERROR))
    if unknown_years not in {UNKNOWN_YEARS_ERROR, UNKNOWN_YEARS_WEEKDAYS}:
        raise _At(("unknown_years",),
                  f"unknown_years must be 'error' or 'weekdays', got {unknown_years!r}")
    weekend = _parse_weekend(raw.get("weekend", [6, 7]))
    years_raw = raw.get("years", {})
    if not isinstance(years_raw, Mapping):
        raise _At(("years",), "'years' must be an object keyed by year, e.g. {\"2026\": {...}}")
    holidays: dict[date, str] = {}
    makeup: dict[date, str] = {}
    years: set[int] = set()
    for year_key, year_raw in years_raw.items():
        try:
            years.add(_parse_year_key(year_key))
        except ValueError as exc:
            raise _At(("years", year_key), str(exc)) from exc
        _parse_year(year_key, year_raw, weekend, holidays, makeup)
    return _Parsed(
        origin=origin,
        timezone=str(tz_name),
        working_hours=_parse_working_hours(raw.get("working_hours")),
        weekend=weekend,
        unknown_years=unknown_years,
        years=frozenset(years),
        holidays=holidays,
        makeup_workdays=makeup,
    )


def _parse_working_hours(value: Any) -> tuple[tuple[time, time], ...]:
    if not isinstance(value, list) or not value:
        raise _At(("working_hours",),
                  '\'working_hours\' must be a non-empty list of ["HH:MM", "HH:MM"] pairs')
    intervals: list[tuple[time, time]] = []
    for i, item in enumerate(value):
        at: JsonPath = ("working_hours", i)
        if not isinstance(item, list) or len(item) != 2:
            raise _At(at, f'working interval {item!r} must be a pair ["HH:MM", "HH:MM"]')
        start, end = _parse_time(item[0], at + (0,)), _parse_time(item[1], at + (1,))
        if start >= end:
            raise _At(at, f"working interval {item!r} must end after it starts")
        if intervals and start < intervals[-1][1]:
            raise _At(at, f"working interval {item!r} overlaps or precedes the one before it")
        intervals.append((start, end))
    return tuple(intervals)


def _parse_time(value: Any, at: JsonPath) -> time:
    if not isinstance(value, str):
        raise _At(at, f'time of day must be a string "HH:MM", got {value!r}')
    try:
        return time.fromisoformat(value)
    except ValueError as exc:
        raise _At(at, f'bad time of day {value!r} (expected "HH:MM")') from exc


def _parse_weekend(value: Any) -> frozenset[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and 1 <= d <= 7 for d in value):
        raise _At(("weekend",),
                  f"'weekend' must list ISO weekdays 1 (Mon) to 7 (Sun), got {value!r}")
    if len(set(value)) == 7:
        raise _At(("weekend",), "'weekend' cannot cover all seven days")
    return frozenset(value)


def _parse_year_key(key: Any) -> int:
    try:
        year = int(key)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"year key {key!r} is not a year") from exc
    if not 1970 <= year <= 2200:
        raise ValueError(f"year key {key!r} is out of range")
    return year


def _parse_year(
    key: str,
    value: Any,
    weekend: frozenset[int],
    holidays: dict[date, str],
    makeup: dict[date, str],
) -> None:
    if not isinstance(value, Mapping) or set(value) - {"holidays", "source", "note"}:
        raise _At(("years", key), f'year {key}: expected {{"holidays": [...]}}')
    festivals = value.get("holidays", [])
    if not isinstance(festivals, list):
        raise _At(("years", key, "holidays"), f"year {key}: 'holidays' must be a list")
    year = int(key)
    seen: dict[date, tuple[str, str]] = {}  # date -> (festival, kind): every date appears once
    for i, fest in enumerate(festivals):
        at: JsonPath = ("years", key, "holidays", i)
        if not isinstance(fest, Mapping) or not isinstance(fest.get("name"), str):
            raise _At(at, f"year {key}: each holiday needs a 'name', got {fest!r}")
        name = fest["name"]
        for d, where in _parse_dates(fest.get("off", []), f"{key} {name} off", at + ("off",)):
            _once(seen, d, year, name, "day off", where)
            holidays[d] = name
        for d, where in _parse_dates(fest.get("makeup_workdays", []),
                                     f"{key} {name} makeup_workdays", at + ("makeup_workdays",)):
            if d.isoweekday() not in weekend:
                raise _At(where, f"{name}: make-up working day {d} is not a weekend day")
            _once(seen, d, year, name, "make-up working day", where)
            makeup[d] = name


def _parse_dates(value: Any, what: str, at: JsonPath) -> list[tuple[date, JsonPath]]:
    """The dates of a list, each with its JSON path."""
    if not isinstance(value, list):
        raise _At(at, f'{what}: expected a list of "YYYY-MM-DD" dates')
    days: list[tuple[date, JsonPath]] = []
    for j, item in enumerate(value):
        try:
            days.append((date.fromisoformat(item), at + (j,)))
        except (TypeError, ValueError) as exc:
            raise _At(at + (j,), f'{what}: bad date {item!r} (expected "YYYY-MM-DD")') from exc
    return days


def _once(seen: dict[date, tuple[str, str]], d: date, year: int, name: str, kind: str,
          at: JsonPath) -> None:
    if d.year != year:
        raise _At(at, f"{name}: {kind} {d} is not in {year}: a year lists its own dates only")
    if d in seen:
        other, other_kind = seen[d]
        if other_kind != kind:
            raise _At(at, f"year {year}: {d} is both a day off and a make-up working day "
                          f"({other}, {name})")
        raise _At(at, f"year {year}: {d} appears twice ({other} and {name}, {kind}): "
                      "every date appears once")
    seen[d] = (name, kind)


def _put(target: dict[date, str], d: date, name: str, what: str) -> None:
    if target.get(d, name) != name:
        raise ValueError(f"{d} is a {what} of both {target[d]} and {name}")
    target[d] = name


def _merge(parts: list[_Parsed]) -> WorkingCalendar:
    first = parts[0]
    holidays: dict[date, str] = {}
    makeup: dict[date, str] = {}
    years: set[int] = set()
    for part in parts:
        for attr in ("timezone", "working_hours", "weekend", "unknown_years"):
            if getattr(part, attr) != getattr(first, attr):
                raise CalendarError(
                    f"{part.origin}: {attr} differs from {first.origin}; merged files must agree"
                )
        twice = years & part.years
        if twice:
            raise CalendarError(f"{part.origin}: year {min(twice)} is configured by two files")
        years |= part.years
        try:
            for d, name in part.holidays.items():
                _put(holidays, d, name, "day off")
            for d, name in part.makeup_workdays.items():
                _put(makeup, d, name, "make-up working day")
        except ValueError as exc:
            raise CalendarError(f"{part.origin}: {exc}") from exc
        clash = sorted(set(holidays) & set(makeup))
        if clash:
            raise CalendarError(f"{part.origin}: {clash[0]} is both a day off and a working day")
    return WorkingCalendar(
        timezone=first.timezone,
        working_hours=first.working_hours,
        weekend=first.weekend,
        holidays=holidays,
        makeup_workdays=makeup,
        years=frozenset(years),
        unknown_years=first.unknown_years,
        sources=tuple(p.origin for p in parts),
    )


def _require_aware(t: datetime) -> datetime:
    if not isinstance(t, datetime) or t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"datetimes must be timezone-aware, got {t!r}")
    return t


def _utc(t: datetime) -> datetime:
    return _require_aware(t).astimezone(UTC)


def _wall(t: time) -> timedelta:
    return timedelta(hours=t.hour, minutes=t.minute, seconds=t.second, microseconds=t.microsecond)
