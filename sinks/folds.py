"""One function per event type: how an event changes the read-model rows of its case.

Each reads the event's typed payload (gridflow.contract, validated when the record was
decoded) and the rows `sinks.projector.ReadModels` holds. Empty strings are stored as NULL, a
timestamp as an aware datetime. Deterministic: the same events in the same order give the
same rows. A function that raises leaves every row as it was (ReadModels undoes it).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from gridflow.contract import (
    CaseClosed,
    CaseFiled,
    CaseNotFiled,
    CaseRated,
    CaseWhistled,
    CommandRefused,
    DeadlineBreached,
    DeadlineWarned,
    ExtensionGranted,
    ExtensionRefused,
    ExtensionRequested,
    Message,
    PhotoArchived,
    PhotoData,
    ReportData,
    ReportMerged,
    TaskAssigned,
    TaskCancelled,
    TaskClosed,
    TaskDispatched,
    TaskEscalated,
    TaskProgressNoted,
    TaskReopened,
    TaskResolved,
    TaskSentBack,
    TaskSigned,
    TaskVerified,
    derived_id,
    given,
    parse_ts,
    report_of,
)
from gridflow.core import case as core

if TYPE_CHECKING:
    from sinks.projector import ReadModels

# Deadline state of a task's current clock; a new stage or a moved deadline restarts it.
ON_TIME, WARNED, OVERDUE, ESCALATED = "on_time", "warned", "overdue", "escalated"

Handler = Callable[["ReadModels", Message, Any, datetime, dict[str, Any]], None]


def ts(value: str | None) -> datetime | None:
    """A payload's ISO 8601 instant as an aware datetime; None for "" (not set)."""
    return parse_ts(value) if value else None


def add_photos(rm: ReadModels, m: Message, at: datetime, photos: list[PhotoData], role: str,
               report_id: str | None = None, task_id: str | None = None) -> None:
    """A photos row per reference an event carries (not archived yet)."""
    for index, p in enumerate(photos):
        rm.add_photo(
            id=derived_id("photo", m.id, str(index)),
            case_id=m.case_id,
            report_id=report_id,
            task_id=task_id,
            role=given(p.role) or role,
            incoming_bucket=p.bucket or None,
            incoming_key=p.key or None,
            sha256=p.sha256,
            size=p.size,
            content_type=p.content_type or None,
            event_id=m.id,
            added_at=at,
        )


def _record_report(rm: ReadModels, m: Message, at: datetime, report: ReportData, merged: bool,
                   distance_m: float | None = None) -> None:
    report_id = report.report_id or None
    reporter = report.reporter or m.actor
    if report_id:
        rm.reports.add(
            report_id=report_id,
            case_id=m.case_id,
            source=report.source or reporter.partition(":")[0],
            reporter=reporter,
            category_code=report.category_code or None,
            description=report.description or None,
            address=report.address or None,
            lat=report.lat,
            lon=report.lon,
            captured_at=ts(report.captured_at),
            submitted_at=ts(report.submitted_at) or at,
            merged=merged,
            distance_m=distance_m,
            photo_count=len(report.photos),
            recorded_at=at,
        )
    add_photos(rm, m, at, report.photos, "before", report_id=report_id)


def _case_from_report(case: dict[str, Any], report: ReportData, m: Message) -> None:
    reporter = report.reporter or m.actor
    case.update(
        report_id=report.report_id or None,
        reporter=reporter,
        source=report.source or reporter.partition(":")[0],
        lat=report.lat,
        lon=report.lon,
        description=report.description or None,
        address=report.address or None,
    )


def case_filed(rm: ReadModels, m: Message, e: CaseFiled, at: datetime,
               case: dict[str, Any]) -> None:
    report = report_of(e.report)
    _record_report(rm, m, at, report, merged=False)
    _case_from_report(case, report, m)
    case.update(
        status="open",
        category_code=e.category_code or None,
        category_name=e.category_name or None,
        severity=e.severity,
        grid_code=e.grid_code or None,
        village_code=e.village_code or None,
        township_code=e.township_code or None,
        cross_grid=e.cross_grid,
        departments=list(e.departments),
        routing_reason=e.routing_reason or None,
        filed_at=at,
    )


def case_not_filed(rm: ReadModels, m: Message, e: CaseNotFiled, at: datetime,
                   case: dict[str, Any]) -> None:
    report = report_of(e.report)
    _record_report(rm, m, at, report, merged=False)
    _case_from_report(case, report, m)
    case.update(
        status="not_filed",
        category_code=report.category_code or None,
        not_filed_code=e.code or None,
        not_filed_reason_zh=e.reason_zh or None,
        not_filed_reason_en=e.reason_en or None,
    )


def report_merged(rm: ReadModels, m: Message, e: ReportMerged, at: datetime,
                  case: dict[str, Any]) -> None:
    _record_report(rm, m, at, report_of(e.report), merged=True, distance_m=e.distance_m)
    if case["status"] == "new":  # the log reached us without its CaseFiled
        case["status"] = e.case_status or "open"


