"""The SQL sink: applies batches of case-events (and dead-letter) records to the read models.

Guarantee: effectively exactly-once. Each batch is one transaction that writes the folded rows,
the ledger and the consumer's next offsets together; an event already in the ledger, or a
record below the stored offset, is skipped, so a redelivery (a crash between the database
commit and anything after it, a seek back, a replay into a live database) changes nothing.
A record that does not decode lands in dead_letters, never crashes the batch, never is lost.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Engine, insert, select, text, update
from sqlalchemy.orm import Session

from gridflow import events as ev
from gridflow.events import Message, SchemaError, decode_message
from sinks.models import CaseEvent, DeadLetter, SinkOffset, table_of
from sinks.projector import Position, ProjectionError, ReadModels
from sinks.rows import in_chunks

log = logging.getLogger("gridflow.sinks.sql")

SINK_LOCK = 7461002  # PostgreSQL advisory lock key held by every sink write transaction


class Record(NamedTuple):
    """One Kafka record as the sink sees it (kafka-python's ConsumerRecord has these fields)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int | datetime | None  # Kafka's epoch milliseconds, or a datetime


class SnapshotError(RuntimeError):
    """The database was built "as of" another moment than this sink is asked to apply."""


@dataclass
class BatchStats:
    records: int = 0
    applied: int = 0  # folded into the read models and the ledger
    duplicates: int = 0  # event id already in the ledger (or earlier in the batch)
    stale: int = 0  # offset below the consumer's stored next offset
    dead_lettered: int = 0  # undecodable or unprojectable: written to dead_letters
    after_until: int = 0  # event time after the sink's `until`: skipped
    unknown_types: int = 0  # applied to the ledger only
    seconds: float = 0.0

    def add(self, other: BatchStats) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class SqlSink:
    """Applies record batches for one consumer name. `until` builds an "as of" snapshot."""

    def __init__(
        self, engine: Engine, consumer_name: str = "sql-sink", until: datetime | None = None,
        observer: Callable[[list[tuple[Record, Message]]], None] | None = None,
    ) -> None:
        if until is not None and until.tzinfo is None:
            raise ValueError("until must be timezone-aware")
        self.engine = engine
        self.consumer = consumer_name
        self.until = until.astimezone(UTC) if until is not None else None
        # told of the events each committed batch applied (gridflow.telemetry.sink_observer)
        self.observer = observer

    # --- case events ------------------------------------------------------------------
    def apply_batch(self, records: Iterable[Record | tuple[Any, ...]]) -> BatchStats:
        """Apply case-events records in one transaction. Safe to call again with any of them."""
        t0 = time.perf_counter()
        batch = [Record(*r) for r in records]
        stats = BatchStats(records=len(batch))
        with self._transaction() as session:
            offsets = _Offsets(session, self, {r.topic for r in batch})
            dead: list[dict[str, Any]] = []
            fresh: list[tuple[Record, Message]] = []
            for r in batch:
                if not offsets.see(r):
                    stats.stale += 1
                    continue
                quick = decode_hashed(r.value)  # its time and hash are kept by the message
                if quick is not None:
                    fresh.append((r, quick[0]))
                    continue
                try:  # anything unusual: the general decoding, with its errors
                    fresh.append((r, _decode_case_event(r.value)))
                except SchemaError as exc:
                    dead.append(_dead_letter(r, f"undecodable case event: {exc}"))
            todo = self._new_events(session, fresh, stats)
            models = ReadModels(session)
            models.preload(m for _, m in todo)
            applied: list[tuple[Record, Message]] = []
            for r, m in todo:
                try:
                    models.fold(m, Position(r.topic, r.partition, r.offset))
                except ProjectionError as exc:
                    log.error(
                        "dead-lettering %s at %s[%d]@%d: %s",
                        m.type,
                        r.topic,
                        r.partition,
                        r.offset,
                        exc,
                    )
                    dead.append(_dead_letter(r, str(exc)))
                    continue
                stats.applied += 1
                stats.unknown_types += m.type not in ev.EVENT_TYPES
                applied.append((r, m))
            models.flush()
            stats.dead_lettered = _insert_dead_letters(session, dead)
            offsets.save()
        stats.seconds = time.perf_counter() - t0
        if self.observer is not None and applied:
            self.observer(applied)
        return stats

    def _new_events(
        self, session: Session, fresh: list[tuple[Record, Message]], stats: BatchStats
    ) -> list[tuple[Record, Message]]:
        seen = _existing(session, table_of(CaseEvent).c.event_id, {m.id for _, m in fresh})
        todo = []
        for r, m in fresh:
            if m.id in seen:
                stats.duplicates += 1
                continue
            seen.add(m.id)
            if self.until is not None and m.at_dt > self.until:
                stats.after_until += 1
                continue
            todo.append((r, m))
        return todo

    # --- the dead-letters topic ---------------------------------------------------------
    def apply_dead_letter_batch(self, records: Iterable[Record | tuple[Any, ...]]) -> BatchStats:
        """Record dead-letters-topic records (JSON made by gridflow.events.dead_letter()).

        A record that is not such JSON is itself kept as a dead letter of the DLQ topic.
        """
        t0 = time.perf_counter()
        batch = [Record(*r) for r in records]
        stats = BatchStats(records=len(batch))
        with self._transaction() as session:
            offsets = _Offsets(session, self, {r.topic for r in batch})
            rows = []
            for r in batch:
                if not offsets.see(r):
                    stats.stale += 1
                    continue
                try:
                    rows.append(_decode_dead_letter(r.value))
                except SchemaError as exc:
                    rows.append(_dead_letter(r, f"malformed dead letter: {exc}"))
            stats.dead_lettered = _insert_dead_letters(session, rows)
            stats.duplicates = len(rows) - stats.dead_lettered
            offsets.save()
        stats.seconds = time.perf_counter() - t0
        return stats

    # --- positions ----------------------------------------------------------------------
    def next_offsets(self, topic: str) -> dict[int, int]:
        """Where this consumer resumes on `topic`: {partition: next offset}."""
        t = table_of(SinkOffset).c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.partition, t.next_offset).where(
                    t.consumer == self.consumer, t.topic == topic
                )
            )
            return {int(p): int(o) for p, o in rows}

    def check_resumable(self) -> None:
        """Raise SnapshotError if stored offsets were written with another `until`."""
        t = table_of(SinkOffset).c
        with self.engine.connect() as conn:
            stored = set(conn.execute(select(t.as_of).where(t.consumer == self.consumer)).scalars())
        _check_as_of(stored, self)

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        """One write transaction, serialised against other writers from its first statement.

        SQLite: BEGIN IMMEDIATE takes the write lock up front, so a concurrent writer makes
        us wait (busy timeout) rather than fail half-way. PostgreSQL: a transaction-scoped
        advisory lock does the same for sink writers, so two sinks on one database (two
        instances of a consumer, or a replay beside the live one) never apply an event twice.
        """
        with Session(self.engine) as session, session.begin():
            if session.bind.dialect.name == "sqlite":  # type: ignore[union-attr]
                session.execute(text("BEGIN IMMEDIATE"))
            elif session.bind.dialect.name == "postgresql":  # type: ignore[union-attr]
                session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SINK_LOCK})
            yield session


