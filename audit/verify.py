"""`audit verify`: the live read models and ledger against a fresh replay of the log.

Adapter. Guarantee: the comparison is made at one consistent cut — the live database is read
in a single snapshot transaction, and the log is replayed exactly up to the offsets that
snapshot says the live sink had applied (the whole log for topics it never read) — so a
running pipeline causes no false differences. Every difference is reported: read-model rows
(table, key, case id, columns), broken hash chains, events altered, removed or inserted
in the log or edited in the ledger, and records the pipeline's consumer groups committed past
without handing anything of them on (audit.completeness: a loss the log agrees with is not
hidden by the read models agreeing with the log).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TextIO

from minio import Minio
from sqlalchemy import Connection, Engine, select

from audit import completeness, dbcompare, logsource
from audit.chain import ChainReport, ChainVerifier
from audit.completeness import CompletenessReport
from audit.progress import ProgressBar
from audit.replay import CONSUMER, apply_records, log_topics
from audit.segments import LogRecord
from gridflow.events import SchemaError, decode_message
from gridflow.settings import Settings
from sinks.models import CaseEvent, SinkOffset, create_schema, make_engine, table_of
from sinks.sql import BatchStats, SqlSink


@dataclass
class VerifyReport:
    live_url: str
    scratch_url: str
    cut: dict[tuple[str, int], int]  # what the live sink had applied: (topic, partition) -> next
    until: datetime | None
    notes: list[str] = field(default_factory=list)  # informational, not differences
    log_problems: list[str] = field(default_factory=list)  # differences about the log's extent
    stats: BatchStats = field(default_factory=BatchStats)
    seconds: float = 0.0
    tables: dbcompare.CompareReport = field(default_factory=dbcompare.CompareReport)
    chain: ChainReport = field(default_factory=ChainReport)
    # records the consumer groups committed past with nothing of them handed on (lost)
    completeness: CompletenessReport = field(default_factory=CompletenessReport)

    @property
    def clean(self) -> bool:
        return (self.tables.clean and self.chain.clean and not self.log_problems
                and self.completeness.clean)

    @property
    def rate(self) -> float:
        return self.stats.records / self.seconds if self.seconds > 0 else 0.0


@contextmanager
def snapshot(engine: Engine) -> Iterator[Connection]:
    """A read-only connection that sees one consistent state however long it is used."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn:
            with conn.begin():
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                yield conn
        return
    with engine.connect() as conn:
        conn.exec_driver_sql("BEGIN")  # pysqlite would not begin a transaction for reads
        try:
            yield conn
        finally:
            conn.rollback()


def verify(settings: Settings, live_url: str, *, prefix: str | None = None,
           consumer_name: str = CONSUMER, scratch_url: str | None = None,
           store: Minio | None = None, batch: int = 2000, max_diffs: int = 50,
           progress: TextIO | None = None) -> VerifyReport:
    prefix = prefix or settings.topic_prefix
    names = log_topics(prefix)
    live = make_engine(live_url)
    with tempfile.TemporaryDirectory(prefix="gridflow-verify-") as tmp:
        url = scratch_url or f"sqlite:///{Path(tmp) / 'replay.db'}"
        scratch = make_engine(url)
        try:
            dbcompare.assert_empty(scratch)
            with snapshot(live) as conn:
                return _verify(settings, conn, live, scratch, prefix, names, consumer_name,
                               store, batch, max_diffs, progress)
        finally:
            scratch.dispose()
            live.dispose()