def task_dispatched(rm: ReadModels, m: Message, e: TaskDispatched, at: datetime,
                    case: dict[str, Any]) -> None:
    task = rm.task(m.case_id, e.task_id, e.department, at)
    task.update(
        department=e.department,
        state=core.DISPATCHED,
        dispatch_reason=e.reason or None,
        replaces_task=given(e.replaces_task) or None,
        category_code=e.category_code or case["category_code"],
        grid_code=e.grid_code or case["grid_code"],
        severity=e.severity or case["severity"],
        dispatched_at=at,
        sign_due=ts(e.sign_due),
        resolve_due=ts(e.resolve_due),
        whistled=e.whistled,
    )
    _restart_clock(task)


def photo_archived(rm: ReadModels, m: Message, e: PhotoArchived, at: datetime,
                   case: dict[str, Any]) -> None:
    sha, key = e.sha256 or None, e.source_key or None
    matches = rm.find_photos(m.case_id, sha, key)
    for field, wanted in (("role", e.role or None), ("report_id", e.report_id or None),
                          ("task_id", e.task_id or None)):
        narrowed = [pid for pid in matches if rm.photos.rows[pid][field] == wanted]
        if wanted and narrowed:
            matches = narrowed
    if not matches:  # archived before we saw the event that referenced it
        row = rm.add_photo(
            id=derived_id("photo", m.id, "archived"),
            case_id=m.case_id,
            report_id=e.report_id or None,
            task_id=e.task_id or None,
            role=e.role or "before",
            incoming_bucket=e.source_bucket or None,
            incoming_key=key,
            sha256=sha or "",
            size=e.size,
            event_id=m.id,
            added_at=at,
        )
        matches = [row["id"]]
    exif = e.exif
    status = e.status or "archived"
    for pid in matches:
        rm.photos.edit(pid).update(
            archive_status=status,
            archive_problem=given(e.problem) or None,
            archive_bucket=e.archive_bucket or None,
            archive_key=e.archive_key or None,
            thumbnail_key=e.thumbnail_key or None,
            archive_version_id=given(e.archive_version_id) or None,
            thumbnail_version_id=given(e.thumbnail_version_id) or None,
            width=given(e.width, None),
            height=given(e.height, None),
            exif_taken_at=ts(given(exif.taken_at, None)),
            exif_lat=given(exif.lat, None),
            exif_lon=given(exif.lon, None),
            archived_at=at if status == "archived" else None,
        )


def task_signed(rm: ReadModels, m: Message, e: TaskSigned, at: datetime,
                case: dict[str, Any]) -> None:
    task = rm.task(m.case_id, e.task_id, e.department, at)
    task.update(state=core.SIGNED, signed_at=at, on_time_sign=e.on_time)
    task["resolve_due"] = ts(given(e.resolve_due)) or task["resolve_due"]
    _restart_clock(task)


def task_progress_noted(rm: ReadModels, m: Message, e: TaskProgressNoted, at: datetime,
                        case: dict[str, Any]) -> None:
    task = rm.task(m.case_id, e.task_id, "", at)
    task["state"] = core.IN_PROGRESS
    add_photos(rm, m, at, e.photos, "progress", task_id=task["task_id"])


def task_resolved(rm: ReadModels, m: Message, e: TaskResolved, at: datetime,
                  case: dict[str, Any]) -> None:
    task = rm.task(m.case_id, e.task_id, e.department, at)
    task.update(
        state=core.RESOLVED,
        resolved_at=at,
        verify_due=ts(e.verify_due),
        on_time_resolve=e.on_time,
    )
    _restart_clock(task)
    add_photos(rm, m, at, e.photos, "after", task_id=task["task_id"])


def task_sent_back(rm: ReadModels, m: Message, e: TaskSentBack, at: datetime,
                   case: dict[str, Any]) -> None:
    task = rm.task(m.case_id, e.task_id, e.department, at)
    task.update(
        state=core.SENT_BACK,
        closed_at=at,
        sent_back=True,
        sent_back_reason=e.reason or None,
        reroute_to=e.reroute_to or None,
    )


def task_verified(rm: ReadModels, m: Message, e: TaskVerified, at: datetime,
                  case: dict[str, Any]) -> None:
    task = rm.task(m.case_id, e.task_id, e.department, at)
    task.update(state=core.CLOSED, closed_at=at)
    add_photos(rm, m, at, given(e.photos, []), "verification", task_id=task["task_id"])


def task_reopened(rm: ReadModels, m: Message, e: TaskReopened, at: datetime,
                  case: dict[str, Any]) -> None:
    # Like the aggregate: resolved_at stays (the first resolution), the resolve clock restarts.
    task = rm.task(m.case_id, e.task_id, e.department, at)
    task.update(
        state=core.IN_PROGRESS,
        closed_at=None,
        verify_due=None,
        reopened=e.reopened or task["reopened"] + 1,
        resolve_due=ts(e.resolve_due) or task["resolve_due"],
    )
    _restart_clock(task)
    if case["status"] == "closed":
        case.update(status="open", closed_at=None)
    add_photos(rm, m, at, given(e.photos, []), "verification", task_id=task["task_id"])