class _Offsets:
    """The consumer's stored next offsets for some topics, advanced by the records seen."""

    def __init__(self, session: Session, sink: SqlSink, topics: set[str]) -> None:
        self.session, self.sink = session, sink
        t = table_of(SinkOffset).c
        rows = (
            session.execute(
                select(t.topic, t.partition, t.next_offset, t.as_of).where(
                    t.consumer == sink.consumer, t.topic.in_(sorted(topics))
                )
            ).all()
            if topics
            else []
        )
        _check_as_of({row.as_of for row in rows}, sink)
        self.stored = {(row.topic, row.partition): row.next_offset for row in rows}
        self.next = dict(self.stored)

    def see(self, r: Record) -> bool:
        """Note a record; False if it lies below the stored position (already applied)."""
        tp = (r.topic, r.partition)
        if r.offset < self.stored.get(tp, 0):
            return False
        self.next[tp] = max(self.next.get(tp, 0), r.offset + 1)
        return True

    def save(self) -> None:
        now = datetime.now(UTC)
        new, changed = [], []
        for (topic, partition), offset in self.next.items():
            row = {
                "consumer": self.sink.consumer,
                "topic": topic,
                "partition": partition,
                "next_offset": offset,
                "as_of": self.sink.until,
                "updated_at": now,
            }
            if (topic, partition) not in self.stored:
                new.append(row)
            elif offset != self.stored[(topic, partition)]:
                changed.append(row)
        if new:
            self.session.execute(insert(table_of(SinkOffset)), new)
        if changed:
            self.session.execute(update(SinkOffset), changed)


def _check_as_of(stored: set[datetime | None], sink: SqlSink) -> None:
    other = {a for a in stored if a != sink.until}
    if other:
        found = ", ".join("live" if a is None else ev.iso(a) for a in sorted(other, key=str))
        wanted = "live" if sink.until is None else ev.iso(sink.until)
        raise SnapshotError(
            f"consumer {sink.consumer!r} was built as of {found}; it cannot continue as {wanted} "
            "(events in between were skipped): rebuild into a fresh database or use another name"
        )


# --- decoding and hashing, for the common case only ---------------------------------------

