"""Runs the SQL sink on Kafka: the case-events and dead-letters topics, positions kept in the database.

Guarantee: nothing is dropped and nothing is applied twice. Positions live in sink_offsets,
written in the same transaction as the rows, and Kafka offsets are never committed; after any
failure (Kafka unreachable, database down, a crash) the sink seeks back to what the database
holds and goes on from there, retrying with capped backoff and saying so in the log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from sqlalchemy import Engine

from gridflow import topics
from gridflow.settings import Settings, load_settings
from sinks.sql import BatchStats, Record, SnapshotError, SqlSink

log = logging.getLogger("gridflow.sinks.runner")

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
LOG_EVERY_S = 10.0


@dataclass
class Progress:
    """What the sink has done so far; handed to the progress callback after every batch."""

    consumer: str
    batches: int = 0
    totals: BatchStats = field(default_factory=BatchStats)
    last: BatchStats = field(default_factory=BatchStats)
    elapsed_s: float = 0.0
    lag: int | None = None  # records behind the partitions' high watermarks, when known
    caught_up: bool = False  # drain mode: reached the end offsets seen at start

    @property
    def events_per_s(self) -> float:
        return self.totals.applied / self.elapsed_s if self.elapsed_s > 0 else 0.0


ProgressCallback = Callable[[Progress], None]


class _Backoff:
    def __init__(self, stop: threading.Event, first_s: float, max_s: float) -> None:
        self.stop, self.first_s, self.max_s = stop, first_s, max_s
        self.delay = first_s

    def wait(self, what: str, exc: BaseException) -> None:
        log.warning(
            "%s (%s: %s); retrying in %.1fs, nothing is dropped: the sink resumes from "
            "the offsets stored with its rows",
            what,
            type(exc).__name__,
            exc,
            self.delay,
        )
        self.stop.wait(self.delay)
        self.delay = min(self.delay * 2, self.max_s)

    def reset(self) -> None:
        self.delay = self.first_s


def run_sink(
    settings: Settings | None,
    engine: Engine,
    consumer_name: str = "sql-sink",
    stop_event: threading.Event | None = None,
    *,
    bootstrap: str | None = None,
    topic_prefix: str | None = None,
    from_beginning: bool = False,
    drain: bool = False,
    until: datetime | None = None,
    progress: ProgressCallback | None = None,
    max_records: int = 2000,
    poll_timeout_ms: int = 500,
    retry_max_s: float = RETRY_MAX_S,
    consumer_config: dict[str, Any] | None = None,
) -> Progress:
    """Consume case events and dead letters into the database behind `engine`.

    Runs until `stop_event` is set or, with `drain=True`, until every partition reached the
    end offset it had when the sink started (a replay returns when caught up). Positions are
    the database's stored next offsets (the beginning where none are stored); with
    `from_beginning=True` it re-reads from the earliest retained offset anyway, and the
    ledger skips what it already holds.

    `until` builds the state as of a moment: events whose time is after it are skipped, not
    applied. Partitions are still read to their end: a partition is ordered per case, not in
    time across cases, so an event past `until` says nothing about the next one. Such a
    database is a snapshot and a live sink refuses to continue it (SnapshotError).
    """
    settings = settings or load_settings()
    stop = stop_event or threading.Event()
    sink = SqlSink(engine, consumer_name, until)
    sink.check_resumable()
    prefix = topic_prefix or settings.topic_prefix
    names = (topics.CASE_EVENTS.name(prefix), topics.DEAD_LETTERS.name(prefix))
    state = Progress(consumer_name)
    backoff = _Backoff(stop, RETRY_FIRST_S, retry_max_s)
    consumer = _connect(
        bootstrap or settings.kafka_bootstrap,
        consumer_name,
        max_records,
        consumer_config or {},
        stop,
        backoff,
    )
    if consumer is None:
        return state
    try:
        _consume(
            consumer,
            sink,
            names,
            state,
            stop,
            backoff,
            from_beginning,
            drain,
            progress,
            max_records,
            poll_timeout_ms,
        )
    finally:
        consumer.close()
    return state


def _consume(
    consumer: KafkaConsumer,
    sink: SqlSink,
    names: tuple[str, str],
    state: Progress,
    stop: threading.Event,
    backoff: _Backoff,
    from_beginning: bool,
    drain: bool,
    progress: ProgressCallback | None,
    max_records: int,
    poll_timeout_ms: int,
) -> None:
    partitions = _assign(consumer, names, stop, backoff)
    if not partitions:
        return
    targets = _end_offsets(consumer, partitions, stop, backoff) if drain else {}
    t0 = last_log = time.monotonic()
    need_seek, first_seek = True, True
    while not stop.is_set():
        if need_seek:
            try:
                _seek(consumer, sink, partitions, from_beginning and first_seek)
                need_seek = first_seek = False
            except Exception as exc:  # the database is down: nothing to resume from yet
                backoff.wait("cannot read the sink's stored offsets", exc)
                continue
        if drain and _caught_up(consumer, targets, poll_timeout_ms):
            state.caught_up = True
            break
        try:
            polled = consumer.poll(timeout_ms=poll_timeout_ms, max_records=max_records)
        except KafkaError as exc:
            backoff.wait("polling Kafka failed", exc)
            continue
        if not polled:
            continue
        try:
            last = _apply(sink, polled, names[1])
        except SnapshotError:
            raise
        except Exception as exc:  # database down or locked: seek back, retry the same records
            backoff.wait("applying a batch failed", exc)
            need_seek = True
            continue
        backoff.reset()
        state.batches += 1
        state.last = last
        state.totals.add(last)
        state.elapsed_s = time.monotonic() - t0
        state.lag = _lag(consumer, partitions)
        if progress is not None:
            progress(state)
        if time.monotonic() - last_log >= LOG_EVERY_S:
            last_log = time.monotonic()
            log.info(
                "%s: %d events applied (%.0f/s), %d duplicates, %d dead letters, lag %s",
                state.consumer,
                state.totals.applied,
                state.events_per_s,
                state.totals.duplicates,
                state.totals.dead_lettered,
                state.lag,
            )
    state.elapsed_s = time.monotonic() - t0
    if progress is not None:
        progress(state)


def _connect(
    bootstrap: str,
    consumer_name: str,
    max_records: int,
    extra: dict[str, Any],
    stop: threading.Event,
    backoff: _Backoff,
) -> KafkaConsumer | None:
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": f"gridflow-sink-{consumer_name}",
        "group_id": None,  # manual assignment; positions live in the database
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",  # a stored offset lost to retention: oldest kept
        "isolation_level": "read_committed",  # never apply an aborted transaction's events
        "max_poll_records": max_records,
        **extra,
    }
    while not stop.is_set():
        try:
            consumer = KafkaConsumer(**config)
            backoff.reset()
            return consumer
        except KafkaError as exc:
            backoff.wait(f"Kafka at {bootstrap} is unreachable", exc)
    return None


def _assign(
    consumer: KafkaConsumer, names: tuple[str, ...], stop: threading.Event, backoff: _Backoff
) -> list[TopicPartition]:
    while not stop.is_set():
        try:
            found = {name: consumer.partitions_for_topic(name) for name in names}
        except KafkaError as exc:
            backoff.wait("reading topic metadata failed", exc)
            continue
        missing = [name for name, parts in found.items() if not parts]
        if missing:
            backoff.wait("waiting for topics", LookupError(f"no such topic: {', '.join(missing)}"))
            continue
        partitions = [TopicPartition(n, p) for n in names for p in sorted(found[n] or ())]
        consumer.assign(partitions)
        backoff.reset()
        return partitions
    return []


def _end_offsets(
    consumer: KafkaConsumer,
    partitions: list[TopicPartition],
    stop: threading.Event,
    backoff: _Backoff,
) -> dict[TopicPartition, int]:
    while not stop.is_set():
        try:
            return dict(consumer.end_offsets(partitions))
        except KafkaError as exc:
            backoff.wait("reading end offsets failed", exc)
    return {}


def _seek(
    consumer: KafkaConsumer, sink: SqlSink, partitions: list[TopicPartition], from_beginning: bool
) -> None:
    stored: dict[str, dict[int, int]] = {}
    if not from_beginning:
        stored = {t: sink.next_offsets(t) for t in {tp.topic for tp in partitions}}
    fresh = []
    for tp in partitions:
        offset = stored.get(tp.topic, {}).get(tp.partition)
        if offset is None:
            fresh.append(tp)
        else:
            consumer.seek(tp, offset)
    if fresh:
        consumer.seek_to_beginning(*fresh)


def _caught_up(
    consumer: KafkaConsumer, targets: dict[TopicPartition, int], timeout_ms: int
) -> bool:
    for tp, end in targets.items():
        position = consumer.position(tp, timeout_ms=timeout_ms)
        if position is None or position < end:
            return False
    return True


def _lag(consumer: KafkaConsumer, partitions: list[TopicPartition]) -> int | None:
    total = 0
    for tp in partitions:
        high, position = consumer.highwater(tp), consumer.position(tp, timeout_ms=0)
        if high is None or position is None:
            return None
        total += max(0, high - position)
    return total


def _apply(sink: SqlSink, polled: dict[TopicPartition, list[Any]], dead_topic: str) -> BatchStats:
    case_records: list[Record] = []
    dead_records: list[Record] = []
    for tp, batch in polled.items():
        into = dead_records if tp.topic == dead_topic else case_records
        into += [Record(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp) for r in batch]
    stats = sink.apply_batch(case_records) if case_records else BatchStats()
    if dead_records:
        dead = sink.apply_dead_letter_batch(dead_records)
        dead.applied = 0
        stats.add(dead)
    return stats
