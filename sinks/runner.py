"""Runs the SQL sink on Kafka: the case-events and dead-letters topics, positions kept in the database.

Guarantee: nothing is dropped and nothing is applied twice. Positions live in sink_offsets,
written in the same transaction as the rows, and Kafka offsets are never committed; after any
failure (Kafka unreachable, database down, a crash) the sink seeks back to what the database
holds and goes on from there, retrying with capped backoff and saying so in the log.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError
from sqlalchemy import Engine

from gridflow import topics
from gridflow.retry import OUTAGE_MAX_S, Backoff, outage_policy
from gridflow.settings import Settings, load_settings
from sinks.consumer import Polled, StoredOffsetsConsumer
from sinks.sql import BatchStats, Record, SnapshotError, SqlSink

log = logging.getLogger("gridflow.sinks.runner")

RETRY_MAX_S = OUTAGE_MAX_S
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
    replay: bool = False,
    observer: Callable[[list[tuple[Record, Any]]], None] | None = None,
    replay_processes: int | None = None,
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

    `replay=True` (with `drain=True`) takes the replay fast path when the database holds no
    row at all: the whole log folded in memory by the same fold and written once, in one
    transaction (sinks.replay_fast; the same rows, far fewer round trips). If the database
    is not empty, or the fast path fails, the batch-by-batch path below runs instead; a fast
    replay stopped before it caught up leaves the database empty. A large replay folds its
    partitions in several processes (sinks.replay_parallel: one per core, from
    PARALLEL_MIN_RECORDS records); `replay_processes` sets how many (1: this process only).
    """
    settings = settings or load_settings()
    stop = stop_event or threading.Event()
    sink = SqlSink(engine, consumer_name, until, observer)  # observer: metrics of what it applied
    sink.check_resumable()
    prefix = topic_prefix or settings.topic_prefix
    options = _Options(from_beginning, drain, max_records, poll_timeout_ms, progress,
                       replay and drain, replay_processes)
    backoff = Backoff(outage_policy(consumer_name, retry_max_s), stop, log,
                      "nothing is dropped: the sink resumes from the offsets stored with its rows")
    bootstrap = bootstrap or settings.kafka_bootstrap
    names = (topics.CASE_EVENTS.name(prefix), topics.DEAD_LETTERS.name(prefix))
    kc = StoredOffsetsConsumer(bootstrap, f"gridflow-sink-{consumer_name}", names,
                               sink.next_offsets, backoff, max_records=max_records,
                               poll_timeout_ms=poll_timeout_ms, config=consumer_config)
    state = Progress(consumer_name)
    if not kc.open():
        kc.close()
        return state
    try:
        loop = _SinkLoop(kc, sink, names, options, state)
        loop.bootstrap = bootstrap
        loop.bulk_read = not consumer_config  # extra client settings: kafka-python reads
        loop.run()
    finally:
        kc.close()
    return state


@dataclass(frozen=True)
class _Options:
    from_beginning: bool
    drain: bool
    max_records: int
    poll_timeout_ms: int
    progress: ProgressCallback | None
    replay: bool = False
    replay_processes: int | None = None


