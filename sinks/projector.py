"""Folds case events into the read models: the rows one batch touches, in memory, written in bulk.

Guarantee: deterministic (the same events in the same order give the same rows, however they
are split into batches), and an event that cannot be folded leaves every row as it was
(ProjectionError). Which events are new is the caller's business (sinks.sql); an event type
this build does not know reaches the ledger and the case's chain position, nothing else.

The parts: the rows and their undo (sinks.rows), the bulk writers (sinks.bulk), the ledger
and the chain (sinks.ledger), one function per event type (sinks.folds).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from gridflow.contract import (
    COMMAND_OF_EVENT,
    PAYLOADS,
    CaseFiled,
    CaseNotFiled,
    CommandRefused,
    Message,
    Payload,
    PhotoArchived,
    ReportMerged,
    SchemaError,
    report_of,
)
from sinks.bulk import bulk_write
from sinks.folds import HANDLERS
from sinks.ledger import Position, advance_chain, command_id, ledger_row
from sinks.models import Case, CaseEvent, CommandOutcome, Photo, Report, Task, TaskHistory, table_of
from sinks.rows import Rows, in_chunks

__all__ = ["HANDLERS", "Position", "ProjectionError", "ReadModels", "apply_event", "in_chunks"]

# Events that carry a report (data.report).
REPORT_EVENTS = (CaseFiled, ReportMerged, CaseNotFiled)


NOWHERE = Position()  # an event not read from a topic


class ProjectionError(Exception):
    """An event whose data cannot be folded; the read models are left as before it."""


class ReadModels:
    """The read-model rows one batch of events touches, held in memory and written in bulk.

    `preload` fetches them with a handful of IN queries, `fold` applies events, `flush`
    writes everything with executemany inserts / updates in the caller's transaction.
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        self.cases = Rows(Case, "case_id")
        self.tasks = Rows(Task, "task_id")
        self.reports = Rows(Report, "report_id")
        self.photos = Rows(Photo, "id")
        self._tables = (self.cases, self.tasks, self.reports, self.photos)
        self._loaded: dict[str, set[str]] = {
            "case": set(),
            "report": set(),
            "photos": set(),
        }
        self._preloaded: set[str] = set()  # ids of the events whose rows are here
        self.photo_ids_by_case: dict[str, list[str]] = {}
        self.known_commands: set[str] = set()  # outcomes decided in this batch
        self.outcomes: list[dict[str, Any]] = []
        self.ledger: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []

    # --- loading ------------------------------------------------------------------
    def preload(self, messages: Iterable[Message]) -> None:
        """Fetch every row the given events will touch (no-op for rows already here)."""
        want: dict[str, set[str]] = {name: set() for name in self._loaded}
        for m in messages:
            self._preloaded.add(m.id)
            want["case"].add(m.case_id)
            try:
                body = m.body if m.known else None
            except SchemaError:  # fold() refuses it (ProjectionError)
                continue
            if isinstance(body, REPORT_EVENTS):
                want["report"].add(report_of(body.report).report_id or "")
            elif isinstance(body, PhotoArchived):
                want["photos"].add(m.case_id)
        for name, values in want.items():
            values -= self._loaded[name]
            values.discard("")
            self._loaded[name] |= values
        if want["case"]:
            self.cases.load(self.session, "case_id", want["case"])
            self.tasks.load(self.session, "case_id", want["case"])
        if want["report"]:
            self.reports.load(self.session, "report_id", want["report"])
        if want["photos"]:
            for row in self.photos.load(self.session, "case_id", want["photos"]):
                self.photo_ids_by_case.setdefault(row["case_id"], []).append(row["id"])

    # --- helpers for the event functions -----------------------------------------
    def case(self, case_id: str, at: datetime) -> dict[str, Any]:
        """The case row, created with status "new" for a stream that opens with a refusal."""
        if self.cases.get(case_id) is None:
            return self.cases.add(case_id=case_id, status="new", updated_at=at)
        return self.cases.edit(case_id)

    def task(self, case_id: str, task_id: str, department: str, at: datetime) -> dict[str, Any]:
        """The row of the task an event names (a stub if the log never dispatched it)."""
        if self.tasks.get(task_id) is None:
            row = self.tasks.add(task_id=task_id, case_id=case_id, state="", department=department)
        else:
            row = self.tasks.edit(task_id)
        row["updated_at"] = at
        return row

    def add_photo(self, **values: Any) -> dict[str, Any]:
        ids = self.photo_ids_by_case.setdefault(values["case_id"], [])
        if values["id"] not in ids:
            ids.append(values["id"])
        return self.photos.add(**values)

    def find_photos(self, case_id: str, sha256: str | None, key: str | None) -> list[str]:
        return [
            pid
            for pid in self.photo_ids_by_case.get(case_id, [])
            if self.photos.rows[pid]["sha256"] == sha256
            and self.photos.rows[pid]["incoming_key"] == key
        ]

    # --- folding -------------------------------------------------------------------
    def fold(self, m: Message, where: Position = NOWHERE) -> None:
        """Apply one event. Raises ProjectionError (and changes nothing) if it cannot. The
        message's time and hash are its own memoised m.at_dt and m.hash() (a decoder that
        computed them already, sinks.sql.decode_hashed, leaves them there)."""
        if m.id not in self._preloaded:
            self.preload([m])
        for rows in self._tables:
            rows.begin()
        try:
            at = m.at_dt
            digest = m.hash()
            case = self.case(m.case_id, at)
            advance_chain(case, m, digest, at)
            handler = HANDLERS.get(m.type)
            body = m.body if m.type in PAYLOADS else None  # None: a type this build lacks
            if handler is not None:
                handler(self, m, body, at, case)
            task_id = task_id_of(m, body)
            history = self._history_row(m, task_id, at)
            outcome = self._outcome_row(m, body, task_id, at)
        except Exception as exc:
            self._undo()
            raise ProjectionError(f"cannot fold {m.type} event {m.id}: {exc!r}") from exc
        for rows in self._tables:
            rows.commit()
        self.ledger.append(ledger_row(m, at, digest, where))
        if history is not None:
            self.history.append(history)
        if outcome is not None:
            self.outcomes.append(outcome)
            self.known_commands.add(outcome["command_id"])

    def _undo(self) -> None:
        for rows in self._tables:
            removed = rows.undo()
            if rows is self.photos:
                for ids in self.photo_ids_by_case.values():
                    ids[:] = [pid for pid in ids if pid not in removed]

    def _history_row(self, m: Message, task_id: str, at: datetime) -> dict[str, Any] | None:
        task = self.tasks.get(task_id) if task_id else None
        if task is None:
            return None
        return {
            "event_id": m.id,
            "task_id": task_id,
            "case_id": m.case_id,
            "seq": m.seq,
            "type": m.type,
            "at": at,
            "actor": m.actor,
            "department": task["department"],
            "summary": {k: v for k, v in m.data.items() if k != "task_id"},
        }

    def _outcome_row(self, m: Message, body: Payload | None, task_id: str, at: datetime,
                     ) -> dict[str, Any] | None:
        cid = command_id(m, body)
        if not cid or cid in self.known_commands:
            return None  # a command's first event decides its outcome (see flush)
        refused = body if isinstance(body, CommandRefused) else None
        return {
            "command_id": cid,
            "case_id": m.case_id,
            "task_id": task_id or None,
            "command_type": (refused.command_type or None) if refused
            else COMMAND_OF_EVENT.get(m.type),
            "accepted": refused is None,
            "code": (refused.code or None) if refused else None,
            "reason_zh": (refused.reason_zh or None) if refused else None,
            "reason_en": (refused.reason_en or None) if refused else None,
            "event_id": m.id,
            "event_type": m.type,
            "at": at,
        }

    def flush(self) -> None:
        """Write every change in the session's transaction (bulk inserts and updates)."""
        for rows in self._tables:
            rows.flush(self.session)
        if self.outcomes:  # an outcome already stored came from an earlier event: it stays
            bulk_write(self.session, table_of(CommandOutcome), "insert_new", self.outcomes)
            self.outcomes.clear()
        for table, batch in ((CaseEvent, self.ledger), (TaskHistory, self.history)):
            if batch:
                bulk_write(self.session, table_of(table), "insert", batch)
                batch.clear()


def apply_event(session: Session, message: Message, where: Position = NOWHERE) -> None:
    """Fold one event into the read models within `session` (the caller decides it is new)."""
    models = ReadModels(session)
    models.fold(message, where)
    models.flush()


def task_id_of(m: Message, body: Payload | None) -> str:
    """The task an event is about ("" for a case-level one). The data of an event type this
    build does not know (no `body`) is untyped: its task_id is taken if it is a string."""
    if body is not None:
        return str(getattr(body, "task_id", ""))
    value = m.data.get("task_id")
    return value if isinstance(value, str) else ""
