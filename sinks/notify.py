"""`gridflow notify`: tells departments about their case events (新任务, 超时预警, 升级督办,
吹哨报到) by each department's send method, keeping one send state per notice.

Guarantee: each notice an event calls for is taken in once — the notice rows and the
consumer's next offsets are written in one database transaction (Kafka offsets are never
committed), and a notice's id derives from its event and recipient, so a redelivered or
replayed event adds nothing. A taken-in notice is sent until it succeeds: every failure is
counted with its reason and retried with capped exponential backoff. Delivery to an endpoint is
at-least-once: only a crash between a 2xx and recording it sends again, with the same
`Idempotency-Key` (the notice id), so a receiver can drop the repeat.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, Table, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from gridflow import topics
from gridflow.clock import Clock, wall_clock
from gridflow.core.notify import Notice, NotifyConfig, notices_for
from gridflow.core.refdata import ReferenceData
from gridflow.events import SchemaError, decode_message
from gridflow.retry import Backoff, outage_policy
from gridflow.settings import Settings
from sinks.notify_models import (
    NOTIFICATIONS,
    NOTIFY_OFFSETS,
    PENDING,
    RETRYING,
    SENT,
)
from sinks.notify_send import SendFailed, SendMethod, default_methods

log = logging.getLogger("gridflow.notify")

LEASE_EXTRA_S = 60.0  # a claimed notice is someone's for its timeout plus this
DELIVERY_BATCH = 64

_notices, _offsets = NOTIFICATIONS, NOTIFY_OFFSETS


class KafkaRecord(Protocol):
    """What the notifier reads of a record (kafka-python's ConsumerRecord has it)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass
class NotifyStats:
    records: int = 0
    stale: int = 0  # below the stored offset: taken in before
    undecodable: int = 0  # not a case event (the SQL sink dead-letters those)
    notices: int = 0  # new notices taken in
    sent: int = 0
    failed: int = 0

    def add(self, other: NotifyStats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Notifier:
    """Takes notices in from case-event records and delivers the due ones."""

    engine: Engine
    config: NotifyConfig
    ref: ReferenceData
    methods: Mapping[str, SendMethod] = field(default_factory=default_methods)
    consumer: str = "notify"
    clock: Clock = wall_clock  # real time: backoff is about networks, not simulated days
    max_workers: int = 8

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="notify-send")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    # --- taking in ------------------------------------------------------------------------

    def take_in(self, records: Iterable[KafkaRecord]) -> NotifyStats:
        """Add the notices these records call for, and advance the offsets: one transaction."""
        batch = list(records)
        stats = NotifyStats(records=len(batch))
        now = self.clock()
        with self._transaction() as conn:
            stored = self._stored_offsets(conn, {r.topic for r in batch})
            advanced = dict(stored)
            rows: dict[str, dict[str, Any]] = {}
            for r in batch:
                tp = (r.topic, r.partition)
                if r.offset < stored.get(tp, 0):
                    stats.stale += 1
                    continue
                advanced[tp] = max(advanced.get(tp, 0), r.offset + 1)
                try:
                    event = decode_message(r.value or b"")
                except SchemaError as exc:
                    stats.undecodable += 1
                    log.warning("skipped %s[%d]@%d: %s", r.topic, r.partition, r.offset, exc)
                    continue
                for notice in notices_for(event, self.config, self.ref):
                    rows.setdefault(notice.id, _new_row(notice, event.at_dt, now))
            stats.notices = _insert_new(conn, _notices, list(rows.values()))
            changed = {tp: o for tp, o in advanced.items() if stored.get(tp) != o}
            _save_offsets(conn, self.consumer, changed, now)
        return stats

    def next_offsets(self, topic: str) -> dict[int, int]:
        with self.engine.connect() as conn:
            found = self._stored_offsets(conn, {topic})
        return {p: o for (_, p), o in found.items()}

    def _stored_offsets(self, conn: Connection, names: set[str]) -> dict[tuple[str, int], int]:
        if not names:
            return {}
        c = _offsets.c
        rows = conn.execute(
            select(c.topic, c.partition, c.next_offset).where(
                c.consumer == self.consumer, c.topic.in_(sorted(names))
            )
        )
        return {(t, int(p)): int(o) for t, p, o in rows}

    # --- delivering -----------------------------------------------------------------------

    def deliver_due(self) -> NotifyStats:
        """Send every notice due now (claimed first, so two notifiers never send one twice
        at once); record each outcome. Returns what was sent and what failed."""
        stats = NotifyStats()
        claimed = self._claim(self.clock())
        if not claimed:
            return stats
        for ok in self._pool.map(self._send_and_record, claimed):
            if ok:
                stats.sent += 1
            else:
                stats.failed += 1
        return stats

    def next_due_at(self) -> datetime | None:
        c = _notices.c
        with self.engine.connect() as conn:
            found = conn.execute(select(c.next_attempt_at).where(c.status != SENT)
                                 .order_by(c.next_attempt_at).limit(1)).scalar()
        return found

    def _claim(self, now: datetime) -> list[dict[str, Any]]:
        c = _notices.c
        lease = timedelta(seconds=self._longest_timeout() + LEASE_EXTRA_S)
        query = (
            select(c.notice_id, c.recipient, c.payload, c.fail_count, c.next_attempt_at)
            .where(c.status != SENT, c.next_attempt_at <= now)
            .order_by(c.next_attempt_at, c.created_at, c.notice_id)
            .limit(DELIVERY_BATCH)
        )
        with self.engine.connect() as conn:  # a plain read first: no write lock when idle
            if conn.execute(query.limit(1)).first() is None:
                return []
        with self._transaction() as conn:
            due = conn.execute(query).mappings().all()
            claimed = []
            for row in due:
                taken = conn.execute(
                    update(_notices)
                    .where(c.notice_id == row["notice_id"], c.status != SENT,
                           c.next_attempt_at == row["next_attempt_at"])
                    .values(next_attempt_at=now + lease)
                )
                if taken.rowcount == 1:
                    claimed.append(dict(row))
        return claimed

    def _longest_timeout(self) -> float:
        timeouts = [c.timeout_s for c in self.config.contacts.values()]
        if self.config.default is not None:
            timeouts.append(self.config.default.timeout_s)
        return max(timeouts, default=5.0)

    def _send_and_record(self, row: dict[str, Any]) -> bool:
        notice = Notice.from_payload(row["payload"])
        contact = self.config.contact_for(notice.recipient)
        method = self.methods.get(contact.method) if contact else None
        reason = None
        if contact is None:
            reason = f"no contact for {notice.recipient} in {self.config.source} / 未配置通知方式"
        elif method is None:
            reason = f"unknown send method {contact.method!r} / 未知的通知方式"
        else:
            try:
                method.send(notice, contact)
            except SendFailed as exc:
                reason = exc.reason
            except Exception as exc:  # noqa: BLE001 - a plug-in's bug is this notice's failure
                reason = f"{type(exc).__name__}: {exc}"[:500]
        now = self.clock()
        c = _notices.c
        values: dict[str, Any] = {
            "attempts": c.attempts + 1,
            "last_attempt_at": now,
            "method": contact.method if contact else None,
            "target": contact.target if contact else None,
        }
        if reason is None:
            values.update(status=SENT, sent_at=now, next_attempt_at=None)
            log.info("sent %s %s → %s (%s)", notice.kind, notice.id, notice.recipient,
                     values["target"])
        else:
            fails = int(row["fail_count"]) + 1
            values.update(status=RETRYING, fail_count=c.fail_count + 1, last_failure=reason,
                          next_attempt_at=self.config.retry.next_attempt(now, fails))
            log.warning("sending %s %s → %s failed (%d times so far): %s; retrying at %s",
                        notice.kind, notice.id, notice.recipient, fails, reason,
                        values["next_attempt_at"].isoformat())
        with self._transaction() as conn:
            conn.execute(update(_notices).where(c.notice_id == notice.id, c.status != SENT)
                         .values(**values))
        return reason is None

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            if conn.dialect.name == "sqlite":  # take the write lock now: wait, never fail half-way
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn


def _new_row(notice: Notice, event_at: datetime, now: datetime) -> dict[str, Any]:
    return {
        "notice_id": notice.id,
        "event_id": notice.event_id,
        "event_type": notice.event_type,
        "case_id": notice.case_id,
        "task_id": notice.task_id,
        "kind": notice.kind,
        "recipient": notice.recipient,
        "payload": notice.payload(),
        "status": PENDING,
        "attempts": 0,
        "fail_count": 0,
        "event_at": event_at,
        "created_at": now,
        "next_attempt_at": now,
    }


def _dialect(conn: Connection) -> Any:
    name = conn.dialect.name
    if name == "sqlite":
        return sqlite
    if name == "postgresql":
        return postgresql
    return None


def _insert_new(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> int:
    """Insert the rows whose primary key is new; returns how many were new."""
    if not rows:
        return 0
    key = next(iter(table.primary_key.columns))
    existing = set(conn.execute(select(key).where(key.in_([r[key.name] for r in rows])))
                   .scalars())
    new = [r for r in rows if r[key.name] not in existing]
    if not new:
        return 0
    dialect = _dialect(conn)
    if dialect is None:
        conn.execute(insert(table), new)
    else:  # a second notifier on the same database may have taken it in meanwhile
        conn.execute(dialect.insert(table).on_conflict_do_nothing(), new)
    return len(new)


def _save_offsets(conn: Connection, consumer: str, offsets: dict[tuple[str, int], int],
                  now: datetime) -> None:
    if not offsets:
        return
    rows = [{"consumer": consumer, "topic": t, "partition": p, "next_offset": o,
             "updated_at": now} for (t, p), o in offsets.items()]
    dialect = _dialect(conn)
    if dialect is None:
        for row in rows:
            conn.execute(_offsets.delete().where(
                _offsets.c.consumer == consumer, _offsets.c.topic == row["topic"],
                _offsets.c.partition == row["partition"]))
        conn.execute(insert(_offsets), rows)
        return
    stmt = dialect.insert(_offsets)
    conn.execute(stmt.on_conflict_do_update(
        index_elements=["consumer", "topic", "partition"],
        set_={"next_offset": stmt.excluded.next_offset, "updated_at": stmt.excluded.updated_at},
    ), rows)


def send_states(engine: Engine, *, task_id: str | None = None,
                case_id: str | None = None) -> list[dict[str, Any]]:
    """The send state of every notice of a task or a case, oldest first (for people and tests)."""
    c = _notices.c
    query = select(_notices).order_by(c.event_at, c.created_at, c.notice_id)
    if task_id is not None:
        query = query.where(c.task_id == task_id)
    if case_id is not None:
        query = query.where(c.case_id == case_id)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


# --- the Kafka loop ---------------------------------------------------------------------------


def run_notifier(
    settings: Settings,
    notifier: Notifier,
    stop_event: threading.Event | None = None,
    *,
    from_end: bool = False,
    poll_timeout_ms: int = 200,
    on_round: Callable[[NotifyStats], None] | None = None,
) -> NotifyStats:
    """Follow `<prefix>.case-events` until `stop_event` is set: take notices in, send due ones.

    A consumer without stored offsets starts at the beginning of the log (nothing is missed),
    or with `from_end=True` at its current end (a notifier added to a long-running system does
    not announce the past).
    """
    from sinks.consumer import Polled, StoredOffsetsConsumer

    backoff = Backoff(outage_policy(notifier.consumer), stop_event, log,
                      "nothing is lost: the notifier resumes from the offsets stored with its "
                      "notices")
    total = NotifyStats()
    kc = StoredOffsetsConsumer(settings.kafka_bootstrap, f"gridflow-{notifier.consumer}",
                               (topics.CASE_EVENTS.name(settings.topic_prefix),),
                               notifier.next_offsets, backoff, max_records=1000,
                               poll_timeout_ms=poll_timeout_ms, fresh_at_end=from_end)

    def one_round(polled: Polled) -> None:
        stats = NotifyStats()
        records = [r for batch in polled.values() for r in batch]
        if records:
            stats.add(notifier.take_in(records))
        stats.add(notifier.deliver_due())
        total.add(stats)
        if on_round is not None:
            on_round(stats)

    try:
        if kc.open():
            kc.run(one_round, failure="taking notices in or recording a delivery failed")
    finally:
        kc.close()
    return total


__all__ = ["Notifier", "NotifyStats", "run_notifier", "send_states"]