def decode_hashed(value: bytes | None) -> tuple[Message, datetime, str | None] | None:
    """A case event decoded as _decode_case_event decodes it, its time (m.at_dt)
    and its hash (gridflow.contract.envelope_hash, as Message.hash()), for a record
    in the shape every producer writes (UTF-8 JSON object, envelope fields of their JSON
    types). Anything else returns None and the caller takes the general path, which gives
    the result or the error the live sink gives (a payload that does not match its type
    included). The hash is computed from the decoded values, never taken from the record, so
    a record whose bytes are not canonical, or altered, hashes exactly as in the live sink.
    The digest is None where that encoding fails (the fold then fails as in the live sink).
    """
    if value is None or value[:1] != b"{" or value[1:2] in (b"", b"\x00"):
        return None  # json.loads would not read it as UTF-8, or there is nothing to read
    try:
        obj = ev.loads(value)  # json.loads(value)'s result, through orjson where it is the same
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return None
    if type(obj) is not dict:
        return None
    get = obj.get
    id_, type_, at, actor = get("id"), get("type"), get("at"), get("actor")
    case_id, data, schema = get("case_id"), get("data", {}), get("schema", ev.SCHEMA_VERSION)
    seq, causation_id, prev_hash = get("seq", 0), get("causation_id", ""), get("prev_hash", "")
    if not (type(id_) is str and id_ and type(type_) is str and type_ and type(at) is str
            and at and type(actor) is str and actor and type(case_id) is str and case_id
            and type(data) is dict and type(schema) is int and schema == ev.SCHEMA_VERSION
            and type(seq) is int and type(causation_id) is str and type(prev_hash) is str):
        return None
    m = Message(id_, type_, case_id, at, actor, data, schema, causation_id, seq, prev_hash)
    try:
        at_dt = m.at_dt
    except SchemaError:
        return None
    if type_ in ev.PAYLOADS:
        try:
            m.body  # noqa: B018 - the typed payload, checked as decode_message checks it
        except SchemaError:
            return None
    ev.keep_canonical(m, value, obj)  # a canonical record hashes as its own bytes
    try:
        digest: str | None = m.hash()  # kept by the message: the fold asks for it again
    except Exception:  # e.g. a lone surrogate: the fold's m.hash() fails the same way
        digest = None
    return m, at_dt, digest


def _decode_case_event(value: bytes | None) -> Message:
    if value is None:
        raise SchemaError("empty record (tombstone)")
    m = decode_message(value)
    if not m.case_id:
        raise SchemaError("a case event needs a case_id")
    return m


def _record_time(r: Record) -> datetime:
    if isinstance(r.timestamp, datetime):
        return r.timestamp
    if isinstance(r.timestamp, int) and r.timestamp >= 0:
        return datetime.fromtimestamp(r.timestamp / 1000, UTC)
    return datetime.now(UTC)


def _dead_letter(r: Record, reason: str) -> dict[str, Any]:
    """A dead_letters row for a record this sink could not use (at = the record's time)."""
    return ev.dead_letter(r.topic, r.partition, r.offset, r.value, reason, _record_time(r))


def _decode_dead_letter(value: bytes | None) -> dict[str, Any]:
    try:
        obj = ev.loads(value or b"")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise SchemaError("not a JSON object")
    for name in ("id", "source_topic", "reason"):
        if not isinstance(obj.get(name), str) or not obj[name]:
            raise SchemaError(f"field {name!r} is missing or not a non-empty string")
    if not isinstance(obj.get("original"), str):
        raise SchemaError("field 'original' is missing or not a string")
    for name in ("partition", "offset"):
        if obj.get(name) is not None and (
            isinstance(obj[name], bool) or not isinstance(obj[name], int)
        ):
            raise SchemaError(f"field {name!r} must be an integer or null")
    return {
        "id": obj["id"][:32],
        "source_topic": obj["source_topic"],
        "partition": obj.get("partition"),
        "offset": obj.get("offset"),
        "reason": obj["reason"],
        "original": obj["original"],
        "original_encoding": str(obj.get("original_encoding", "utf-8")),
        "at": _optional_ts(obj.get("at")),
    }


def _optional_ts(value: Any) -> datetime | None:
    try:
        return ev.parse_ts(value) if value else None
    except SchemaError:
        return None


def _insert_dead_letters(session: Session, rows: list[dict[str, Any]]) -> int:
    """Insert the rows whose id is new; returns how many."""
    seen = _existing(session, table_of(DeadLetter).c.id, {row["id"] for row in rows})
    new = []
    for row in rows:
        if row["id"] not in seen:
            seen.add(row["id"])
            new.append(
                {
                    **row,
                    "at": row["at"] if isinstance(row["at"], datetime) else _optional_ts(row["at"]),
                }
            )
    if new:
        session.execute(insert(table_of(DeadLetter)), new)
    return len(new)


def _existing(session: Session, column: Any, values: set[str]) -> set[str]:
    found: set[str] = set()
    for chunk in in_chunks(values):
        found.update(session.execute(select(column).where(column.in_(chunk))).scalars())
    return found
