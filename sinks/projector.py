"""Folds case events into the read models: one function per event type, over the rows a batch touches.

Guarantee: deterministic (the same events in the same order give the same rows, however they
are split into batches), and an event that cannot be folded leaves every row as it was
(ProjectionError). Which events are new is the caller's business (sinks.sql); an event type
this build does not know reaches the ledger and the case's chain position, nothing else.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Dialect, Insert, Table, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from gridflow import events as ev
from gridflow.core import case as core
from gridflow.events import Message, SchemaError, derived_id, parse_ts
from sinks.models import (
    Base,
    Case,
    CaseEvent,
    CommandOutcome,
    Photo,
    Report,
    Task,
    TaskHistory,
    UTCDateTime,
    table_of,
    utc_datetime,
    utc_text,
)

# Deadline state of a task's current clock; a new stage or a moved deadline restarts it.
ON_TIME, WARNED, OVERDUE, ESCALATED = "on_time", "warned", "overdue", "escalated"

# The command a command's first event reveals (accepted outcomes carry no command type).
COMMAND_OF_EVENT = {
    ev.CASE_FILED: ev.FILE_REPORT,
    ev.REPORT_MERGED: ev.FILE_REPORT,
    ev.CASE_NOT_FILED: ev.REFUSE_REPORT,
    ev.PHOTO_ARCHIVED: ev.RECORD_PHOTO_ARCHIVED,
    ev.TASK_SIGNED: ev.SIGN_TASK,
    ev.TASK_PROGRESS_NOTED: ev.NOTE_PROGRESS,
    ev.TASK_RESOLVED: ev.RESOLVE_TASK,
    ev.TASK_SENT_BACK: ev.SEND_BACK_TASK,
    ev.TASK_VERIFIED: ev.VERIFY_TASK,
    ev.TASK_REOPENED: ev.REJECT_TASK,
    ev.TASK_CANCELLED: ev.CANCEL_TASK,
    ev.CASE_RATED: ev.RATE_CASE,
    ev.EXTENSION_REQUESTED: ev.REQUEST_EXTENSION,
    ev.EXTENSION_GRANTED: ev.DECIDE_EXTENSION,
    ev.EXTENSION_REFUSED: ev.DECIDE_EXTENSION,
    ev.CASE_WHISTLED: ev.WHISTLE_CASE,
    ev.DEADLINE_WARNED: ev.WARN_DEADLINE,
    ev.DEADLINE_BREACHED: ev.BREACH_DEADLINE,
    ev.TASK_ESCALATED: ev.ESCALATE_TASK,
    ev.TASK_ASSIGNED: ev.ASSIGN_TASK,
}

# Events that carry a report (data.report), and the role its photos default to.
REPORT_EVENTS = frozenset({ev.CASE_FILED, ev.REPORT_MERGED, ev.CASE_NOT_FILED})

IN_CHUNK = 500  # values per IN (...) list: well under every database's parameter limit


class ProjectionError(Exception):
    """An event whose data cannot be folded; the read models are left as before it."""


@dataclass(frozen=True)
class Position:
    """Where an event was read from (kept in the ledger)."""

    topic: str = ""
    partition: int = -1
    offset: int = -1


# --- tolerant readers: event data from outside this build must not crash the sink -----------


def _s(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _f(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _i(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _ts(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return parse_ts(value)
    except SchemaError:
        return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def in_chunks(values: Iterable[Any]) -> Iterator[list[Any]]:
    items = sorted(set(values), key=str)
    for i in range(0, len(items), IN_CHUNK):
        yield items[i : i + IN_CHUNK]


def _default(column: Column[Any]) -> Any:
    default = column.default
    return default.arg if default is not None and default.is_scalar else None  # type: ignore[attr-defined]


# --- the rows of one batch -----------------------------------------------------------


class Rows:
    """The rows of one table a batch touches, by primary key, with what changed since loading.

    While an event is folded every first touch of a row is journalled, so a failing event
    can be undone.
    """

    def __init__(self, model: type[Base], key: str) -> None:
        self.table = table_of(model)
        self.key = key
        self.rows: dict[Any, dict[str, Any]] = {}
        self.dirty: dict[Any, None] = {}  # ordered set
        self.journal: dict[Any, tuple[dict[str, Any] | None, bool]] | None = None
        self._blank = {c.name: _default(c) for c in self.table.columns}

    def load(self, session: Session, column: str, values: Iterable[Any]) -> list[dict[str, Any]]:
        col = self.table.c[column]
        loaded = []
        for chunk in in_chunks(values):
            result = session.execute(select(self.table).where(col.in_(chunk)))
            names = list(result.keys())
            for found in result.all():
                row = dict(zip(names, found, strict=True))
                key = row[self.key]
                if key not in self.rows:
                    self.rows[key] = row
                    loaded.append(self.rows[key])
        return loaded

    def get(self, key: Any) -> dict[str, Any] | None:
        return self.rows.get(key)

    def edit(self, key: Any) -> dict[str, Any]:
        row = self.rows[key]
        self._remember(key, row)
        self.dirty[key] = None
        return row

    def add(self, **values: Any) -> dict[str, Any]:
        key = values[self.key]
        self._remember(key, self.rows.get(key))
        row = {**self._blank, **values}
        if key in self.rows:
            self.rows[key].update(row)
            row = self.rows[key]
        else:
            self.rows[key] = row
        self.dirty[key] = None
        return row

    def _remember(self, key: Any, row: dict[str, Any] | None) -> None:
        if self.journal is not None and key not in self.journal:
            self.journal[key] = (None if row is None else dict(row), key in self.dirty)

    def begin(self) -> None:
        self.journal = {}

    def commit(self) -> None:
        self.journal = None

    def undo(self) -> list[Any]:
        """Restore every row touched since begin(); returns the keys of rows it removed."""
        removed = []
        for key, (before, was_dirty) in (self.journal or {}).items():
            if before is None:
                self.rows.pop(key, None)
                removed.append(key)
            else:
                self.rows[key].clear()
                self.rows[key].update(before)
            if not was_dirty:
                self.dirty.pop(key, None)
        self.journal = None
        return removed

    def flush(self, session: Session) -> None:
        dirty = [self.rows[k] for k in self.dirty]
        if not dirty:
            return
        bulk_write(session, self.table, "upsert", dirty)
        self.dirty.clear()


def _dialect_insert(table: Table, dialect_name: str) -> sqlite.Insert | postgresql.Insert:
    dialects = {"sqlite": sqlite, "postgresql": postgresql}
    if dialect_name not in dialects:
        raise NotImplementedError(f"the read models need SQLite or PostgreSQL, not {dialect_name}")
    return dialects[dialect_name].insert(table)


@functools.cache
def _insert_new(table: Table, dialect_name: str) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING: rows whose primary key is taken stay as they are."""
    return _dialect_insert(table, dialect_name).on_conflict_do_nothing()


