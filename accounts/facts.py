"""What scope decisions need to know about a case, a task, a report or a photo, read from the
read models (accounts.roles decides; this module only looks things up).

Read-only. `None` means there is no such thing (yet): callers answer 404 for that exactly as
for something outside the caller's scope.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Engine, select
from sqlalchemy.orm import Session

from accounts.roles import (
    AUDITOR,
    COUNTY_LEADER,
    COUNTY_SUPERVISOR,
    DEPT_STAFF,
    GRID_WORKER,
    TOWNSHIP_SUPERVISOR,
    CaseFacts,
    Principal,
)
from sinks.models import Case, CommandOutcome, Photo, Report, Task


def case_facts(engine: Engine, case_id: str) -> CaseFacts | None:
    with Session(engine) as session:
        return _case(session, case_id)


def _case(session: Session, case_id: str, departments: frozenset[str] | None = None,
          ) -> CaseFacts | None:
    row = session.execute(select(Case.grid_code, Case.township_code, Case.reporter)
                          .where(Case.case_id == case_id)).first()
    if row is None:
        return None
    reporters = {r for (r,) in session.execute(
        select(Report.reporter).where(Report.case_id == case_id)) if r}
    if row.reporter:
        reporters.add(row.reporter)
    if departments is None:
        departments = frozenset(d for (d,) in session.execute(
            select(Task.department).where(Task.case_id == case_id)))
    return CaseFacts(case_id, row.grid_code or "", row.township_code or "",
                     frozenset(reporters), departments)


def case_seq(engine: Engine, case_id: str) -> int | None:
    """The seq of the case's last event in the read models (None: no such case there)."""
    with Session(engine) as session:
        return session.execute(select(Case.last_seq).where(Case.case_id == case_id)).scalar()


def task_facts(engine: Engine, task_id: str) -> CaseFacts | None:
    """The task's case, with only the task's own department (a department acts on its tasks)."""
    with Session(engine) as session:
        row = session.execute(select(Task.case_id, Task.department)
                              .where(Task.task_id == task_id)).first()
        if row is None:
            return None
        return _case(session, row.case_id, frozenset({row.department}))


def report_case(engine: Engine, report_id: str) -> str | None:
    with Session(engine) as session:
        return session.execute(select(Report.case_id).where(Report.report_id == report_id)
                               ).scalar()


def command_case(engine: Engine, command_id: str) -> str | None:
    with Session(engine) as session:
        return session.execute(select(CommandOutcome.case_id)
                               .where(CommandOutcome.command_id == command_id)).scalar()


def photo_cases(engine: Engine, sha256: str) -> list[str]:
    """The cases a photo (by content) belongs to."""
    with Session(engine) as session:
        return sorted({c for (c,) in session.execute(
            select(Photo.case_id).where(Photo.sha256 == sha256))})


def thumbnail_version(engine: Engine, sha256: str) -> str | None:
    """The thumbnail version PhotoArchived recorded for a photo (by content), if any."""
    with Session(engine) as session:
        return session.execute(
            select(Photo.thumbnail_version_id).where(Photo.sha256 == sha256,
                                                     Photo.thumbnail_version_id.isnot(None))
            .limit(1)).scalar()


def cases_in_scope(principal: Principal) -> ColumnElement[bool]:
    """A condition on `cases` selecting the cases the caller may see (accounts.roles.sees_case
    in SQL, for lists and counts)."""
    from sqlalchemy import false, or_, true

    conditions: list[ColumnElement[bool]] = []
    for g in principal.grants:
        if g.role == AUDITOR:
            return true()
        if g.role == GRID_WORKER:
            mine = select(Report.case_id).where(
                Report.reporter.like(f"worker:{_like(principal.account_id)}@%", escape="\\"))
            conditions += [Case.grid_code == g.scope, Case.case_id.in_(mine),
                           Case.reporter.like(f"worker:{_like(principal.account_id)}@%",
                                              escape="\\")]
        elif g.role == DEPT_STAFF:
            conditions.append(Case.case_id.in_(
                select(Task.case_id).where(Task.department == g.scope)))
        elif g.role == TOWNSHIP_SUPERVISOR and g.scope:
            conditions.append(Case.township_code == g.scope)
        elif g.role in (COUNTY_SUPERVISOR, COUNTY_LEADER) and g.scope:
            prefix = f"{_like(g.scope)}%"
            conditions += [Case.township_code.like(prefix, escape="\\"),
                           Case.grid_code.like(prefix, escape="\\")]
    return or_(*conditions) if conditions else false()


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def case_contacts(engine: Engine, case_id: str) -> list[dict[str, Any]]:
    """The residents' contact details the case's reports carry (their names, phones, e-mails
    for the call-back, 回访), oldest report first: [{report_id, contact}]. Personal data: show
    it through accounts.pii and record unmasked reads (accounts.access_log)."""
    from gridflow import events as ev
    from sinks.models import CaseEvent

    kinds = (ev.CASE_FILED, ev.REPORT_MERGED, ev.CASE_NOT_FILED)
    with Session(engine) as session:
        rows = session.execute(select(CaseEvent.data).where(
            CaseEvent.case_id == case_id, CaseEvent.type.in_(kinds))
            .order_by(CaseEvent.seq, CaseEvent.event_id)).all()
    out: list[dict[str, Any]] = []
    for (data,) in rows:
        report = data.get("report") if isinstance(data, dict) else None
        if not isinstance(report, dict):
            continue
        contact = report.get("contact")
        if isinstance(contact, dict) and any(str(v or "").strip() for v in contact.values()):
            out.append({"report_id": str(report.get("report_id", "")), "contact": contact})
    return out
