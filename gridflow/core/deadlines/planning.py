"""Planning a task stage's clock: the instants at which it wants attention (warnings, the
breach, escalations), and what is due when one of them comes.

Pure: policy and working calendar in, frozen values out; ids are deterministic, so the same
deadline always plans the same items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gridflow import events as ev
from gridflow.core.calendar import WorkingCalendar
from gridflow.core.sla import SlaPolicy, StageDeadline
from gridflow.events import derived_id, iso

WARN, BREACH, ESCALATE = "warn", "breach", "escalate"
KINDS: tuple[str, ...] = (WARN, BREACH, ESCALATE)
COMMAND_OF_KIND = {WARN: ev.WARN_DEADLINE, BREACH: ev.BREACH_DEADLINE, ESCALATE: ev.ESCALATE_TASK}
BUCKET_SECONDS = 60
CURSOR = "~cursor"
KIND_LETTER = {WARN: "w", BREACH: "b", ESCALATE: "e"}
KIND_OF_LETTER = {v: k for k, v in KIND_LETTER.items()}


@dataclass(frozen=True)
class Due:
    """One instant at which a stage's clock wants attention."""

    kind: str  # warn | breach | escalate
    at: datetime  # when it fires (UTC)
    fraction: float | None = None  # warn: share of the working time used
    level: int | None = None  # escalate: the ladder index the task goes up to




@dataclass(frozen=True)
class DeadlineEntry:
    """The pending instants of one task stage (keyed by task_id and stage)."""

    task_id: str
    stage: str  # sign | resolve | verify
    case_id: str
    start: datetime
    due_at: datetime  # the stage deadline, as the case holds it (e.g. TaskState.resolve_due)
    dues: tuple[Due, ...]
    base_level: int = 0  # ladder index a breach is reported at
    level: int | None = None  # ladder level reached since the breach; None before it
    # marks (`due_mark`) of the items already returned for this deadline
    fired: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return entry_key(self.task_id, self.stage)

    def due_id(self, due: Due) -> str:
        return item_id(self.task_id, self.stage, due.kind, self.due_at, due.fraction, due.level)

    def has_fired(self, due: Due) -> bool:
        """Whether the item of `due` was already returned for this deadline."""
        return due_mark(due) in self.fired




@dataclass(frozen=True)
class DueItem:
    """Something `pop_due` found due: turn it into a deadline command for the case."""

    id: str  # deterministic: the same deadline, kind and fraction/level always give this id
    kind: str
    case_id: str
    task_id: str
    stage: str
    due_at: datetime  # the stage deadline the item is about (what the case checks against)
    fire_at: datetime  # the instant it was scheduled for: use as the command's event time
    fraction: float | None = None
    level: int | None = None  # breach: the base level reported to; escalate: the new level
    level_code: str = ""
    level_name: str = ""
    notify: tuple[str, ...] = field(default=())

    @property
    def command_type(self) -> str:
        return COMMAND_OF_KIND[self.kind]

    def command_data(self) -> dict[str, Any]:
        """The payload of the WarnDeadline / BreachDeadline / EscalateTask command."""
        data: dict[str, Any] = {
            "task_id": self.task_id,
            "stage": self.stage,
            "due_at": iso(self.due_at),
            "item_id": self.id,
        }
        if self.kind == WARN:
            data["fraction"] = self.fraction
        if self.kind == ESCALATE:
            data.update(
                level=self.level,
                level_code=self.level_code,
                level_name=self.level_name,
                notify=list(self.notify),
                reason="超时未处置, 升级督办 / breached without progress",
            )
        return data


def entry_key(task_id: str, stage: str) -> str:
    return f"{task_id}#{stage}"


def item_id(
    task_id: str, stage: str, kind: str, due_at: datetime, fraction: float | None, level: int | None
) -> str:
    return derived_id("deadline", task_id, stage, kind, iso(due_at), _detail(fraction, level))


def _detail(fraction: float | None, level: int | None) -> str:
    return f"{fraction:g}" if fraction is not None else str(level if level is not None else "")


def due_mark(due: Due) -> str:
    """Short for the item id of `due` within one deadline: kind letter plus the id's detail."""
    return KIND_LETTER[due.kind] + _detail(due.fraction, due.level)


def plan_deadlines(
    *,
    case_id: str,
    task_id: str,
    stage: str,
    start: datetime,
    policy: SlaPolicy,
    calendar: WorkingCalendar,
    category_code: str = "",
    severity: int = 1,
    due_at: datetime | None = None,
    base_level: int = 0,
    not_before: datetime | None = None,
) -> DeadlineEntry:
    """The entry for one stage: warning instants and the breach instant.

    Pass `due_at` when the deadline is already decided (the events carry it: TaskDispatched
    sign_due, TaskSigned resolve_due, TaskResolved verify_due, ExtensionGranted, TaskReopened);
    otherwise the policy computes it. Warnings at or before `not_before` are left out (a clock
    picked up late need not replay its old warnings). Escalations are scheduled after the breach.
    """
    if due_at is None:
        deadline = policy.stage_deadline(category_code, severity, stage, start, calendar)
    else:
        deadline = policy.deadline_until(category_code, stage, start, due_at, calendar)
    return entry_from_deadline(case_id, task_id, deadline, base_level, not_before)


def entry_from_deadline(
    case_id: str,
    task_id: str,
    deadline: StageDeadline,
    base_level: int = 0,
    not_before: datetime | None = None,
) -> DeadlineEntry:
    warns = [
        Due(WARN, at.astimezone(UTC), fraction=f)
        for f, at in zip(deadline.warn_fractions, deadline.warn_at, strict=False)
        if not_before is None or at > not_before
    ]
    return DeadlineEntry(
        task_id=task_id,
        stage=deadline.stage,
        case_id=case_id,
        start=deadline.start.astimezone(UTC),
        due_at=deadline.due_at.astimezone(UTC),
        dues=(*warns, Due(BREACH, deadline.due_at.astimezone(UTC))),
        base_level=base_level,
    )


