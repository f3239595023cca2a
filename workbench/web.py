"""What every page of the workbench and the console shares: the templates, the caller's
navigation, the CSRF field, Beijing time and working-time countdowns, and HTML errors.

Pure helpers plus `render`; nothing here writes. Every value a template shows is escaped
(Jinja2 autoescape); pages carry no inline script or style (CSP: script-src 'self').
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from accounts import credentials as cred
from accounts.access import SESSION_COOKIE
from accounts.roles import (
    AUDITOR,
    COUNTY_LEADER,
    COUNTY_SUPERVISOR,
    DEPT_STAFF,
    ROLE_NAMES_ZH,
    SUPERVISING,
    TOWNSHIP_SUPERVISOR,
    Principal,
)
from gridflow.core.calendar import WorkingCalendar
from producers.context import Context, ctx

LOCAL = timedelta(hours=8)  # pages speak Beijing time

ROLE_PHOTO_ZH = {"before": "上报照片", "after": "整改后照片", "progress": "处置进展照片",
                 "verification": "核查照片"}


def local_time(value: Any, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value.astimezone(UTC) + LOCAL).strftime(fmt)


def local_date(value: datetime) -> str:
    return local_time(value, "%Y-%m-%d")


def working_span(seconds: float, day_seconds: float) -> str:
    """Working time as people say it: 2个工作日3小时 / 3小时20分 / 15分钟 (absolute value)."""
    s = int(abs(seconds))
    day = int(day_seconds) or 8 * 3600
    days, rest = divmod(s, day)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}个工作日{hours}小时" if hours else f"{days}个工作日"
    if hours:
        return f"{hours}小时{minutes}分" if minutes else f"{hours}小时"
    return f"{minutes}分钟" if minutes else "不足1分钟"


@dataclass(frozen=True)
class Countdown:
    """How much working time is left until a deadline (negative: how far past it)."""

    due: datetime | None
    seconds: float | None  # working seconds; None when there is no deadline
    day_seconds: float

    @property
    def overdue(self) -> bool:
        return self.seconds is not None and self.seconds < 0

    @property
    def text(self) -> str:
        if self.seconds is None:
            return "—"
        span = working_span(self.seconds, self.day_seconds)
        return f"已超期{span}" if self.seconds < 0 else f"剩余{span}"

    @property
    def level(self) -> str:
        """CSS class: late / soon (under one working day) / ok."""
        if self.seconds is None:
            return "none"
        if self.seconds < 0:
            return "late"
        return "soon" if self.seconds < self.day_seconds else "ok"


def countdown(calendar: WorkingCalendar | None, now: datetime, due: datetime | None) -> Countdown:
    """Working time from `now` to `due` on the calendar (wall time where it cannot say)."""
    day = calendar.day_length.total_seconds() if calendar is not None else 8 * 3600
    if due is None:
        return Countdown(None, None, day)
    try:
        if calendar is None:
            raise ValueError("no calendar")
        seconds = calendar.working_seconds_between(now, due)
    except ValueError:
        seconds = (due - now).total_seconds()
    if seconds == 0 and due < now:
        seconds = -1.0  # past the deadline outside working hours: overdue all the same
    return Countdown(due, seconds, day)


# --- the caller -------------------------------------------------------------------------------


def departments_of(caller: Principal) -> list[str]:
    return sorted(caller.scopes(DEPT_STAFF))


def supervises(caller: Principal) -> bool:
    return caller.has(*SUPERVISING, AUDITOR)


def board_townships(caller: Principal) -> list[str] | None:
    """Whose figures the caller's board counts: the county's (None) or their townships'."""
    if caller.has(COUNTY_SUPERVISOR, COUNTY_LEADER, AUDITOR):
        return None
    return sorted(caller.scopes(TOWNSHIP_SUPERVISOR))


def role_line(c: Context, caller: Principal) -> str:
    parts = []
    for g in caller.grants:
        scope = ""
        if g.scope in c.ref.departments:
            scope = c.ref.departments[g.scope].name
        elif g.scope:
            scope = c.ref.area_name(g.scope)
        parts.append(f"{ROLE_NAMES_ZH.get(g.role, g.role)}{('·' + scope) if scope else ''}")
    return "；".join(parts)


def csrf_for(request: Request) -> str:
    """The CSRF token of the browser session (empty for bearer callers, who need none)."""
    token = request.cookies.get(SESSION_COOKIE)
    return cred.csrf_token(token) if token else ""


def new_form_key() -> str:
    """A fresh idempotency key for one rendered form: submitting it twice is one command."""
    return uuid.uuid4().hex


def safe_next(target: str | None, default: str = "/w/") -> str:
    """A local path to go to after signing in (never another site)."""
    from accounts.web import safe_next as accounts_safe_next

    return accounts_safe_next(target, default)


def query(base: str, **params: Any) -> str:
    kept = {k: v for k, v in params.items() if v not in (None, "", False)}
    return f"{base}?{urlencode(kept)}" if kept else base


# --- templates ----------------------------------------------------------------------------------

_env = Environment(
    loader=PackageLoader("workbench", "templates"),
    autoescape=select_autoescape(["html", "svg"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters["local_time"] = local_time
_env.filters["urlq"] = lambda s: quote(str(s), safe="")
_env.globals["ROLE_PHOTO_ZH"] = ROLE_PHOTO_ZH


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    c = ctx(request)
    caller: Principal | None = context.get("caller")
    nav = nav_for(c, caller) if caller is not None else []
    page = _env.get_template(template).render(
        request=request,
        county=c.ref.county.name,
        csrf=csrf_for(request),
        nav=nav,
        path=request.url.path,
        role_line=role_line(c, caller) if caller is not None else "",
        **context,
    )
    return page_response(page, status)


def render_text(template: str, **context: Any) -> str:
    return _env.get_template(template).render(**context)


def page_response(html: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(html, status_code=status, headers=page_headers())


def page_headers() -> dict[str, str]:
    """The pages' own headers; the app's accounts.web.SecurityHeaders adds the CSP (no inline
    script or style, frame ancestors as configured) and the rest to every response."""
    return {"Cache-Control": "no-store"}


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def nav_for(c: Context, caller: Principal) -> list[dict[str, str]]:
    """The top navigation: each department's workbench, the console and the board."""
    links = []
    for code in departments_of(caller):
        dept = c.ref.departments.get(code)
        name = dept.short_name if dept and dept.level == "county" else (dept.name if dept else code)
        links.append({"href": f"/w/d/{quote(code)}/inbox", "label": f"部门工作台·{name}",
                      "key": f"/w/d/{code}/"})
    if supervises(caller):
        links.append({"href": "/s/", "label": "督办台", "key": "/s/q"})
        links.append({"href": "/s/board", "label": "督办看板", "key": "/s/board"})
        links.append({"href": "/s/cases", "label": "案件查询", "key": "/s/cases"})
    return links


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")