def _verify(settings: Settings, conn: Connection, live: Engine, scratch: Engine, prefix: str,
            names: list[str], consumer_name: str, store: Minio | None, batch: int,
            max_diffs: int, progress: TextIO | None) -> VerifyReport:
    offsets = table_of(SinkOffset).c
    rows = conn.execute(select(offsets.topic, offsets.partition, offsets.next_offset,
                               offsets.as_of).where(offsets.consumer == consumer_name)).all()
    as_of = {r.as_of for r in rows}
    if len(as_of) > 1:
        raise ValueError(f"consumer {consumer_name!r} holds offsets of several snapshots")
    until = next(iter(as_of)) if as_of else None
    stored = {(r.topic, int(r.partition)): int(r.next_offset) for r in rows}
    report = VerifyReport(live.url.render_as_string(hide_password=True),
                          scratch.url.render_as_string(hide_password=True), {}, until)
    read_topics = {t for t, _ in stored}
    for name in names:
        if name not in read_topics:
            report.notes.append(f"the live database never read {name}: comparing the whole log "
                                "/ 线上库未读取该主题, 与完整日志比对")
    check = completeness.Completeness(completeness.LogNames.of(prefix))
    kc = logsource.consumer(settings.kafka_bootstrap, "gridflow-verify")
    try:
        # the groups' commits before the log's ends: what they had passed is within the plans
        commits = completeness.read_commits(settings.kafka_bootstrap, prefix)
        plans = logsource.plan(kc, names, store=store, bucket=settings.bucket_archive)
        for p in plans:
            key = (p.topic, p.partition)
            if p.topic in read_topics:
                p.stop = stored.get(key, 0)
                if p.stop > p.kafka_end:
                    report.log_problems.append(
                        f"{p.topic}[{p.partition}]: the live database read up to offset "
                        f"{p.stop - 1} but the log ends at {p.kafka_end - 1}: records were removed "
                        "from the end of the log / 日志尾部记录缺失")
                    p.stop = p.kafka_end
                elif p.kafka_end > p.stop:
                    report.notes.append(f"{p.topic}[{p.partition}]: {p.kafka_end - p.stop} newer "
                                        "record(s) the live sink has not applied yet are not "
                                        "compared / 线上库尚未读取的新记录不参与比对")
            report.cut[key] = p.stop
        create_schema(scratch)
        sink = SqlSink(scratch, consumer_name, until)
        chain = ChainVerifier()
        bar = ProgressBar(sum(p.stop for p in plans), stream=progress) if progress else None
        t0 = time.monotonic()
        for records in logsource.read(kc, plans, store=store, bucket=settings.bucket_archive,
                                      batch=batch):
            report.stats.add(apply_records(sink, records, names[1]))
            for r in records:
                if r.topic == names[0]:
                    _feed(chain, r, until)
            check.feed(records)
            if bar:
                bar.update(report.stats.records)
        report.seconds = time.monotonic() - t0
        if bar:
            bar.finish()
        # completeness reads the rest: the log beyond the cut, and the intake topics whole
        rest, trimmed, notes = completeness.rest_plans(kc, check.names, plans)
        bar = ProgressBar(sum(p.stop - p.start for p in rest), label="完整性 completeness",
                          stream=progress) if progress else None
        done = 0
        for records in logsource.read(kc, rest, store=store, bucket=settings.bucket_archive,
                                      batch=batch):
            check.feed(records)
            done += len(records)
            if bar:
                bar.update(done)
        if bar:
            bar.finish()
    finally:
        kc.close()
    report.completeness = check.result(commits, max_diffs, trimmed)
    report.completeness.notes[:0] = notes
    with scratch.connect() as replayed:
        report.tables = dbcompare.compare(conn, replayed, max_diffs)
    ledger = table_of(CaseEvent)
    result = conn.execution_options(stream_results=True, yield_per=2000).execute(select(ledger))
    report.chain = chain.compare_ledger(dict(row) for row in result.mappings())
    return report


def _feed(chain: ChainVerifier, r: LogRecord, until: datetime | None) -> None:
    if until is not None and r.value is not None:
        try:
            if decode_message(r.value, typed=False).at_dt > until:
                return  # after the snapshot's moment: not in its ledger, not in the chain check
        except SchemaError:
            pass
    chain.feed(r.partition, r.offset, r.value)
