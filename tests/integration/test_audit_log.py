"""Audit on the real stack, with a log of sample cases: verify catches each kind of tampering
with the case id; the segment archive is idempotent and, after Kafka truly deleted the
archived records (DeleteRecords), archive + Kafka replays to the same database as Kafka did."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from sqlalchemy import text

from audit import archiver, chain, dbcompare, logsource
from audit import segments as seg
from audit.replay import log_topics, replay_into
from audit.verify import verify
from demo import histories as sample
from gridflow import events as ev
from gridflow import topics
from gridflow.events import Message
from infra.kafka import ensure_catalogue
from sinks.models import create_schema, make_engine
from sinks.runner import run_sink

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def cases(n: int, first: int = 0) -> list[list[Message]]:
    return [sample.eventful_lifecycle(f"AJ{i:04d}", sample.T0 + timedelta(minutes=i))
            for i in range(first, first + n)]


def produce(bootstrap: str, prefix: str, events: list[Message], junk: bool = False) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        for m in events:
            producer.send(topics.CASE_EVENTS.name(prefix), key=m.case_id.encode(), value=m.encode())
        if junk:
            producer.send(topics.CASE_EVENTS.name(prefix), key=b"AJ-junk", value=b"\xff junk")
        producer.flush(timeout=30)
    finally:
        producer.close()


def sink_into(stack, url: str, prefix: str) -> None:  # type: ignore[no-untyped-def]
    engine = make_engine(url)
    create_schema(engine)
    run_sink(stack.settings, engine, drain=True, topic_prefix=prefix, poll_timeout_ms=200)
    engine.dispose()


@pytest.fixture
def more_prefixes(stack) -> Iterator[Callable[[], str]]:  # type: ignore[no-untyped-def]
    """Fresh topic prefixes (with the catalogue topics), deleted afterwards."""
    made: list[str] = []

    def make() -> str:
        prefix = f"t{uuid.uuid4().hex[:12]}"
        ensure_catalogue(stack.bootstrap, prefix)
        made.append(prefix)
        return prefix

    yield make
    admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap, request_timeout_ms=30000)
    try:
        doomed = [t for t in admin.list_topics() if any(t.startswith(p) for p in made)]
        if doomed:
            with contextlib.suppress(Exception):
                admin.delete_topics(doomed, timeout_ms=30000)
    finally:
        admin.close()


def copy_log(stack, source: str, target: str,  # type: ignore[no-untyped-def]
             edit: Callable[[list[Message]], list[Message]]) -> None:
    """Copy the case-events of `source` into `target`, partition by partition, edited."""
    kc = logsource.consumer(stack.bootstrap)
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    try:
        topic = topics.CASE_EVENTS.name(source)
        for plan in logsource.plan(kc, [topic]):
            records = [r for b in logsource.read(kc, [plan]) for r in b]
            messages = edit([ev.decode_message(r.value) for r in records if r.value])
            for m in messages:
                producer.send(topics.CASE_EVENTS.name(target), key=m.case_id.encode(),
                              value=m.encode(), partition=plan.partition)
        producer.flush(timeout=30)
    finally:
        producer.close()
        kc.close()


def gridflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bootstrap.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_verify_reports_each_kind_of_tampering_with_the_case_id(
        stack, topic_prefix, sqlite_url, tmp_path, more_prefixes) -> None:  # type: ignore[no-untyped-def]
    log = cases(8)
    produce(stack.bootstrap, topic_prefix, [m for c in log for m in c])
    sink_into(stack, sqlite_url, topic_prefix)
    settings = stack.settings.with_(topic_prefix=topic_prefix)

    clean = verify(settings, sqlite_url)
    assert clean.clean, clean.tables.diffs + clean.chain.findings
    assert clean.chain.events == sum(len(c) for c in log)
    assert {t.table: t.live_rows for t in clean.tables.tables}["cases"] == 8

    target_case = log[3][0].case_id
    victim = next(m for m in log[3] if m.type == ev.TASK_SIGNED)

    def altered(ms: list[Message]) -> list[Message]:
        return [replace(m, actor="dept:someone-else") if m.id == victim.id else m for m in ms]

    def removed(ms: list[Message]) -> list[Message]:
        return [m for m in ms if m.id != victim.id]

    def inserted(ms: list[Message]) -> list[Message]:
        last = [m for m in ms if m.case_id == target_case]
        if not last:
            return ms
        forged = Message(id="forged-event", type=ev.CASE_RATED, case_id=target_case,
                         at=last[-1].at, actor="supervisor:x", data={"score": 5},
                         causation_id="forged", seq=last[-1].seq + 1, prev_hash=last[-1].hash())
        return [*ms, forged]

    expected = {"altered": {chain.ALTERED, chain.LINK_BROKEN},
                "removed": {chain.REMOVED, chain.SEQ_GAP},
                "inserted": {chain.NOT_IN_LEDGER}}
    for name, edit in (("altered", altered), ("removed", removed), ("inserted", inserted)):
        copy = more_prefixes()
        copy_log(stack, topic_prefix, copy, edit)
        report = verify(settings.with_(topic_prefix=copy), sqlite_url)
        assert not report.clean, name
        found = {(f.kind, f.case_id) for f in report.chain.findings}
        assert found == {(k, target_case) for k in expected[name]}, (name, found)
        # the replayed read models disagree with the live ones about that case only
        assert {d.case_id for d in report.tables.diffs} <= {target_case}, name
        assert any(d.case_id == target_case for d in report.tables.diffs), name

    # the live database edited: a read-model row, then a ledger row
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        was = conn.execute(text("SELECT state FROM tasks WHERE task_id = :t"),
                           {"t": victim.data["task_id"]}).scalar_one()
        conn.execute(text("UPDATE tasks SET state = 'dispatched' WHERE task_id = :t"),
                     {"t": victim.data["task_id"]})
    result = gridflow("audit", "verify", "--database", sqlite_url, "--prefix", topic_prefix)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"tasks [task_id={victim.data['task_id']}] 案件 case {target_case}" in result.stdout
    assert f"state: live='dispatched' replay='{was}'" in result.stdout
    with engine.begin() as conn:
        conn.execute(text("UPDATE tasks SET state = :s WHERE task_id = :t"),
                     {"s": was, "t": victim.data["task_id"]})
        conn.execute(text("UPDATE case_events SET actor = 'dept:forger' WHERE event_id = :e"),
                     {"e": victim.id})
    report = verify(settings, sqlite_url)
    assert {(f.kind, f.case_id) for f in report.chain.findings} == {
        (chain.LEDGER_EDITED, target_case)}
    with engine.begin() as conn:
        conn.execute(text("UPDATE case_events SET actor = :a WHERE event_id = :e"),
                     {"a": victim.actor, "e": victim.id})
    engine.dispose()
    result = gridflow("audit", "verify", "--database", sqlite_url, "--prefix", topic_prefix)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "一致" in result.stdout


def test_replay_refuses_a_database_that_is_not_empty(stack, topic_prefix, sqlite_url) -> None:  # type: ignore[no-untyped-def]
    produce(stack.bootstrap, topic_prefix, [m for c in cases(2) for m in c])
    sink_into(stack, sqlite_url, topic_prefix)
    result = gridflow("replay", "--into", sqlite_url, "--prefix", topic_prefix)
    assert result.returncode == 2
    assert "not empty" in result.stderr and "cases 2" in result.stderr


def test_archive_delete_records_and_replay_from_archive_equals_kafka_replay(
        stack, topic_prefix, buckets, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = stack.settings.with_(topic_prefix=topic_prefix, bucket_archive=buckets.archive)
    store = stack.s3()
    produce(stack.bootstrap, topic_prefix, [m for c in cases(10) for m in c], junk=True)
    cfg = archiver.ArchiveConfig(buckets.archive, segment_records=40, seal_partial=True,
                                 retention_days=1)
    names = log_topics(topic_prefix)
    kc = logsource.consumer(stack.bootstrap)
    try:
        # a crash between a segment and its manifest: the next run finishes the manifest
        with pytest.MonkeyPatch.context() as mp:
            def crash(*args, **kwargs):  # type: ignore[no-untyped-def]
                raise RuntimeError("killed after the segment, before its manifest")

            mp.setattr(archiver, "_put_manifest", crash)
            with pytest.raises(RuntimeError, match="killed"):
                archiver.archive_log(kc, store, names, cfg)
        wall = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=5)
        first = archiver.archive_log(kc, store, names, cfg, wall_now=lambda: wall)
        assert len(first.completed) == 1 and first.records > 0 and len(first.written) >= 4
        last = first.completed[0]["segment_key"]
        again = archiver.archive_log(kc, store, names, cfg)
        assert again.written == [] and again.completed == []  # idempotent
        # every segment is under object lock, from the (injected) wall clock on: the records'
        # simulated times (sample.T0, a fixed 2026 date) play no part
        assert store.get_object_retention(buckets.archive, last) is not None
        retention = store.get_object_retention(buckets.archive, first.written[0]["segment_key"])
        assert retention.retain_until_date == wall + timedelta(days=1)

        produce(stack.bootstrap, topic_prefix, [m for c in cases(6, first=10) for m in c])
        reference = f"sqlite:///{tmp_path / 'kafka.db'}"
        from_kafka = replay_into(settings, reference)
        assert from_kafka.stats.applied == sum(len(c) for c in cases(16))

        # Kafka forgets everything archived so far: DeleteRecords below the archive's end
        cut = {}
        for name in names:
            for p in logsource.partitions(kc, name):
                manifests = logsource.list_manifests(store, buckets.archive, name, p)
                if manifests:
                    cut[TopicPartition(name, p)] = manifests[-1][0]["next_offset"]
        admin = KafkaAdminClient(bootstrap_servers=stack.bootstrap, request_timeout_ms=30000)
        try:
            admin.delete_records(cut, timeout_ms=30000)
        finally:
            admin.close()
        begins = kc.beginning_offsets(list(cut))
        assert all(begins[tp] == off for tp, off in cut.items()) and any(cut.values())
    finally:
        kc.close()

    with pytest.raises(logsource.LogGap, match="from-archive"):
        replay_into(settings, f"sqlite:///{tmp_path / 'gap.db'}")
    result = gridflow("replay", "--into", f"sqlite:///{tmp_path / 'gap2.db'}",
                      "--prefix", topic_prefix)
    assert result.returncode == 2 and "日志不完整" in result.stderr

    combined = f"sqlite:///{tmp_path / 'archive.db'}"
    result = gridflow("replay", "--into", combined, "--prefix", topic_prefix, "--from-archive",
                      "--bucket", buckets.archive)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "from the segment archive" in result.stdout
    with make_engine(reference).connect() as a, make_engine(combined).connect() as b:
        diff = dbcompare.compare(a, b)
    assert diff.clean, [d.render() for d in diff.diffs]

    # the archiver goes on from where it stopped, on what Kafka still has
    kc = logsource.consumer(stack.bootstrap)
    try:
        more = archiver.archive_log(kc, store, names, cfg)
        assert more.records == sum(len(c) for c in cases(6, first=10))
        for name in names:
            for p in logsource.partitions(kc, name):
                assert seg.check_chain(logsource.list_manifests(store, buckets.archive, name, p)) \
                    == []
    finally:
        kc.close()
    # and verify, reading the archive, finds the Kafka-built database consistent with the log
    report = verify(settings, reference, store=store)
    assert report.clean, [d.render() for d in report.tables.diffs] + report.chain.findings


def test_archive_log_command_once(stack, topic_prefix, buckets) -> None:  # type: ignore[no-untyped-def]
    produce(stack.bootstrap, topic_prefix, [m for c in cases(2) for m in c])
    args = ("archive-log", "--prefix", topic_prefix, "--bucket", buckets.archive, "--once")
    pending = gridflow(*args)
    assert pending.returncode == 0 and "waiting to seal" in pending.stdout
    sealed = gridflow(*args, "--seal")
    assert sealed.returncode == 0 and "归档 / archived" in sealed.stdout
    assert gridflow(*args, "--seal").stdout.count("archived s3://") == 0
