"""The working calendar a deployment runs on (adapter over gridflow.core.calendar).

The calendar is the directory `settings.calendar_dir` (GRIDFLOW_CALENDAR_DIR; the bundled
gridflow/refdata when unset) of calendar_<year>.json files, checked on load
(`load_calendar_dir`). A worker reads it when it starts, so a year added there is picked up by
restarting the workers; `gridflow status` and the supervisors' board read it on every call,
and tell operators (in Chinese) 60 days ahead that its last year is ending and what to add.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from gridflow.core.calendar import (
    REFDATA_DIR,
    CalendarError,
    WorkingCalendar,
    calendar_end_notice_for_staff,
    calendar_end_warning,
    load_calendar_dir,
)
from gridflow.settings import Settings


def calendar_dir(settings: Settings) -> Path:
    return settings.calendar_dir or REFDATA_DIR


def _where(settings: Settings) -> str:
    """Where to add a year, as the Chinese notice names it."""
    if settings.calendar_dir is not None:
        return f"日历目录 {settings.calendar_dir}（GRIDFLOW_CALENDAR_DIR）"
    return f"日历目录 {REFDATA_DIR}（内置；或用 GRIDFLOW_CALENDAR_DIR 指定本单位的日历目录）"


def load_working_calendar(settings: Settings) -> WorkingCalendar:
    """The configured calendar, as its files say (CalendarError names a bad file and date)."""
    return load_calendar_dir(calendar_dir(settings))


def end_warning(calendar: WorkingCalendar, now: datetime, settings: Settings) -> str | None:
    """`calendar_end_warning` as of `now` (the caller's clock: domain time, as the deadlines
    computed over the calendar), on the calendar's local date."""
    return calendar_end_warning(calendar, now.astimezone(calendar.tzinfo).date(),
                                _where(settings))


def calendar_notices(settings: Settings, now: datetime, *, staff: bool = False) -> list[str]:
    """What operators must hear about the calendar as of `now`, in Chinese: that it ends
    soon (or ended) and what to add, or why it cannot be loaded. Never raises.

    `staff`: the notice for a page (the supervisors' board): what it means and who fixes it,
    never the server's directories, files or errors, which `gridflow status` tells operators."""
    try:
        calendar = load_working_calendar(settings)
    except CalendarError as exc:
        if staff:
            return ["工作日历无法加载，期限计算将停止，请联系系统管理员（gridflow status 可查看原因）。"]
        return [f"工作日历无法加载，worker 将无法启动：{exc}"]
    notice = (calendar_end_notice_for_staff(calendar, now.astimezone(calendar.tzinfo).date())
              if staff else end_warning(calendar, now, settings))
    return [notice] if notice else []