@functools.cache
def _upsert(table: Table, dialect_name: str) -> Insert:
    """INSERT ... ON CONFLICT (primary key) DO UPDATE SET every other column."""
    stmt = _dialect_insert(table, dialect_name)
    return stmt.on_conflict_do_update(
        index_elements=list(table.primary_key.columns),
        set_={c.name: stmt.excluded[c.name] for c in table.columns if not c.primary_key},
    )


# --- bulk writes: executemany on the driver, values converted once per column ---------------


def _converters(table: Table, dialect: Dialect) -> list[tuple[str, Any, Callable[[Any], Any]]]:
    """(column, default, to-driver function) per column: what the column types' bind
    processors do (sinks.models.UTCDateTime, JSON), without their per-row dispatch."""
    serialize = _prebuilt(getattr(dialect, "_json_serializer", None) or json.dumps)
    out: list[tuple[str, Any, Callable[[Any], Any]]] = []
    for c in table.columns:
        fn: Callable[[Any], Any] = _same
        if isinstance(c.type, UTCDateTime):
            fn = utc_text if dialect.name == "sqlite" else utc_datetime
        elif isinstance(c.type, JSON):
            if dialect.name == "sqlite":
                def fn(v: Any, dumps: Callable[[Any], str] = serialize) -> Any:
                    return None if v is None else dumps(v)
            else:
                from psycopg.types.json import Jsonb

                def fn(v: Any, dumps: Callable[[Any], str] = serialize) -> Any:
                    return None if v is None else Jsonb(v, dumps)
        out.append((c.name, _default(c), fn))
    return out


