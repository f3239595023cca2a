"""What the workbench keeps beside the API's context: the working calendar, the deadline
policy's extension limit, who people are by account id, the county map's projections, and the
hooks the department pages call (assignment, reply templates).

Built once when the workbench is installed (`WorkbenchState.build`); read-only afterwards except
for the small name cache.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from accounts.people import county_people
from accounts.roles import (
    COUNTY_LEADER,
    COUNTY_SUPERVISOR,
    DEPT_STAFF,
    TOWNSHIP_SUPERVISOR,
    CaseFacts,
    Principal,
    sees_case,
)
from gridflow.calendars import load_working_calendar
from gridflow.core.calendar import WorkingCalendar
from gridflow.core.sla import ExtensionLimit, load_bundled_policy
from producers.context import Context
from workbench import mapsvg
from workbench.team import ASSIGNABLE, Team

log = logging.getLogger(__name__)


@dataclass
class WorkbenchState:
    context: Context
    calendar: WorkingCalendar | None
    extension_limit: ExtensionLimit | None
    team: Team
    names: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, context: Context) -> WorkbenchState:
        try:
            calendar: WorkingCalendar | None = load_working_calendar(context.settings)
        except Exception:  # noqa: BLE001 - countdowns fall back to wall time, never fail a page
            log.exception("working calendar not loaded: countdowns use wall time")
            calendar = None
        try:
            limit: ExtensionLimit | None = load_bundled_policy().extension_limit
        except Exception:  # noqa: BLE001
            limit = None
        names: dict[str, str] = {}
        try:
            names = {str(p.account_id): p.name for p in county_people(context.ref)}
        except Exception:  # noqa: BLE001 - names fall back to the account store
            log.exception("people of the reference data not read")
        return cls(context, calendar, limit, Team(context), names)

    # --- people ---------------------------------------------------------------------------

    def person_name(self, account_id: str) -> str | None:
        if account_id in self.names:
            return self.names[account_id]
        try:
            name = self.context.accounts.get(account_id).name
        except Exception:  # noqa: BLE001 - an unknown id shows as itself
            return None
        self.names[account_id] = name
        return name

    # --- policy ---------------------------------------------------------------------------

    @property
    def extension_text(self) -> str:
        limit = self.extension_limit
        if limit is None:
            return "延期以工作日计, 每次不超过30个工作日。"
        return (f"按规定, 每项任务最多延期{limit.max_count}次, 每次不超过{limit.max_days_each:g}"
                f"个工作日, 累计不超过{limit.max_days_total:g}个工作日; 超出规定的申请不予受理。")

    # --- the case page ----------------------------------------------------------------------

    def case_map(self, case: dict[str, Any]) -> dict[str, Any] | None:
        """The case's township grids as SVG paths, its own grid marked, and its point."""
        ref = self.context.ref
        grid = ref.grids.get(case.get("grid_code") or "")
        township = grid.township_code if grid else (case.get("township_code") or "")
        grids = [g for g in ref.grids.values() if g.township_code == township]
        if not grids:
            return None
        p = mapsvg.projection(mapsvg.union(g.bbox for g in grids), 520, 340)
        lat, lon = case.get("lat"), case.get("lon")
        point = p.xy(lon, lat) if lon is not None and lat is not None and p.inside(lon, lat) \
            else None
        return {
            "width": p.width, "height": p.height,
            "grids": [{"d": mapsvg.grid_path(p, g), "name": g.name, "here": grid is not None
                       and g.code == grid.code} for g in sorted(grids, key=lambda g: g.code)],
            "point": point,
            "label": f"{ref.area_name(township)} · {grid.name if grid else '网格外'}",
            "coords": f"{lat:.5f}, {lon:.5f}" if lat is not None and lon is not None else "",
        }

    def supervisor_links(self, caller: Principal, f: Any, facts: CaseFacts) -> list[dict[str, str]]:
        out: list[dict[str, str]] = []
        if f.case.get("status") != "open":
            return out
        cid = quote(f.case["case_id"])
        if sees_case(caller, facts, (TOWNSHIP_SUPERVISOR, COUNTY_SUPERVISOR, COUNTY_LEADER)):
            out.append({"href": f"/s/cases/{cid}/whistle", "label": "吹哨报到", "kind": ""})
        if sees_case(caller, facts, (TOWNSHIP_SUPERVISOR, COUNTY_SUPERVISOR)):
            out.append({"href": f"/s/cases/{cid}/cancel", "label": "撤销案件", "kind": "warning"})
        return out

    async def decorate_case(self, request: Request, caller: Principal, f: Any) -> None:
        """Who works each task (二次派遣), and whether the caller may assign it."""
        for t in f.tasks:
            t.assignee_name = t.row.get("assignee_name") or t.row.get("assignee")
            if t.mine and t.state in ASSIGNABLE and self.team.is_head(caller, t.row["department"]):
                t.actions.append("assign")

    # --- the inbox ------------------------------------------------------------------------------

    async def inbox_extras(self, request: Request, caller: Principal, code: str,
                           page: Any) -> dict[str, Any]:
        """The inbox's assignment parts: the head's checkboxes and staff list, 我的任务."""
        staff_member = code in caller.scopes(DEPT_STAFF)
        head = self.team.is_head(caller, code)
        staff = await run_in_threadpool(self.team.staff, code) if staff_member else []
        names = {m.account_id: m.name for m in staff}
        my_count = await run_in_threadpool(self._my_count, code, caller.account_id) \
            if staff_member else 0
        return {
            "assignable": head and len(staff) > 1 and page.filters.tab != "done",
            "show_assignee": len(staff) > 1 or any(r.get("assignee") for r in page.rows),
            "my_tasks_link": (f"/w/d/{quote(code)}/inbox?mine={quote(caller.account_id)}"
                              if staff_member else None),
            "my_count": my_count, "staff": staff, "names": names.get,
            "templates_link": f"/w/d/{quote(code)}/templates" if staff_member else None,
        }

    def _my_count(self, code: str, account_id: str) -> int:
        from sqlalchemy import func, select
        from sqlalchemy.orm import Session

        from sinks.models import Task

        with Session(self.context.engine) as session:
            return int(session.execute(select(func.count()).select_from(Task).where(
                Task.department == code, Task.state.in_(ASSIGNABLE),
                Task.assignee == account_id)).scalar() or 0)

    # --- reply templates -------------------------------------------------------------------------

    async def reply_templates(self, request: Request, department: str,
                              kind: str) -> list[dict[str, Any]]:
        from workbench.team import templates_for_form

        return await run_in_threadpool(templates_for_form, self.context, department, kind)  # type: ignore[no-any-return]

    async def template_text(self, request: Request, department: str,
                            template_id: str) -> str | None:
        from workbench import replies

        if not template_id:
            return None
        found = await run_in_threadpool(replies.template, self.context.engine, department,
                                        template_id)
        return found.text if found is not None else None


def state_of(request: Request) -> WorkbenchState:
    return request.app.state.workbench  # type: ignore[no-any-return]
