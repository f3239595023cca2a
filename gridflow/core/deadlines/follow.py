"""Following a case's events: which stage clocks they start, move or stop, and the command a
due item becomes (what the deadline processor does with each).

Pure and idempotent: the same events give the same book; each event is read through its typed
payload (gridflow.contract).
"""

from __future__ import annotations

from datetime import datetime

from gridflow.contract import payloads as ct
from gridflow.contract.payloads import given
from gridflow.core.calendar import WorkingCalendar
from gridflow.core.deadlines.book import DeadlineBook
from gridflow.core.deadlines.planning import DueItem, plan_deadlines
from gridflow.core.sla import SlaPolicy
from gridflow.events import Message, iso, parse_ts

# The events that start, move or stop a stage clock; follow_event ignores every other type,
# so a reader may skip those unread (`FOLLOWED_TYPES`, by the envelope's type).
FOLLOWED: tuple[type[ct.Event], ...] = (
    ct.TaskDispatched, ct.TaskSigned, ct.TaskProgressNoted, ct.TaskResolved, ct.TaskReopened,
    ct.ExtensionGranted, ct.TaskVerified, ct.TaskCancelled, ct.TaskSentBack, ct.TaskClosed,
)
FOLLOWED_TYPES = frozenset(c.TYPE for c in FOLLOWED)


def command_for(item: DueItem) -> Message:
    return Message(id=item.id, type=item.command_type, case_id=item.case_id, at=iso(item.fire_at),
                   actor="system:deadlines", data=item.command_data(), causation_id=item.id)


def follow_event(book: DeadlineBook, event: Message, policy: SlaPolicy,
                 calendar: WorkingCalendar, department_levels: dict[str, str]) -> None:
    """Start, move or stop stage clocks as the case's events say. Idempotent.

    Breaches are first reported at the ladder level of the task's department (a county
    department's overdue task goes to county leadership next, not to the village).
    Warnings already past when a clock is picked up (the resolve clock runs from
    dispatch but is watched from signing) are not replayed.
    """
    if event.type not in FOLLOWED_TYPES or not event.known:
        return
    e = event.body
    task_id = str(getattr(e, "task_id", ""))
    at = event.at_dt
    base_level = policy.start_level(department_levels.get(str(getattr(e, "department", "")), ""))
    category_code = str(given(getattr(e, "category_code", "")))

    def start(stage: str, start_at: str | datetime, due: str) -> None:
        start_dt = parse_ts(start_at) if isinstance(start_at, str) else start_at
        book.upsert(plan_deadlines(
            case_id=event.case_id, task_id=task_id, stage=stage, start=start_dt, policy=policy,
            calendar=calendar, category_code=category_code,
            due_at=parse_ts(due), base_level=base_level, not_before=at,
        ))

    match e:
        case ct.TaskDispatched():
            start("sign", event.at, e.sign_due)
        case ct.TaskSigned():
            book.cancel(task_id, "sign")
            start("resolve", given(e.dispatched_at) or event.at, given(e.resolve_due))
        case ct.TaskProgressNoted():
            book.note_progress(task_id, "resolve", at)
        case ct.TaskResolved():
            book.cancel(task_id, "resolve")
            start("verify", event.at, e.verify_due)
        case ct.TaskReopened():
            book.cancel(task_id)
            start("resolve", event.at, e.resolve_due)
        case ct.ExtensionGranted():
            entry = book.get(task_id, "resolve")
            if entry is not None:
                book.cancel(task_id, "resolve")
                book.upsert(plan_deadlines(
                    case_id=event.case_id, task_id=task_id, stage="resolve", start=entry.start,
                    policy=policy, calendar=calendar, category_code=category_code,
                    due_at=parse_ts(e.resolve_due),
                    base_level=entry.base_level, not_before=at,
                ))
        case ct.TaskVerified() | ct.TaskCancelled() | ct.TaskSentBack() | ct.TaskClosed():
            book.cancel(task_id)
        case _:
            pass