# json.dumps(o, ensure_ascii=False) builds a JSONEncoder per call; this one is built once.
_DUMPS_NON_ASCII = json.JSONEncoder(ensure_ascii=False).encode


def _prebuilt(serialize: Callable[[Any], str]) -> Callable[[Any], str]:
    """The engine's JSON serializer, or the same encoder built once when it is
    sinks.models.make_engine's default `lambda o: json.dumps(o, ensure_ascii=False)` (checked
    by its code: that lambda, calling json.dumps with ensure_ascii=False and nothing else)."""
    from sinks import models

    code = getattr(serialize, "__code__", None)
    if (code is not None and code in models.make_engine.__code__.co_consts
            and getattr(serialize, "__closure__", None) is None
            and code.co_names == ("json", "dumps")
            and set(code.co_consts) <= {None, False, ("ensure_ascii",)}
            and models.json is json):
        return _DUMPS_NON_ASCII
    return serialize


def _same(value: Any) -> Any:
    return value


@functools.cache
def _bulk_statement(table: Table, kind: str, dialect: Dialect,
                    ) -> tuple[str, list[tuple[str, Any, Callable[[Any], Any]]], bool]:
    """The driver-level SQL of an insert of every column, and how to make its parameters."""
    stmt: Any = {
        "upsert": lambda: _upsert(table, dialect.name),
        "insert_new": lambda: _insert_new(table, dialect.name),
        "insert": lambda: insert(table),
    }[kind]()
    compiled = stmt.compile(dialect=dialect, column_keys=[c.name for c in table.columns])
    converters = _converters(table, dialect)
    order = {name: i for i, (name, _, _) in enumerate(converters)}
    positional = compiled.positiontup is not None
    if positional:  # qmark (SQLite): parameters in the statement's order
        converters = [converters[order[name]] for name in compiled.positiontup]
    return str(compiled), converters, positional


