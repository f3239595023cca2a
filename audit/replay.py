"""Replay: rebuild every read model from the case-event log into an empty database.

Adapter. Guarantee: the target is refused unless empty; the history read is complete (from
offset 0, through the segment archive when Kafka's retention is shorter — a gap is refused,
never skipped); events are folded by the live sink's own code (sinks.runner.run_sink with
drain=True for the Kafka part, on its replay fast path into an empty database), so a replay
builds exactly what the live sink builds;
with `until` the database is the state as of that moment (a snapshot a live sink refuses).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TextIO

from minio import Minio
from sqlalchemy import Engine

from audit import dbcompare, logsource
from audit.progress import ProgressBar
from audit.segments import LogRecord
from gridflow import topics
from gridflow.settings import Settings
from sinks.models import create_schema, make_engine
from sinks.runner import Progress, run_sink
from sinks.runner import apply_records as runner_apply
from sinks.sql import BatchStats, Record, SqlSink

CONSUMER = "sql-sink"  # the live sink's name: a replayed database can be continued live


@dataclass
class ReplayResult:
    url: str
    until: datetime | None
    total: int  # records the log holds (case events and dead letters)
    seconds: float = 0.0
    archive_records: int = 0
    stats: BatchStats = field(default_factory=BatchStats)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def records(self) -> int:
        return self.stats.records

    @property
    def rate(self) -> float:
        return self.stats.records / self.seconds if self.seconds > 0 else 0.0


def log_topics(prefix: str) -> list[str]:
    return [topics.CASE_EVENTS.name(prefix), topics.DEAD_LETTERS.name(prefix)]


def to_record(r: LogRecord) -> Record:
    return Record(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp)


def apply_records(sink: SqlSink, records: Iterable[LogRecord], dead_topic: str) -> BatchStats:
    """One batch through the sink, as sinks.runner applies what it polls."""
    return runner_apply(sink, (to_record(r) for r in records), dead_topic)


def replay_into(settings: Settings, url: str, *, prefix: str | None = None,
                until: datetime | None = None, store: Minio | None = None, batch: int = 2000,
                progress: TextIO | None = None, engine: Engine | None = None) -> ReplayResult:
    """Replay the whole log (archive first when `store` is given) into the empty database."""
    prefix = prefix or settings.topic_prefix
    engine = engine or make_engine(url)
    dbcompare.assert_empty(engine)
    names = log_topics(prefix)
    kc = logsource.consumer(settings.kafka_bootstrap, "gridflow-replay")
    try:
        plans = logsource.plan(kc, names, store=store, bucket=settings.bucket_archive)
        total = sum(p.total for p in plans)
        result = ReplayResult(engine.url.render_as_string(hide_password=True), until, total)
        create_schema(engine)
        bar = ProgressBar(total, stream=progress) if progress is not None else None
        t0 = time.monotonic()
        if store is not None:
            sink = SqlSink(engine, CONSUMER, until)
            for records in logsource.read(kc, plans, store=store, bucket=settings.bucket_archive,
                                          batch=batch, kafka=False):
                result.stats.add(apply_records(sink, records, names[1]))
                result.archive_records += len(records)
                if bar:
                    bar.update(result.stats.records)
    finally:
        kc.close()
    done_before = result.stats.records

    def on_batch(p: Progress) -> None:
        if bar:
            bar.update(done_before + p.totals.records)

    state = run_sink(settings, engine, CONSUMER, drain=True, until=until, topic_prefix=prefix,
                     progress=on_batch, max_records=batch, poll_timeout_ms=300, retry_max_s=5.0,
                     replay=True)
    result.stats.add(state.totals)
    result.seconds = time.monotonic() - t0
    if bar:
        bar.done = result.stats.records
        bar.finish()
    with engine.connect() as conn:
        result.counts = dbcompare.table_counts(conn)
    return result