class _SinkLoop:
    """Poll, apply, repeat; on any failure back off and resume from the database's offsets."""

    def __init__(
        self,
        kc: StoredOffsetsConsumer,
        sink: SqlSink,
        names: tuple[str, str],
        options: _Options,
        state: Progress,
    ) -> None:
        self.kc, self.sink, self.names = kc, sink, names
        self.options, self.backoff, self.state = options, kc.backoff, state
        self.stop = kc.stop
        self.targets: dict[TopicPartition, int] = {}
        self.bootstrap = ""
        self.bulk_read = False  # the replay fast path reads with _BulkReader (aiokafka)
        self.t0 = self.last_log = 0.0

    @property
    def partitions(self) -> list[TopicPartition]:
        return self.kc.partitions

    def run(self) -> None:
        if self.options.drain and self.partitions:
            self.targets = self.kc.end_offsets()
        if self.options.replay and self.partitions and self._run_fast():
            return
        self.t0 = self.last_log = time.monotonic()
        if self.partitions:
            self.state.caught_up = self.kc.run(
                self._apply, from_beginning=self.options.from_beginning,
                until=self.targets if self.options.drain else None,
                failure="applying a batch failed", fatal=(SnapshotError,))
        self.state.elapsed_s = time.monotonic() - self.t0
        if self.options.progress is not None:
            self.options.progress(self.state)

    def _run_fast(self) -> bool:
        """The replay fast path; False if it does not apply or failed (nothing was written)."""
        collecting = gc.isenabled()
        gc.disable()  # no collections while the log is folded (as in a folding process:
        # sinks.replay_parallel._fold); what each batch leaves is frozen
        try:
            return self._replay_fast()
        finally:
            gc.unfreeze()  # what the batches froze (Replayer.add_polled) is collectable again
            if collecting:
                gc.enable()

    def _replay_fast(self) -> bool:
        from sinks.replay_fast import NotEmpty, Replayer

        replayer = Replayer(self.sink.engine, self.sink.consumer, self.sink.until)
        try:
            replayer.begin()
        except NotEmpty as exc:
            log.info("%s: not a replay into an empty database (%s): applying batch by batch",
                     self.sink.consumer, exc)
            return False
        except Exception as exc:
            log.warning("%s: cannot start the replay fast path (%s: %s): applying batch by batch",
                        self.sink.consumer, type(exc).__name__, exc)
            return False
        t0 = time.monotonic()
        dead_topic = self.names[1]
        processes = 1
        if self.bulk_read:
            from sinks.replay_parallel import processes_for

            processes = processes_for(sum(self.targets.values()),
                                      sum(tp.topic != dead_topic for tp in self.targets),
                                      self.options.replay_processes)
        reader = _BulkReader(self.bootstrap, self.sink.consumer, self.targets,
                             self.options.poll_timeout_ms) if self.bulk_read and processes == 1 \
            else None
        try:
            if processes > 1:
                self._fold_in_processes(replayer, processes, t0)
            else:
                self._fold_here(replayer, reader, t0)
            if reader is not None:
                reader.close()
            if self.stop.is_set():
                replayer.abort()  # nothing half-done stays behind: the target is empty again
                self.state.totals, self.state.last = BatchStats(), BatchStats()
                log.info("%s: replay stopped before it caught up; nothing was written",
                         self.sink.consumer)
            else:
                t_finish = time.monotonic()
                replayer.finish()
                self.state.caught_up = True
                log.info("%s: replay written in one transaction after %.1f s (the final rows "
                         "and the commit: %.1f s)", self.sink.consumer, time.monotonic() - t0,
                         time.monotonic() - t_finish)
        except Exception as exc:
            if reader is not None:
                reader.close()
            replayer.abort()
            log.warning("%s: the replay fast path failed (%s: %s); nothing was written, "
                        "applying batch by batch instead", self.sink.consumer,
                        type(exc).__name__, exc)
            self.state.batches, self.state.totals, self.state.last = 0, BatchStats(), BatchStats()
            return False
        self.state.elapsed_s = time.monotonic() - t0
        if self.options.progress is not None:
            self.options.progress(self.state)
        return True

    def _fold_here(self, replayer: Any, reader: _BulkReader | None, t0: float) -> None:
        """The one-process fast path: every record read and folded here, rows written as
        the fold's chunks fill."""
        dead_topic, last_log = self.names[1], t0
        if reader is None:
            self.kc.consumer.seek_to_beginning(*self.partitions)
        else:
            reader.start()
        while not self.stop.is_set():
            if reader is not None:
                polled = reader.get(self.options.poll_timeout_ms)
                if polled is None:
                    break  # caught up
            else:
                try:
                    if self.kc.caught_up(self.targets):
                        break
                    polled = self.kc.consumer.poll(
                        timeout_ms=self.options.poll_timeout_ms,
                        max_records=max(self.options.max_records, 20000))
                except KafkaError as exc:
                    self.backoff.wait("polling Kafka failed", exc)
                    continue
            self.backoff.reset()
            if not polled:
                continue
            last = replayer.add_polled(polled, dead_topic)
            self._progress(last, t0, None if reader is None else reader.lag())
            if time.monotonic() - last_log >= LOG_EVERY_S:
                last_log = time.monotonic()
                self._log()

    def _fold_in_processes(self, replayer: Any, processes: int, t0: float) -> None:
        """The fast path with the partitions folded in `processes` processes and the rows
        written here (sinks.replay_parallel)."""
        from sinks.replay_parallel import ParallelFold, split

        groups = split(self.targets, self.names[1], processes)
        log.info("%s: replaying %d records, folded in %d processes", self.sink.consumer,
                 sum(self.targets.values()), len(groups))
        last_log = [t0]

        def progress(last: BatchStats, lag: int) -> None:
            self._progress(last, t0, lag)
            if time.monotonic() - last_log[0] >= LOG_EVERY_S:
                last_log[0] = time.monotonic()
                self._log()

        ParallelFold(replayer, groups, bootstrap=self.bootstrap, dead_topic=self.names[1],
                     poll_timeout_ms=self.options.poll_timeout_ms, stop=self.stop.is_set,
                     progress=progress).run()

    def _progress(self, last: BatchStats, t0: float, lag: int | None = None) -> None:
        self.state.batches += 1
        self.state.last = last
        self.state.totals.add(last)
        self.state.elapsed_s = time.monotonic() - t0
        self.state.lag = lag if lag is not None else self.kc.lag()
        if self.options.progress is not None:
            self.options.progress(self.state)

    def _apply(self, polled: Polled) -> None:
        """One poll into the database (rows and offsets in one transaction); raises when the
        batch rolled back (the loop then reads it again from the stored offsets)."""
        if not polled:
            return
        last = _apply(self.sink, polled, self.names[1])
        self.state.batches += 1
        self.state.last = last
        self.state.totals.add(last)
        self.state.lag = self.kc.lag()
        if self.options.progress is not None:
            self.options.progress(self.state)
        self.state.elapsed_s = time.monotonic() - self.t0
        if time.monotonic() - self.last_log >= LOG_EVERY_S:
            self.last_log = time.monotonic()
            self._log()

    def _log(self) -> None:
        s = self.state
        log.info(
            "%s: %d events applied (%.0f/s), %d duplicates, %d dead letters, lag %s",
            s.consumer,
            s.totals.applied,
            s.events_per_s,
            s.totals.duplicates,
            s.totals.dead_lettered,
            s.lag,
        )


