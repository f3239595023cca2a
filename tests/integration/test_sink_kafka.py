"""run_sink on the real Kafka: case events produced to this test's topics land once in SQLite."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from kafka import KafkaProducer
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from demo import histories as sample
from gridflow import events as ev
from gridflow import topics
from sinks.runner import Progress, run_sink
from sinks.sql import SnapshotError, SqlSink
from tests.support.rows import fresh_engine

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(sqlite_url: str):
    with fresh_engine(sqlite_url) as eng:
        yield eng


def produce(bootstrap: str, prefix: str, events, junk: bool = False) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        case_topic = topics.CASE_EVENTS.name(prefix)
        for e in events:
            producer.send(case_topic, key=e.case_id.encode(), value=e.encode())
        if junk:
            producer.send(case_topic, key=b"AJ-junk", value=b"\xff not an event")
            letter = ev.dead_letter(
                f"{prefix}.reports", 0, 7, b"{oops", "undecodable: not JSON", datetime.now(UTC)
            )
            producer.send(
                topics.DEAD_LETTERS.name(prefix), key=b"reports", value=ev.canonical_json(letter)
            )
        producer.flush(timeout=30)
    finally:
        producer.close()


def count(engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


def many_cases(n: int):
    return [
        sample.eventful_lifecycle(f"AJ{i:03d}", sample.T0 + timedelta(minutes=i)) for i in range(n)
    ]


def drain(stack, engine, prefix: str, name: str = "sink", **kw) -> Progress:
    return run_sink(
        stack.settings, engine, name, drain=True, topic_prefix=prefix, poll_timeout_ms=200, **kw
    )


def test_drain_applies_every_event_once_and_a_second_run_adds_nothing(stack, topic_prefix, engine):
    cases = many_cases(12)
    n = sum(len(c) for c in cases)
    produce(stack.bootstrap, topic_prefix, [e for c in cases for e in c], junk=True)
    seen: list[Progress] = []
    first = drain(stack, engine, topic_prefix, progress=seen.append)
    assert first.caught_up and first.totals.applied == n
    assert first.totals.dead_lettered == 2  # the junk record and the DLQ topic's letter
    assert seen and seen[-1].totals.applied == n
    assert count(engine, "case_events") == n and count(engine, "cases") == 12
    assert count(engine, "dead_letters") == 2
    with engine.connect() as conn:
        partitions = conn.execute(text("SELECT count(DISTINCT partition) FROM case_events"))
        assert partitions.scalar_one() > 1  # spread by the producer's key partitioner
        closed = conn.execute(text("SELECT count(*) FROM cases WHERE status = 'closed'"))
        assert closed.scalar_one() == 12

    again = drain(stack, engine, topic_prefix)
    assert again.caught_up and again.totals.applied == 0 and again.totals.records == 0
    reread = drain(stack, engine, topic_prefix, from_beginning=True)
    assert reread.totals.applied == 0 and reread.totals.stale == n + 2
    assert count(engine, "case_events") == n and count(engine, "dead_letters") == 2


def test_a_live_sink_picks_up_new_events_until_stopped(stack, topic_prefix, engine):
    cases = many_cases(4)
    produce(stack.bootstrap, topic_prefix, cases[0])
    stop = threading.Event()
    result: list[Progress] = []
    thread = threading.Thread(
        target=lambda: result.append(
            run_sink(
                stack.settings, engine, "live", stop, topic_prefix=topic_prefix, poll_timeout_ms=200
            )
        )
    )
    thread.start()
    try:
        produce(stack.bootstrap, topic_prefix, [e for c in cases[1:] for e in c])
        want = sum(len(c) for c in cases)
        deadline = time.monotonic() + 60
        while count(engine, "case_events") < want and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert result[0].totals.applied == want == count(engine, "case_events")


def test_state_as_of_a_moment_and_no_live_continuation(stack, topic_prefix, engine):
    cases = many_cases(3)
    produce(stack.bootstrap, topic_prefix, [e for c in cases for e in c])
    moment = sample.T0 + timedelta(minutes=125)
    snap = drain(stack, engine, topic_prefix, name="audit", until=moment)
    assert snap.totals.after_until > 0
    assert snap.totals.applied + snap.totals.after_until == sum(len(c) for c in cases)
    with engine.connect() as conn:
        latest = conn.execute(text("SELECT max(at) FROM case_events")).scalar_one()
    assert latest <= "2026-11-02 03:05:00.000000"
    with pytest.raises(SnapshotError):
        drain(stack, engine, topic_prefix, name="audit")


def test_kafka_unreachable_is_retried_and_logged_until_stopped(engine, caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    stop = threading.Event()
    threading.Timer(3.0, stop.set).start()
    caplog.set_level(logging.WARNING, logger="gridflow.sinks.runner")
    result = run_sink(
        None,
        engine,
        "lonely",
        stop,
        bootstrap=f"127.0.0.1:{dead_port}",
        topic_prefix="nowhere",
        consumer_config={"api_version_auto_timeout_ms": 500},
        retry_max_s=1.0,
    )
    assert result.totals.applied == 0
    assert "unreachable" in caplog.text and "retrying" in caplog.text


def test_dead_letter_json_is_kept_with_its_original(stack, topic_prefix, engine):
    produce(stack.bootstrap, topic_prefix, [], junk=True)
    drain(stack, engine, topic_prefix)
    with engine.connect() as conn:
        rows = {r.source_topic: r for r in conn.execute(text("SELECT * FROM dead_letters"))}
    assert rows[f"{topic_prefix}.reports"].original == "{oops"
    junk = rows[topics.CASE_EVENTS.name(topic_prefix)]
    assert junk.original_encoding == "hex" and json.loads(json.dumps(junk.reason))


def test_a_failing_database_is_retried_from_the_stored_offsets(
    stack, topic_prefix, engine, monkeypatch, caplog
):
    cases = many_cases(5)
    n = sum(len(c) for c in cases)
    produce(stack.bootstrap, topic_prefix, [e for c in cases for e in c])
    real = SqlSink.apply_batch
    calls = {"n": 0}

    def flaky(self, records):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] in (1, 3):
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        return real(self, records)

    monkeypatch.setattr(SqlSink, "apply_batch", flaky)
    caplog.set_level(logging.WARNING, logger="gridflow.sinks.runner")
    result = drain(stack, engine, topic_prefix, max_records=50, retry_max_s=0.2)
    assert result.totals.applied == n == count(engine, "case_events")
    assert result.totals.duplicates == 0 and "applying a batch failed" in caplog.text
