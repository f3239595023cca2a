"""The replay fast path on the real servers: PostgreSQL (COPY) and Kafka (run_sink replay=True)
build exactly the rows of the live, batch-by-batch sink."""

from __future__ import annotations

import gc
import json
import logging
from datetime import timedelta
from typing import Any

import pytest
from kafka import KafkaProducer
from sqlalchemy import text

from demo import histories as sample
from gridflow import topics
from sinks.models import create_schema, drop_schema, make_engine
from sinks.runner import run_sink
from sinks.sql import SnapshotError, SqlSink
from tests.unit.test_sink_replay_fast import TABLES, fast, live, stream

pytestmark = pytest.mark.integration


def dump_all(engine) -> dict[str, list[str]]:
    """Every table, every column (sink_offsets less updated_at), on SQLite or PostgreSQL."""
    out = {}
    with engine.connect() as conn:
        for table in TABLES:
            skip = {"updated_at"} if table == "sink_offsets" else set()
            out[table] = sorted(
                repr(sorted((k, v) for k, v in r.items() if k not in skip))
                for r in conn.execute(text(f"SELECT * FROM {table}")).mappings()
            )
    return out


def test_fast_replay_into_postgres_builds_the_live_rows(pg_url: str):
    records, dlq = stream()
    engine = make_engine(pg_url)
    results = []
    for build in (live, fast):
        drop_schema(engine)
        build(pg_url, records, dlq)
        results.append(dump_all(engine))
    engine.dispose()
    want, got = results
    assert want["case_events"] and want["dead_letters"]
    for table in TABLES:
        assert got[table] == want[table], table


def schema_of(engine) -> list[tuple[str, ...]]:
    """Every index (its definition) and constraint (its definition) of the database's tables."""
    with engine.connect() as conn:
        indexes = conn.execute(text(
            "SELECT tablename, indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = current_schema()")).all()
        constraints = conn.execute(text(
            "SELECT t.relname, k.conname, pg_get_constraintdef(k.oid) FROM pg_constraint k "
            "JOIN pg_class t ON t.oid = k.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
            "WHERE n.nspname = current_schema()")).all()
    return sorted(tuple(r) for r in [*indexes, *constraints])


def test_a_replay_into_postgres_builds_its_indexes_at_the_commit(pg_url: str):
    """The indexes and keys are dropped inside the transaction (none while the rows go in, and
    an index an operator added is among them) and the commit builds each again as it was."""
    records, dlq = stream()
    engine = make_engine(pg_url)
    create_schema(engine)
    with engine.begin() as conn:
        conn.execute(text("CREATE INDEX ix_operator_added ON case_events (at)"))
    before = schema_of(engine)
    assert any("ix_operator_added" in r[1] for r in before)
    assert any("PRIMARY KEY (event_id)" in r[2] for r in before)
    seen: list[Any] = []

    def begun(replayer: Any) -> None:
        with replayer._writer.raw.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() "
                        "AND tablename = ANY(%s)", (list(TABLES),))
            seen.append(cur.fetchone()[0])
            cur.execute("SHOW lock_timeout")  # the drop's own timeout is not the transaction's
            seen.append(cur.fetchone()[0])
        seen.append(len(replayer._writer.rebuild))

    got = fast(pg_url, records, dlq, begun=begun)
    indexes = [r for r in before if r[0] in TABLES and r[2].startswith("CREATE ")]
    assert seen == [0, "0", len(indexes)]  # none while the rows go in; each built again, once
    assert schema_of(engine) == before
    assert got["case_events"]
    engine.dispose()


def test_a_failed_replay_into_postgres_leaves_its_indexes(pg_url: str):
    """A duplicate key found when the commit builds the keys fails the replay: nothing is
    written and every index and key is as it was."""
    from sinks.models import DeadLetter, table_of

    records, dlq = stream()
    engine = make_engine(pg_url)
    create_schema(engine)
    before = schema_of(engine)

    def begun(replayer: Any) -> None:  # a dead letter written now, and again at the finish
        replayer.add_dead_letter_records(dlq[:1])
        replayer._write(table_of(DeadLetter), list(replayer.dead.values()))

    with pytest.raises(Exception, match="dead_letters_pkey|duplicate key"):
        fast(pg_url, records, dlq, begun=begun)
    assert schema_of(engine) == before
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM case_events")).scalar() == 0
        assert conn.execute(text("SELECT count(*) FROM dead_letters")).scalar() == 0
    engine.dispose()


