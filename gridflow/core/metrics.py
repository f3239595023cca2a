"""数字城管 evaluation indicators (结案率, 按期结案率, 返工率, ...) per department and overall.

Pure and total: computed from plain task rows with `as_of` passed in, so the same rows give
the board as it stood on any past day; every rate with an empty denominator is None (shown
"—"), never an exception.

Row contract (one row per task, as the case aggregate keeps it)
--------------------------------------------------------------
``state`` is a task state of gridflow.core.case; ``closed_at`` is when the task reached a final
state (closed, sent_back or cancelled); ``resolved_at`` is the latest resolution (kept after a
rework); ``extended`` / ``sent_back`` / ``reopened`` are counts (or flags); ``rating`` (1–5)
with an optional ``rated_at``. Empty strings read as None; datetimes may be ISO 8601 strings; a
case-aggregate TaskState dict reads directly (``resolve_due`` and ``extensions`` are aliases).

Definitions (counts are tasks dispatched at or before ``as_of``)
---------------------------------------------------------------
* 派遣数 dispatched: every task dispatched.
* 退单数 sent_back: sent back (退单) by ``as_of``; 撤销数 cancelled likewise.
* 应办数 accepted: dispatched, less tasks that ended sent back or cancelled: the tasks the
  department kept. A send-back is re-dispatched to the right department and counts there;
  counting it against the sender too would punish correct send-backs, so the rates about
  handling use this base (a plain closed ÷ dispatched would).
* 结案数 closed: state closed with ``closed_at`` ≤ as_of.
* 应结案数 due_to_close: accepted tasks whose resolve deadline is ≤ as_of, plus accepted tasks
  already closed before their deadline came (数字城管: 到期应结 + 未到期已结).
* 按期结案数 closed_on_time: closed tasks whose (last) resolution was at or before the resolve
  deadline in force (an approved extension moves that deadline, as in practice).
* 处置数 resolved: accepted tasks resolved at least once by ``as_of``; 返工数 reworked: of
  those, tasks reopened at least once (核查不通过 or 回访不满意).
* 延期数 extended: accepted tasks granted at least one extension.
* 在办数 open: dispatched, not yet in a final state at ``as_of``; 超期数 overdue: open, past the
  resolve deadline and not resolved-awaiting-verification.
* Rates: 结案率 = closed ÷ accepted; 按期结案率 = closed_on_time ÷ due_to_close;
  返工率 = reworked ÷ resolved; 延期率 = extended ÷ accepted; 退单率 = sent_back ÷ dispatched;
  满意度 = mean rating (1–5) of accepted tasks rated by ``as_of`` (a rating without
  ``rated_at`` counts whenever it is present).

Rows carry current counts, not their history: an extension or rework after ``as_of`` still
counts, and a closure undone by a later rework is not visible in the row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from gridflow.events import parse_ts

DISPATCHED, SIGNED, IN_PROGRESS, RESOLVED = "dispatched", "signed", "in_progress", "resolved"
CLOSED, SENT_BACK, CANCELLED = "closed", "sent_back", "cancelled"
TASK_STATES = frozenset({DISPATCHED, SIGNED, IN_PROGRESS, RESOLVED, CLOSED, SENT_BACK, CANCELLED})
FINAL_STATES = frozenset({CLOSED, SENT_BACK, CANCELLED})

NO_VALUE = "—"
OVERALL_LABEL = "全部"

INDICATOR_LABELS: dict[str, str] = {
    "department": "部门",
    "dispatched": "派遣数",
    "accepted": "应办数",
    "sent_back": "退单数",
    "cancelled": "撤销数",
    "open": "在办数",
    "overdue": "超期数",
    "resolved": "处置数",
    "closed": "结案数",
    "due_to_close": "应结案数",
    "closed_on_time": "按期结案数",
    "reworked": "返工数",
    "extended": "延期数",
    "rated": "评价数",
    "close_rate": "结案率",
    "on_time_close_rate": "按期结案率",
    "rework_rate": "返工率",
    "extension_rate": "延期率",
    "send_back_rate": "退单率",
    "mean_satisfaction": "满意度",
}
RATE_FIELDS = (
    "close_rate",
    "on_time_close_rate",
    "rework_rate",
    "extension_rate",
    "send_back_rate",
)


@dataclass(frozen=True)
class TaskRow:
    """One task as the indicators need it (see the module's row contract)."""

    department: str
    state: str
    dispatched_at: datetime
    resolve_due_at: datetime | None = None
    resolved_at: datetime | None = None
    closed_at: datetime | None = None
    extended: int = 0
    sent_back: int = 0
    reopened: int = 0
    rating: int | None = None
    rated_at: datetime | None = None
    task_id: str = ""

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> TaskRow:
        """A row from a dict (a read-model row); unknown keys are ignored."""
        where = f"task row {d.get('task_id') or '?'}"
        department, state = d.get("department"), d.get("state")
        if not isinstance(department, str) or not department:
            raise ValueError(f"{where}: department is required")
        if state not in TASK_STATES:
            raise ValueError(f"{where}: unknown state {state!r}")
        dispatched = _when(d.get("dispatched_at"), "dispatched_at", where)
        if dispatched is None:
            raise ValueError(f"{where}: dispatched_at is required")
        return cls(
            department=department,
            state=state,
            dispatched_at=dispatched,
            resolve_due_at=_when(
                d.get("resolve_due_at", d.get("resolve_due")), "resolve_due_at", where
            ),
            resolved_at=_when(d.get("resolved_at"), "resolved_at", where),
            closed_at=_when(d.get("closed_at"), "closed_at", where),
            extended=_count(d.get("extended", d.get("extensions")), "extended", where),
            sent_back=_count(d.get("sent_back"), "sent_back", where),
            reopened=_count(d.get("reopened"), "reopened", where),
            rating=_rating(d.get("rating"), where),
            rated_at=_when(d.get("rated_at"), "rated_at", where),
            task_id=str(d.get("task_id") or ""),
        )


@dataclass(frozen=True)
class Indicators:
    """The indicators of one department (or of all, department None) as of one instant."""

    department: str | None
    dispatched: int = 0
    accepted: int = 0
    sent_back: int = 0
    cancelled: int = 0
    open: int = 0
    overdue: int = 0
    resolved: int = 0
    closed: int = 0
    due_to_close: int = 0
    closed_on_time: int = 0
    reworked: int = 0
    extended: int = 0
    rated: int = 0
    close_rate: float | None = None
    on_time_close_rate: float | None = None
    rework_rate: float | None = None
    extension_rate: float | None = None
    send_back_rate: float | None = None
    mean_satisfaction: float | None = None

    def display(self) -> dict[str, str]:
        """Chinese label → display text: rates as percentages, None as "—"."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "department":
                text = OVERALL_LABEL if value is None else value
            elif f.name in RATE_FIELDS:
                text = format_rate(value)
            elif f.name == "mean_satisfaction":
                text = NO_VALUE if value is None else f"{value:.2f}"
            else:
                text = str(value)
            out[INDICATOR_LABELS[f.name]] = text
        return out


def department_indicators(
    rows: Iterable[TaskRow | Mapping[str, Any]], as_of: datetime
) -> list[Indicators]:
    """Indicators per department (sorted by department), then the overall line (None)."""
    parsed = [_row(r) for r in rows]
    by_dept: dict[str, list[TaskRow]] = {}
    for row in parsed:
        by_dept.setdefault(row.department, []).append(row)
    lines = [indicators_of(dept, by_dept[dept], as_of) for dept in sorted(by_dept)]
    return [*lines, indicators_of(None, parsed, as_of)]


def indicators_of(department: str | None, rows: Iterable[TaskRow], as_of: datetime) -> Indicators:
    """The indicators over `rows` (already one department's, or all) as of `as_of`."""
    c = _Counts()
    for row in rows:
        if row.dispatched_at <= as_of:
            c.add(row, as_of)
    return from_counts(department, c.__dict__)


# The counts every indicator is made of (what `from_counts` takes; a database can count them).
COUNT_FIELDS = ("dispatched", "accepted", "sent_back", "cancelled", "open", "overdue", "resolved",
                "closed", "due_to_close", "closed_on_time", "reworked", "extended", "rated",
                "rating_sum")


def from_counts(department: str | None, counts: Mapping[str, int]) -> Indicators:
    """The indicators of these counts (COUNT_FIELDS): the rates as the module defines them."""
    c = _Counts()
    for name in COUNT_FIELDS:
        setattr(c, name, int(counts.get(name) or 0))
    return Indicators(
        department=department,
        dispatched=c.dispatched,
        accepted=c.accepted,
        sent_back=c.sent_back,
        cancelled=c.cancelled,
        open=c.open,
        overdue=c.overdue,
        resolved=c.resolved,
        closed=c.closed,
        due_to_close=c.due_to_close,
        closed_on_time=c.closed_on_time,
        reworked=c.reworked,
        extended=c.extended,
        rated=c.rated,
        close_rate=ratio(c.closed, c.accepted),
        on_time_close_rate=ratio(c.closed_on_time, c.due_to_close),
        rework_rate=ratio(c.reworked, c.resolved),
        extension_rate=ratio(c.extended, c.accepted),
        send_back_rate=ratio(c.sent_back, c.dispatched),
        mean_satisfaction=ratio(c.rating_sum, c.rated),
    )


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator ÷ denominator, or None when there is nothing to divide by."""
    return None if not denominator else numerator / denominator


def format_rate(value: float | None) -> str:
    return NO_VALUE if value is None else f"{value * 100:.1f}%"


class _Counts:
    def __init__(self) -> None:
        self.dispatched = self.accepted = self.sent_back = self.cancelled = 0
        self.open = self.overdue = self.resolved = self.closed = 0
        self.due_to_close = self.closed_on_time = self.reworked = self.extended = 0
        self.rated = self.rating_sum = 0

    def add(self, row: TaskRow, as_of: datetime) -> None:
        self.dispatched += 1
        ended = row.state in FINAL_STATES and (row.closed_at is None or row.closed_at <= as_of)
        if not ended:
            self.open += 1
            self.overdue += _overdue(row, as_of)
        if (row.state == SENT_BACK and ended) or (row.state != SENT_BACK and row.sent_back > 0):
            self.sent_back += 1
        if ended and row.state in (SENT_BACK, CANCELLED):
            self.cancelled += row.state == CANCELLED
            return
        self.accepted += 1
        closed = ended and row.state == CLOSED
        due = row.resolve_due_at
        self.closed += closed
        self.due_to_close += closed or (due is not None and due <= as_of)
        self.closed_on_time += closed and _on_time(row)
        resolved = row.resolved_at is not None and row.resolved_at <= as_of
        self.resolved += resolved
        self.reworked += resolved and row.reopened > 0
        self.extended += row.extended > 0
        if row.rating is not None and (row.rated_at is None or row.rated_at <= as_of):
            self.rated += 1
            self.rating_sum += row.rating


def _overdue(row: TaskRow, as_of: datetime) -> bool:
    if row.resolve_due_at is None or row.resolve_due_at >= as_of:
        return False
    awaiting_verification = (
        row.state in (RESOLVED, CLOSED) and row.resolved_at is not None and row.resolved_at <= as_of
    )
    return not awaiting_verification


def _on_time(row: TaskRow) -> bool:
    done = row.resolved_at or row.closed_at
    return row.resolve_due_at is None or (done is not None and done <= row.resolve_due_at)


def _row(r: TaskRow | Mapping[str, Any]) -> TaskRow:
    return r if isinstance(r, TaskRow) else TaskRow.from_mapping(r)


def _when(value: Any, name: str, where: str) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{where}: {name} must be timezone-aware")
        return value
    try:
        return parse_ts(value, name)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc


def _count(value: Any, name: str, where: str) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool):  # a read model may keep a flag (sent back: yes/no)
        return int(value)
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}: {name} must be a count, got {value!r}")
    return value


def _rating(value: Any, where: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
        raise ValueError(f"{where}: rating must be an integer 1-5, got {value!r}")
    return value