def bulk_write(session: Session, table: Table, kind: str, rows: list[dict[str, Any]]) -> None:
    """INSERT (kind "insert"), INSERT ... ON CONFLICT DO NOTHING ("insert_new") or the upsert
    ("upsert") of `rows` in the session's transaction, as one driver-level executemany."""
    conn = session.connection()
    sql, converters, positional = _bulk_statement(table, kind, conn.dialect)
    if positional:
        params: list[Any] = [
            tuple([fn(row.get(name, default)) for name, default, fn in converters])
            for row in rows
        ]
    else:
        params = [{name: fn(row.get(name, default)) for name, default, fn in converters}
                  for row in rows]
    conn.exec_driver_sql(sql, params)


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
            if m.type in REPORT_EVENTS:
                want["report"].add(str(_dict(m.data.get("report")).get("report_id", "")))
            elif m.type == ev.PHOTO_ARCHIVED:
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

    def task(self, m: Message, at: datetime) -> dict[str, Any]:
        """The row of the task an event names (a stub if the log never dispatched it)."""
        task_id = str(m.data.get("task_id", ""))
        if self.tasks.get(task_id) is None:
            row = self.tasks.add(
                task_id=task_id,
                case_id=m.case_id,
                state="",
                department=str(m.data.get("department", "")),
            )
        else:
            row = self.tasks.edit(task_id)
        row["updated_at"] = at
        return row

    def add_photos(
        self,
        m: Message,
        at: datetime,
        photos: list[Any],
        role: str,
        report_id: str | None = None,
        task_id: str | None = None,
    ) -> None:
        for index, p in enumerate(photos):
            if not isinstance(p, dict):
                continue
            self.add_photo(
                id=derived_id("photo", m.id, str(index)),
                case_id=m.case_id,
                report_id=report_id,
                task_id=task_id,
                role=_s(p.get("role")) or role,
                incoming_bucket=_s(p.get("bucket")),
                incoming_key=_s(p.get("key")),
                sha256=str(p.get("sha256", "")),
                size=_i(p.get("size")),
                content_type=_s(p.get("content_type")),
                event_id=m.id,
                added_at=at,
            )

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
    def fold(self, m: Message, where: Position = Position(), at: datetime | None = None,
             digest: str | None = None) -> None:
        """Apply one event. Raises ProjectionError (and changes nothing) if it cannot.

        `at` (m.at_dt) and `digest` (m.hash()) may be passed in when the caller already
        has them (the replay fast path); they are computed here otherwise.
        """
        if m.id not in self._preloaded:
            self.preload([m])
        for rows in self._tables:
            rows.begin()
        try:
            if at is None:
                at = m.at_dt
            if digest is None:
                digest = m.hash()
            case = self.case(m.case_id, at)
            _advance_chain(case, m, digest, at)
            handler = HANDLERS.get(m.type)
            if handler is not None:
                handler(self, m, at, case)
            history = self._history_row(m, at)
            outcome = self._outcome_row(m, at)
        except Exception as exc:
            self._undo()
            raise ProjectionError(f"cannot fold {m.type} event {m.id}: {exc!r}") from exc
        for rows in self._tables:
            rows.commit()
        self.ledger.append(_ledger_row(m, at, digest, where))
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

    def _history_row(self, m: Message, at: datetime) -> dict[str, Any] | None:
        task_id = m.data.get("task_id")
        task = self.tasks.get(task_id) if isinstance(task_id, str) and task_id else None
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

    def _outcome_row(self, m: Message, at: datetime) -> dict[str, Any] | None:
        command_id = _command_id(m)
        if not command_id or command_id in self.known_commands:
            return None  # a command's first event decides its outcome (see flush)
        d = m.data
        refused = m.type == ev.COMMAND_REFUSED
        return {
            "command_id": command_id,
            "case_id": m.case_id,
            "task_id": _s(d.get("task_id")),
            "command_type": _s(d.get("command_type")) if refused else COMMAND_OF_EVENT.get(m.type),
            "accepted": not refused,
            "code": _s(d.get("code")) if refused else None,
            "reason_zh": _s(d.get("reason_zh")) if refused else None,
            "reason_en": _s(d.get("reason_en")) if refused else None,
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


def apply_event(session: Session, message: Message, where: Position = Position()) -> None:
    """Fold one event into the read models within `session` (the caller decides it is new)."""
    models = ReadModels(session)
    models.fold(message, where)
    models.flush()


def _command_id(m: Message) -> str:
    if m.type == ev.COMMAND_REFUSED:
        return str(m.data.get("command_id") or m.causation_id)
    return m.causation_id


def _advance_chain(case: dict[str, Any], m: Message, digest: str, at: datetime) -> None:
    if case["chain_broken_at_seq"] is None and (
        m.seq != case["last_seq"] + 1 or m.prev_hash != case["last_hash"]
    ):
        case["chain_broken_at_seq"] = m.seq
    if m.seq >= case["last_seq"]:
        case["last_seq"], case["last_hash"] = m.seq, digest
    case["event_count"] += 1
    case["updated_at"] = at


def _ledger_row(m: Message, at: datetime, digest: str, where: Position) -> dict[str, Any]:
    return {
        "event_id": m.id,
        "case_id": m.case_id,
        "seq": m.seq,
        "type": m.type,
        "at": at,
        "actor": m.actor,
        "data": m.data,
        "schema": m.schema,
        "causation_id": m.causation_id,
        "prev_hash": m.prev_hash,
        "hash": digest,
        "topic": where.topic,
        "partition": where.partition,
        "offset": where.offset,
    }


# --- one function per event type ------------------------------------------------------

Handler = Callable[[ReadModels, Message, datetime, dict[str, Any]], None]


def _record_report(rm: ReadModels, m: Message, at: datetime, merged: bool) -> dict[str, Any]:
    report = _dict(m.data.get("report"))
    report_id = _s(report.get("report_id"))
    photos = _list(report.get("photos"))
    reporter = _s(report.get("reporter")) or m.actor
    if report_id:
        rm.reports.add(
            report_id=report_id,
            case_id=m.case_id,
            source=_s(report.get("source")) or reporter.partition(":")[0],
            reporter=reporter,
            category_code=_s(report.get("category_code")),
            description=_s(report.get("description")),
            address=_s(report.get("address")),
            lat=_f(report.get("lat")),
            lon=_f(report.get("lon")),
            captured_at=_ts(report.get("captured_at")),
            submitted_at=_ts(report.get("submitted_at")) or at,
            merged=merged,
            distance_m=_f(m.data.get("distance_m")),
            photo_count=len(photos),
            recorded_at=at,
        )
    rm.add_photos(m, at, photos, "before", report_id=report_id)
    return report


def _case_from_report(case: dict[str, Any], report: dict[str, Any], m: Message) -> None:
    reporter = _s(report.get("reporter")) or m.actor
    case.update(
        report_id=_s(report.get("report_id")),
        reporter=reporter,
        source=_s(report.get("source")) or reporter.partition(":")[0],
        lat=_f(report.get("lat")),
        lon=_f(report.get("lon")),
        description=_s(report.get("description")),
        address=_s(report.get("address")),
    )


def case_filed(rm: ReadModels, m: Message, at: datetime, case: dict[str, Any]) -> None:
    d = m.data
    report = _record_report(rm, m, at, merged=False)
    _case_from_report(case, report, m)
    departments = [str(x) for x in _list(d.get("departments"))]
    case.update(
        status="open",
        category_code=_s(d.get("category_code")),
        category_name=_s(d.get("category_name")),
        severity=_i(d.get("severity")),
        grid_code=_s(d.get("grid_code")),
        village_code=_s(d.get("village_code")),
        township_code=_s(d.get("township_code")),
        cross_grid=bool(d.get("cross_grid")),
        departments=departments,
        routing_reason=_s(d.get("routing_reason")),
        filed_at=at,
    )


def case_not_filed(rm: ReadModels, m: Message, at: datetime, case: dict[str, Any]) -> None:
    d = m.data
    report = _record_report(rm, m, at, merged=False)
    _case_from_report(case, report, m)
    case.update(
        status="not_filed",
        category_code=_s(report.get("category_code")),
        not_filed_code=_s(d.get("code")),
        not_filed_reason_zh=_s(d.get("reason_zh")),
        not_filed_reason_en=_s(d.get("reason_en")),
    )


def report_merged(rm: ReadModels, m: Message, at: datetime, case: dict[str, Any]) -> None:
    _record_report(rm, m, at, merged=True)
    if case["status"] == "new":  # the log reached us without its CaseFiled
        case["status"] = _s(m.data.get("case_status")) or "open"


def task_dispatched(rm: ReadModels, m: Message, at: datetime, case: dict[str, Any]) -> None:
    d = m.data
    task = rm.task(m, at)
    task.update(
        department=str(d.get("department", "")),
        state=core.DISPATCHED,
        dispatch_reason=_s(d.get("reason")),
        replaces_task=_s(d.get("replaces_task")),
        category_code=_s(d.get("category_code")) or case["category_code"],
        grid_code=_s(d.get("grid_code")) or case["grid_code"],
        severity=_i(d.get("severity")) or case["severity"],
        dispatched_at=at,
        sign_due=_ts(d.get("sign_due")),
        resolve_due=_ts(d.get("resolve_due")),
        whistled=bool(d.get("whistled")),
    )
    _restart_clock(task)


def photo_archived(rm: ReadModels, m: Message, at: datetime, case: dict[str, Any]) -> None:
    d = m.data
    sha, key = _s(d.get("sha256")), _s(d.get("source_key"))
    matches = rm.find_photos(m.case_id, sha, key)
    for field in ("role", "report_id", "task_id"):
        wanted = _s(d.get(field))
        narrowed = [pid for pid in matches if rm.photos.rows[pid][field] == wanted]
        if wanted and narrowed:
            matches = narrowed
    if not matches:  # archived before we saw the event that referenced it
        row = rm.add_photo(
            id=derived_id("photo", m.id, "archived"),
            case_id=m.case_id,
            report_id=_s(d.get("report_id")),
            task_id=_s(d.get("task_id")),
            role=_s(d.get("role")) or "before",
            incoming_bucket=_s(d.get("source_bucket")),
            incoming_key=key,
            sha256=sha or "",
            size=_i(d.get("size")),
            event_id=m.id,
            added_at=at,
        )
        matches = [row["id"]]
    exif = _dict(d.get("exif"))
    status = _s(d.get("status")) or "archived"
    for pid in matches:
        rm.photos.edit(pid).update(
            archive_status=status,
            archive_problem=_s(d.get("problem")),
            archive_bucket=_s(d.get("archive_bucket")),
            archive_key=_s(d.get("archive_key")),
            thumbnail_key=_s(d.get("thumbnail_key")),
            archive_version_id=_s(d.get("archive_version_id")),
            thumbnail_version_id=_s(d.get("thumbnail_version_id")),
            width=_i(d.get("width")),
            height=_i(d.get("height")),
            exif_taken_at=_ts(exif.get("taken_at")),
            exif_lat=_f(exif.get("lat")),
            exif_lon=_f(exif.get("lon")),
            archived_at=at if status == "archived" else None,
        )


def task_signed(rm: ReadModels, m: Message, at: datetime, case: dict[str, Any]) -> None:
    task = rm.task(m, at)
    task.update(state=core.SIGNED, signed_at=at, on_time_sign=_bool(m.data.get("on_time")))
    task["resolve_due"] = _ts(m.data.get("resolve_due")) or task["resolve_due"]
    _restart_clock(task)


def task_progress_noted(rm: ReadModels, m: Message, at: datetime, case: dict[str, Any]) -> None:
    task = rm.task(m, at)
    task["state"] = core.IN_PROGRESS
    rm.add_photos(m, at, _list(m.data.get("photos")), "progress", task_id=task["task_id"])


def task_resolved(rm: ReadModels, m: Message, at: datetime, case: dict[str, Any]) -> None:
    task = rm.task(m, at)
    task.update(
        state=core.RESOLVED,
        resolved_at=at,
        verify_due=_ts(m.data.get("verify_due")),
        on_time_resolve=_bool(m.data.get("on_time")),
    )
    _restart_clock(task)
    rm.add_photos(m, at, _list(m.data.get("photos")), "after", task_id=task["task_id"])


def task_sent_back(rm: ReadModels, m: Message, at: datetime, case: dict[str, Any]) -> None:
    task = rm.task(m, at)
    task.update(
        state=core.SENT_BACK,
        closed_at=at,
        sent_back=True,
        sent_back_reason=_s(m.data.get("reason")),
        reroute_to=_s(m.data.get("reroute_to")),
    )


def task_verified(rm: ReadModels, m: Message, at: datetime, case: dict[str, Any]) -> None:
    task = rm.task(m, at)
    task.update(state=core.CLOSED, closed_at=at)
    rm.add_photos(m, at, _list(m.data.get("photos")), "verification", task_id=task["task_id"])


def task_reopened(rm: ReadModels, m: Message, at: datetime, case: dict[str, Any]) -> None:
    # Like the aggregate: resolved_at stays (the first resolution), the resolve clock restarts.
    task = rm.task(m, at)
    task.update(
        state=core.IN_PROGRESS,
        closed_at=None,
        verify_due=None,
        reopened=_i(m.data.get("reopened")) or task["reopened"] + 1,
        resolve_due=_ts(m.data.get("resolve_due")) or task["resolve_due"],
    )
    _restart_clock(task)
    if case["status"] == "closed":
        case.update(status="open", closed_at=None)
    rm.add_photos(m, at, _list(m.data.get("photos")), "verification", task_id=task["task_id"])


def task_cancelled(rm: ReadModels, m: Message, at: datetime, case: dict[str, Any]) -> None:
    rm.task(m, at).update(state=core.CANCELLED, closed_at=at)


def task_closed(rm: ReadModels, m: Message, at: datetime, case: dict[str, Any]) -> None:
    rm.task(m, at).update(state=core.CLOSED, closed_at=at)


def case_rated(rm: ReadModels, m: Message, at: datetime, case: dict[str, Any]) -> None:
    case.update(
        rating=_i(m.data.get("score")), rating_comment=_s(m.data.get("comment")), rated_at=at
    )


def case_closed(rm: ReadModels, m: Message, at: datetime, case: dict[str, Any]) -> None:
    case.update(status="closed", closed_at=at)


def extension_requested(rm: ReadModels, m: Message, at: datetime, case: dict[str, Any]) -> None:
    d = m.data
    rm.task(m, at)["pending_extension"] = {
        "request_id": d.get("request_id"),
        "days": d.get("days"),
        "reason": d.get("reason"),
        "requested_at": m.at,
    }


def extension_granted(rm: ReadModels, m: Message, at: datetime, case: dict[str, Any]) -> None:
    task = rm.task(m, at)
    task.update(
        pending_extension=None,
        extensions=task["extensions"] + 1,
        resolve_due=_ts(m.data.get("resolve_due")) or task["resolve_due"],
    )
    _restart_clock(task)


def extension_refused(rm: ReadModels, m: Message, at: datetime, case: dict[str, Any]) -> None:
    rm.task(m, at)["pending_extension"] = None


def case_whistled(rm: ReadModels, m: Message, at: datetime, case: dict[str, Any]) -> None:
    case["whistled_at"] = case["whistled_at"] or at


def deadline_warned(rm: ReadModels, m: Message, at: datetime, case: dict[str, Any]) -> None:
    task = rm.task(m, at)
    if task["deadline_state"] == ON_TIME:
        task["deadline_state"] = WARNED
    task.update(
        last_warned_stage=_s(m.data.get("stage")), last_warned_fraction=_f(m.data.get("fraction"))
    )


def deadline_breached(rm: ReadModels, m: Message, at: datetime, case: dict[str, Any]) -> None:
    task = rm.task(m, at)
    if task["deadline_state"] in (ON_TIME, WARNED):
        task["deadline_state"] = OVERDUE


def task_escalated(rm: ReadModels, m: Message, at: datetime, case: dict[str, Any]) -> None:
    task = rm.task(m, at)
    task.update(
        deadline_state=ESCALATED,
        escalation_level=_i(m.data.get("level")) or task["escalation_level"] + 1,
        escalation_level_code=_s(m.data.get("level_code")),
    )


def task_assigned(rm: ReadModels, m: Message, at: datetime, case: dict[str, Any]) -> None:
    rm.task(m, at).update(assignee=_s(m.data.get("assignee")),
                          assignee_name=_s(m.data.get("assignee_name")), assigned_at=at)


def command_refused(rm: ReadModels, m: Message, at: datetime, case: dict[str, Any]) -> None:
    """Nothing changes but the command's outcome (written by ReadModels.fold)."""


def _restart_clock(task: dict[str, Any]) -> None:
    task.update(deadline_state=ON_TIME, last_warned_stage=None, last_warned_fraction=None)


def _bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


HANDLERS: dict[str, Handler] = {
    ev.CASE_FILED: case_filed,
    ev.CASE_NOT_FILED: case_not_filed,
    ev.REPORT_MERGED: report_merged,
    ev.TASK_DISPATCHED: task_dispatched,
    ev.PHOTO_ARCHIVED: photo_archived,
    ev.TASK_SIGNED: task_signed,
    ev.TASK_PROGRESS_NOTED: task_progress_noted,
    ev.TASK_RESOLVED: task_resolved,
    ev.TASK_SENT_BACK: task_sent_back,
    ev.TASK_VERIFIED: task_verified,
    ev.TASK_REOPENED: task_reopened,
    ev.TASK_CANCELLED: task_cancelled,
    ev.TASK_CLOSED: task_closed,
    ev.CASE_RATED: case_rated,
    ev.CASE_CLOSED: case_closed,
    ev.EXTENSION_REQUESTED: extension_requested,
    ev.EXTENSION_GRANTED: extension_granted,
    ev.EXTENSION_REFUSED: extension_refused,
    ev.CASE_WHISTLED: case_whistled,
    ev.DEADLINE_WARNED: deadline_warned,
    ev.DEADLINE_BREACHED: deadline_breached,
    ev.TASK_ESCALATED: task_escalated,
    ev.TASK_ASSIGNED: task_assigned,
    ev.COMMAND_REFUSED: command_refused,
}