def test_a_replay_into_postgres_another_session_reads_keeps_the_indexes(pg_url: str, caplog):
    """A session holding a read lock on a table: the replay does not wait for it (beyond the
    lock timeout), writes through the indexes, and builds the live rows."""
    import psycopg

    records, dlq = stream()
    engine = make_engine(pg_url)
    create_schema(engine)
    before = schema_of(engine)
    reader = psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"))
    reader.execute("SELECT count(*) FROM tasks").fetchone()  # its transaction stays open
    caplog.set_level(logging.INFO, logger="gridflow.sinks.replay_fast")
    rebuilt: list[int] = []
    try:
        got = fast(pg_url, records, dlq,
                   begun=lambda r: rebuilt.append(len(r._writer.rebuild)))
    finally:
        reader.rollback()
        reader.close()
    assert rebuilt == [0]
    assert "indexes stay in place" in caplog.text
    assert schema_of(engine) == before
    drop_schema(engine)
    want = live(pg_url, records, dlq)
    for table in TABLES:
        assert got[table] == want[table], table
    engine.dispose()


def produce(bootstrap: str, prefix: str, events: list[Any]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        for e in events:
            producer.send(topics.CASE_EVENTS.name(prefix), key=e.case_id.encode(), value=e.encode())
        producer.send(topics.CASE_EVENTS.name(prefix), key=b"AJ-junk", value=b"\xff junk")
        producer.flush(timeout=30)
    finally:
        producer.close()


def counting_freezes(monkeypatch) -> list[int]:
    """gc.freeze, counted: the fast path freezes what each batch leaves (sinks.runner)."""
    calls, freeze = [], gc.freeze
    monkeypatch.setattr(gc, "freeze", lambda: (calls.append(1), freeze())[1])
    return calls


def test_run_sink_replay_equals_the_batch_by_batch_drain(stack, topic_prefix, tmp_path, caplog,
                                                         monkeypatch):
    cases = [sample.eventful_lifecycle(f"AJ{i:03d}", sample.T0 + timedelta(minutes=i))
             for i in range(10)]
    produce(stack.bootstrap, topic_prefix, [e for c in cases for e in c])
    caplog.set_level(logging.INFO, logger="gridflow.sinks.runner")
    freezes = counting_freezes(monkeypatch)
    dumps = []
    # the fast path reads with aiokafka (sinks.runner._BulkReader), or with kafka-python when
    # the caller passes client settings of its own; or folds in processes
    for name, replay, config, processes in (
            ("live", False, None, None), ("fast", True, None, 1),
            ("fast-kafka-python", True, {"fetch_min_bytes": 1}, None),
            ("fast-2-processes", True, None, 2)):
        engine = make_engine(f"sqlite:///{tmp_path / f'{name}.db'}")
        create_schema(engine)
        progress = run_sink(stack.settings, engine, "sql-sink", drain=True, replay=replay,
                            topic_prefix=topic_prefix, poll_timeout_ms=200, max_records=50,
                            consumer_config=config, replay_processes=processes)
        assert progress.caught_up and progress.totals.applied == sum(len(c) for c in cases)
        assert "fast path" not in caplog.text  # taken, and it did not fail
        assert ("folded in 2 processes" in caplog.text) == (processes == 2)
        caplog.clear()
        # the fold's heap was frozen batch by batch (in the folding processes, when there
        # are), and is collectable again afterwards
        assert bool(freezes) == (replay and processes != 2) and gc.get_freeze_count() == 0
        freezes.clear()
        dumps.append(dump_all(engine))
        if replay:  # a replayed database goes on live, and finds nothing new
            again = run_sink(stack.settings, engine, "sql-sink", drain=True,
                             topic_prefix=topic_prefix, poll_timeout_ms=200)
            assert again.caught_up and again.totals.records == 0
            # not empty any more: replay=True applies batch by batch, and adds nothing
            more = run_sink(stack.settings, engine, "sql-sink", drain=True, replay=True,
                            topic_prefix=topic_prefix, poll_timeout_ms=200, from_beginning=True)
            assert more.totals.applied == 0
            assert dump_all(engine)["case_events"] == dumps[-1]["case_events"]
        engine.dispose()
    want, *got = dumps
    for table in TABLES:
        assert [g[table] for g in got] == [want[table]] * len(got), table


def test_run_sink_replay_until_is_a_snapshot(stack, topic_prefix, tmp_path):
    events = sample.eventful_lifecycle("AJ1")
    produce(stack.bootstrap, topic_prefix, events)
    moment = sample.T0 + timedelta(minutes=125)
    dumps = []
    for name, replay in (("live", False), ("fast", True)):
        engine = make_engine(f"sqlite:///{tmp_path / f'{name}.db'}")
        create_schema(engine)
        run_sink(stack.settings, engine, "sql-sink", drain=True, replay=replay, until=moment,
                 topic_prefix=topic_prefix, poll_timeout_ms=200)
        dumps.append(dump_all(engine))
        with pytest.raises(SnapshotError):
            SqlSink(engine, "sql-sink").check_resumable()
        engine.dispose()
    assert dumps[0] == dumps[1]


def test_a_failed_fast_replay_leaves_nothing_frozen(stack, topic_prefix, tmp_path, caplog,
                                                    monkeypatch):
    from sinks import replay_fast

    events = sample.eventful_lifecycle("AJ1")
    produce(stack.bootstrap, topic_prefix, events)
    freezes = counting_freezes(monkeypatch)

    def broken(self):
        raise OSError("disk full")

    monkeypatch.setattr(replay_fast.Replayer, "finish", broken)
    engine = make_engine(f"sqlite:///{tmp_path / 'failed.db'}")
    create_schema(engine)
    progress = run_sink(stack.settings, engine, "sql-sink", drain=True, replay=True,
                        topic_prefix=topic_prefix, poll_timeout_ms=200)
    engine.dispose()
    assert "the replay fast path failed (OSError: disk full)" in caplog.text
    assert progress.caught_up and progress.totals.applied == len(events)  # batch by batch
    assert freezes and gc.get_freeze_count() == 0
    assert gc.isenabled()  # collections were off only while the fast path folded


def test_the_fast_path_folds_without_collections_and_leaves_the_collector_as_it_found_it(
        stack, topic_prefix, tmp_path, monkeypatch):
    from sinks import replay_fast

    produce(stack.bootstrap, topic_prefix, sample.eventful_lifecycle("AJ1"))
    seen: list[bool] = []
    fold = replay_fast.Replayer.add_polled

    def watched(self, polled, dead_topic):  # type: ignore[no-untyped-def]
        seen.append(gc.isenabled())
        return fold(self, polled, dead_topic)

    monkeypatch.setattr(replay_fast.Replayer, "add_polled", watched)
    for enabled in (True, False):
        (gc.enable if enabled else gc.disable)()
        try:
            engine = make_engine(f"sqlite:///{tmp_path / f'gc-{enabled}.db'}")
            create_schema(engine)
            progress = run_sink(stack.settings, engine, "sql-sink", drain=True, replay=True,
                                topic_prefix=topic_prefix, poll_timeout_ms=200)
            engine.dispose()
            assert progress.caught_up and progress.totals.applied
            assert gc.isenabled() is enabled
        finally:
            gc.enable()
    assert seen and not any(seen)


# --- folded in processes (sinks.replay_parallel) -----------------------------------------------


def test_replay_folded_in_processes_builds_the_live_rows_in_postgres(stack, topic_prefix, pg_url,
                                                                   caplog):
    """Cases on every partition, a record that cannot be decoded, a dead letter on its own
    topic and an `until`: the rows of two folding processes are the live sink's."""
    from gridflow.events import dead_letter

    cases = [sample.eventful_lifecycle(f"AJ{i:03d}", sample.T0 + timedelta(minutes=i))
             for i in range(12)]
    produce(stack.bootstrap, topic_prefix, [e for c in cases for e in c])
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    letter = dead_letter("x.reports", 0, 7, b"{oops", "not JSON", sample.T0)
    producer.send(topics.DEAD_LETTERS.name(topic_prefix), value=json.dumps(letter).encode())
    producer.flush(timeout=30)
    producer.close()
    caplog.set_level(logging.INFO, logger="gridflow.sinks.runner")
    engine = make_engine(pg_url)
    dumps = []
    for until in (None, sample.T0 + timedelta(minutes=130)):
        for replay, processes in ((False, None), (True, 2)):
            drop_schema(engine)
            create_schema(engine)
            caplog.clear()
            progress = run_sink(stack.settings, engine, "sql-sink", drain=True, replay=replay,
                                topic_prefix=topic_prefix, poll_timeout_ms=200, until=until,
                                replay_processes=processes)
            assert progress.caught_up
            assert ("folded in 2 processes" in caplog.text) == replay
            assert "fast path" not in caplog.text  # taken, and it did not fail
            dumps.append(dump_all(engine))
    engine.dispose()
    live_all, fast_all, live_until, fast_until = dumps
    assert live_all["dead_letters"] and len(live_all["case_events"]) == sum(map(len, cases))
    assert live_until["case_events"] != live_all["case_events"]
    for table in TABLES:
        assert fast_all[table] == live_all[table], table
        assert fast_until[table] == live_until[table], table


def test_an_event_on_two_partitions_fails_the_folds_and_the_log_is_applied_batch_by_batch(
        stack, topic_prefix, tmp_path, caplog):
    """The live sink applies an event id once, whichever partition holds it; folds apart,
    each partition would apply it. The parent's insert refuses the second, the replay
    fails as a whole and the batch-by-batch path builds the live rows."""
    events = sample.eventful_lifecycle("AJ1")
    name = topics.CASE_EVENTS.name(topic_prefix)
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    for e in events:
        producer.send(name, key=b"AJ1", value=e.encode(), partition=0)
    producer.send(name, key=b"AJ1", value=events[0].encode(), partition=1)
    producer.flush(timeout=30)
    producer.close()
    caplog.set_level(logging.INFO, logger="gridflow.sinks.runner")
    dumps = []
    for processes, replay in ((None, False), (2, True)):
        engine = make_engine(f"sqlite:///{tmp_path / f'{processes}.db'}")
        create_schema(engine)
        progress = run_sink(stack.settings, engine, "sql-sink", drain=True, replay=replay,
                            topic_prefix=topic_prefix, poll_timeout_ms=200,
                            replay_processes=processes)
        assert progress.caught_up and progress.totals.applied == len(events)
        dumps.append(dump_all(engine))
        engine.dispose()
    assert "the replay fast path failed (IntegrityError" in caplog.text
    assert dumps[0] == dumps[1]


def test_a_folding_process_that_fails_fails_the_replay_and_leaves_nothing(tmp_path):
    from kafka import TopicPartition

    from sinks.replay_fast import Replayer
    from sinks.replay_parallel import FoldFailed, ParallelFold

    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    create_schema(engine)
    replayer = Replayer(engine)
    replayer.begin()
    fold = ParallelFold(replayer, [{TopicPartition("x.case-events", 0): 5},
                                   {TopicPartition("x.case-events", 1): 5}],
                        bootstrap="127.0.0.1:1", dead_topic="x.dead-letters",
                        poll_timeout_ms=200, stop=lambda: False, progress=lambda s, lag: None)
    with pytest.raises(FoldFailed, match=r"gridflow-replay-fold-\d: Kafka"):
        fold.run()
    assert not fold.procs  # every process ended
    replayer.abort()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM case_events")).scalar() == 0
    engine.dispose()


def test_a_stopped_parallel_fold_ends_its_processes(tmp_path):
    from kafka import TopicPartition

    from sinks.replay_fast import Replayer
    from sinks.replay_parallel import ParallelFold

    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    create_schema(engine)
    replayer = Replayer(engine)
    replayer.begin()
    fold = ParallelFold(replayer, [{TopicPartition("x.case-events", 0): 5}],
                        bootstrap="127.0.0.1:1", dead_topic="x.dead-letters",
                        poll_timeout_ms=200, stop=lambda: True, progress=lambda s, lag: None)
    assert fold.run() is False
    assert not fold.procs
    replayer.abort()
    engine.dispose()


def test_a_folding_process_killed_fails_the_replay_and_the_log_is_applied_batch_by_batch(
        stack, topic_prefix, tmp_path, caplog):
    """SIGKILL of a folding process as soon as it is there: the parent sees its pipe end,
    nothing of the replay is written, and the batch-by-batch path builds the live rows."""
    import multiprocessing
    import os
    import signal
    import threading
    import time

    cases = [sample.eventful_lifecycle(f"AJ{i:03d}", sample.T0 + timedelta(minutes=i))
             for i in range(8)]
    produce(stack.bootstrap, topic_prefix, [e for c in cases for e in c])
    caplog.set_level(logging.INFO, logger="gridflow.sinks.runner")
    killed: list[str] = []

    def kill_first() -> None:
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            for child in multiprocessing.active_children():
                if child.name.startswith("gridflow-replay-fold") and child.pid:
                    os.kill(child.pid, signal.SIGKILL)
                    killed.append(child.name)
                    return
            time.sleep(0.01)

    dumps = []
    for name, replay, processes in (("live", False, None), ("killed", True, 2)):
        engine = make_engine(f"sqlite:///{tmp_path / f'{name}.db'}")
        create_schema(engine)
        killer = threading.Thread(target=kill_first) if replay else None
        if killer is not None:
            killer.start()
        progress = run_sink(stack.settings, engine, "sql-sink", drain=True, replay=replay,
                            topic_prefix=topic_prefix, poll_timeout_ms=200,
                            replay_processes=processes)
        if killer is not None:
            killer.join()
        assert progress.caught_up and progress.totals.applied == sum(map(len, cases))
        dumps.append(dump_all(engine))
        engine.dispose()
    assert killed
    assert "the replay fast path failed (FoldFailed: gridflow-replay-fold-" in caplog.text
    assert "ended without finishing (exit code -9)" in caplog.text
    assert not [c for c in multiprocessing.active_children()
                if c.name.startswith("gridflow-replay-fold")]
    assert dumps[0] == dumps[1]