def task_cancelled(rm: ReadModels, m: Message, e: TaskCancelled, at: datetime,
                   case: dict[str, Any]) -> None:
    rm.task(m.case_id, e.task_id, e.department, at).update(state=core.CANCELLED, closed_at=at)


def task_closed(rm: ReadModels, m: Message, e: TaskClosed, at: datetime, case: dict[str, Any]) -> None:
    rm.task(m.case_id, e.task_id, "", at).update(state=core.CLOSED, closed_at=at)


def case_rated(rm: ReadModels, m: Message, e: CaseRated, at: datetime,
               case: dict[str, Any]) -> None:
    case.update(rating=e.score, rating_comment=e.comment or None, rated_at=at)


def case_closed(rm: ReadModels, m: Message, e: CaseClosed, at: datetime, case: dict[str, Any]) -> None:
    case.update(status="closed", closed_at=at)


def extension_requested(rm: ReadModels, m: Message, e: ExtensionRequested, at: datetime,
                        case: dict[str, Any]) -> None:
    rm.task(m.case_id, e.task_id, e.department, at)["pending_extension"] = {
        "request_id": e.request_id,
        "days": e.days,
        "reason": e.reason,
        "requested_at": m.at,
    }


def extension_granted(rm: ReadModels, m: Message, e: ExtensionGranted, at: datetime,
                      case: dict[str, Any]) -> None:
    task = rm.task(m.case_id, e.task_id, e.department, at)
    task.update(
        pending_extension=None,
        extensions=task["extensions"] + 1,
        resolve_due=ts(e.resolve_due) or task["resolve_due"],
    )
    _restart_clock(task)


def extension_refused(rm: ReadModels, m: Message, e: ExtensionRefused, at: datetime,
                      case: dict[str, Any]) -> None:
    rm.task(m.case_id, e.task_id, e.department, at)["pending_extension"] = None


def case_whistled(rm: ReadModels, m: Message, e: CaseWhistled, at: datetime,
                  case: dict[str, Any]) -> None:
    case["whistled_at"] = case["whistled_at"] or at


def deadline_warned(rm: ReadModels, m: Message, e: DeadlineWarned, at: datetime,
                    case: dict[str, Any]) -> None:
    task = rm.task(m.case_id, e.task_id, e.department, at)
    if task["deadline_state"] == ON_TIME:
        task["deadline_state"] = WARNED
    task.update(last_warned_stage=e.stage or None, last_warned_fraction=e.fraction)


def deadline_breached(rm: ReadModels, m: Message, e: DeadlineBreached, at: datetime,
                      case: dict[str, Any]) -> None:
    task = rm.task(m.case_id, e.task_id, e.department, at)
    if task["deadline_state"] in (ON_TIME, WARNED):
        task["deadline_state"] = OVERDUE


def task_escalated(rm: ReadModels, m: Message, e: TaskEscalated, at: datetime,
                   case: dict[str, Any]) -> None:
    task = rm.task(m.case_id, e.task_id, e.department, at)
    task.update(
        deadline_state=ESCALATED,
        escalation_level=e.level or task["escalation_level"] + 1,
        escalation_level_code=e.level_code or None,
    )


def task_assigned(rm: ReadModels, m: Message, e: TaskAssigned, at: datetime,
                  case: dict[str, Any]) -> None:
    rm.task(m.case_id, e.task_id, e.department, at).update(
        assignee=e.assignee or None, assignee_name=e.assignee_name or None, assigned_at=at)


def command_refused(rm: ReadModels, m: Message, e: CommandRefused, at: datetime,
                    case: dict[str, Any]) -> None:
    """Nothing changes but the command's outcome (written by ReadModels.fold)."""


def _restart_clock(task: dict[str, Any]) -> None:
    task.update(deadline_state=ON_TIME, last_warned_stage=None, last_warned_fraction=None)


HANDLERS: dict[str, Handler] = {
    CaseFiled.TYPE: case_filed,
    CaseNotFiled.TYPE: case_not_filed,
    ReportMerged.TYPE: report_merged,
    TaskDispatched.TYPE: task_dispatched,
    PhotoArchived.TYPE: photo_archived,
    TaskSigned.TYPE: task_signed,
    TaskProgressNoted.TYPE: task_progress_noted,
    TaskResolved.TYPE: task_resolved,
    TaskSentBack.TYPE: task_sent_back,
    TaskVerified.TYPE: task_verified,
    TaskReopened.TYPE: task_reopened,
    TaskCancelled.TYPE: task_cancelled,
    TaskClosed.TYPE: task_closed,
    CaseRated.TYPE: case_rated,
    CaseClosed.TYPE: case_closed,
    ExtensionRequested.TYPE: extension_requested,
    ExtensionGranted.TYPE: extension_granted,
    ExtensionRefused.TYPE: extension_refused,
    CaseWhistled.TYPE: case_whistled,
    DeadlineWarned.TYPE: deadline_warned,
    DeadlineBreached.TYPE: deadline_breached,
    TaskEscalated.TYPE: task_escalated,
    TaskAssigned.TYPE: task_assigned,
    CommandRefused.TYPE: command_refused,
}