class _BulkReader:
    """The replay fast path's reader: every assigned partition from its beginning to the end
    offset seen at start, with aiokafka (whose record-batch parsing is C: ~3 µs of CPU per
    record here against kafka-python's ~8) in its own thread and event loop, fetching ahead
    while the caller folds. Same settings as the sink's consumer: no group, nothing
    committed, read_committed. Any failure is raised to the caller by get() (the fast path
    then gives up and the batch-by-batch path, with its retries, runs)."""

    AHEAD = 4  # polled batches fetched ahead of the caller

    def __init__(self, bootstrap: str, consumer_name: str, targets: dict[TopicPartition, int],
                 poll_timeout_ms: int, max_records: int = 20000) -> None:
        self.bootstrap, self.consumer_name = bootstrap, consumer_name
        self.targets = dict(targets)
        self.poll_timeout_ms, self.max_records = poll_timeout_ms, max_records
        self.batches: queue.Queue[Any] = queue.Queue(maxsize=self.AHEAD)
        self.positions: dict[TopicPartition, int] = {}
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._run, name="replay-reader", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def get(self, timeout_ms: int) -> dict[TopicPartition, list[Any]] | None:
        """The next polled records ({} if none came in time); None once caught up."""
        try:
            item = self.batches.get(timeout=timeout_ms / 1000)
        except queue.Empty:
            return {}
        if isinstance(item, BaseException):
            raise item
        if item is None:
            return None
        positions, polled = item
        self.positions.update(positions)
        return polled

    def lag(self) -> int:
        return sum(max(0, end - self.positions.get(tp, 0)) for tp, end in self.targets.items())

    def close(self) -> None:
        self.closing.set()
        if self.thread.is_alive():
            self.thread.join(timeout=30)

    def _run(self) -> None:
        try:
            asyncio.run(self._read())
        except BaseException as exc:  # handed to the caller
            self._put(exc)

    def _put(self, item: Any) -> None:
        while not self.closing.is_set():
            try:
                self.batches.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    async def _read(self) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka import TopicPartition as AioTopicPartition

        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=f"gridflow-sink-{self.consumer_name}-replay",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=8 << 20,
            fetch_max_bytes=64 << 20,
        )
        await consumer.start()
        try:
            ours = {AioTopicPartition(tp.topic, tp.partition): tp for tp in self.targets}
            consumer.assign(list(ours))
            await consumer.seek_to_beginning(*ours)
            while not self.closing.is_set():
                positions = {ours[a]: await consumer.position(a) for a in ours}
                if all(positions[tp] >= end for tp, end in self.targets.items()):
                    self._put(None)
                    return
                polled = await consumer.getmany(timeout_ms=self.poll_timeout_ms,
                                                max_records=self.max_records)
                if polled:
                    self._put(({ours[a]: await consumer.position(a) for a in polled},
                               {ours[a]: records for a, records in polled.items()}))
        finally:
            await consumer.stop()


def _apply(sink: SqlSink, polled: Polled, dead_topic: str) -> BatchStats:
    return apply_records(sink, (Record(r.topic, r.partition, r.offset, r.key, r.value,
                                       r.timestamp) for batch in polled.values() for r in batch),
                         dead_topic)


def apply_records(sink: SqlSink, records: Iterable[Record], dead_topic: str) -> BatchStats:
    """One batch through the sink: case events, then dead letters (which count as seen, not
    as applied events)."""
    case_records: list[Record] = []
    dead_records: list[Record] = []
    for r in records:
        (dead_records if r.topic == dead_topic else case_records).append(r)
    stats = sink.apply_batch(case_records) if case_records else BatchStats()
    if dead_records:
        dead = sink.apply_dead_letter_batch(dead_records)
        dead.applied = 0
        stats.add(dead)
    return stats
