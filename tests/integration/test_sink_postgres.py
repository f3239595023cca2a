"""The SQL sink on the real local PostgreSQL: the same scenarios as on SQLite, plus concurrency."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from demo import histories as sample
from sinks import queries
from sinks.models import create_schema, make_engine
from sinks.sql import Record, SqlSink
from tests.support import rows

pytestmark = pytest.mark.integration

TOPIC = "t.case-events"


@pytest.fixture
def engine(pg_url: str):
    with rows.fresh_engine(pg_url) as eng:
        yield eng


def dump(engine) -> dict[str, list[list[list[str]]]]:
    return rows.dump(engine, rows.READ_MODEL_TABLES, show=str)


def one(engine, sql: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(text(sql)).mappings().one())


def test_a_full_lifecycle_lands_in_the_right_rows_once(engine):
    events = sample.eventful_lifecycle("AJ1") + sample.not_filed("AJ2")
    batch = sample.records(events, TOPIC)
    sink = SqlSink(engine, "pg")
    assert sink.apply_batch(batch).applied == len(events)
    case = one(engine, "SELECT * FROM cases WHERE case_id = 'AJ1'")
    assert (case["status"], case["rating"], case["last_hash"]) == ("closed", 5, events[-2].hash())
    assert case["filed_at"] == sample.T0 and case["filed_at"].tzinfo is not None
    t1 = one(engine, "SELECT * FROM tasks WHERE task_id = 'AJ1-T01'")
    assert (t1["state"], t1["extensions"], t1["reopened"], t1["escalation_level"]) == (
        "closed",
        1,
        2,
        1,
    )
    ledger = one(engine, "SELECT data, hash FROM case_events WHERE seq = 1 AND case_id = 'AJ1'")
    assert ledger["data"]["report"]["description"] == "垃圾桶满溢"  # JSONB round trip
    assert ledger["hash"] == events[0].hash()
    before = dump(engine)
    again = sink.apply_batch(batch)
    assert again.applied == 0 and again.stale == len(batch)
    assert SqlSink(engine, "other").apply_batch(batch).duplicates == len(batch)
    assert dump(engine) == before


def test_undecodable_and_out_of_order_records(engine):
    batch = sample.records(sample.simple_lifecycle("AJ1"), TOPIC)
    sink = SqlSink(engine, "pg")
    junk = Record(TOPIC, 1, 0, None, b"\x80garbage", 0)
    stats = sink.apply_batch([*batch[:3], junk])
    assert (stats.applied, stats.dead_lettered) == (3, 1)
    late = sink.apply_batch([batch[1], *batch[3:]])
    assert late.stale == 1 and late.applied == len(batch) - 3
    dead = one(engine, "SELECT * FROM dead_letters")
    assert (dead["original_encoding"], dead["partition"], dead["offset"]) == ("hex", 1, 0)
    assert one(engine, "SELECT status FROM cases")["status"] == "closed"
    assert sink.next_offsets(TOPIC) == {0: len(batch), 1: 1}


def test_two_instances_of_one_consumer_apply_a_batch_once(engine):
    cases = [
        sample.eventful_lifecycle(f"AJ{i}", sample.T0 + timedelta(minutes=i)) for i in range(20)
    ]
    batch = sample.interleaved(cases, TOPIC)
    results = []

    def apply() -> None:
        results.append(SqlSink(engine, "twin").apply_batch(batch))

    threads = [threading.Thread(target=apply) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.applied for r in results) == len(batch)
    assert one(engine, "SELECT count(*) AS n FROM case_events")["n"] == len(batch)


def test_create_schema_from_several_processes_at_once(pg_url: str):
    engines = [make_engine(pg_url) for _ in range(3)]
    errors: list[BaseException] = []

    def create(eng) -> None:  # type: ignore[no-untyped-def]
        try:
            create_schema(eng)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for eng in engines:
        eng.dispose()
    assert errors == []


def test_read_helpers_on_postgres(engine):
    s = sample.Script("AJ3")
    s.file("AJ3-R1")
    events = sample.eventful_lifecycle("AJ1") + s.events
    SqlSink(engine, "pg").apply_batch(sample.records(events, TOPIC))
    with Session(engine) as session:
        late = sample.T0 + timedelta(hours=3)
        overdue = queries.department_inbox(session, "D-CG", overdue=True, now=late)
        assert [t["task_id"] for t in overdue] == ["AJ3-T01"]
        assert overdue[0]["remaining_s"] == -3600
        assert queries.report_status(session, "AJ1-R2")["merged"] is True
        assert queries.command_outcome(session, "AJ1-c20")["accepted"] is False
        assert len(queries.task_rows_for_metrics(session)) == 5
        assert queries.case_detail(session, "AJ1")["tasks"][0]["history"]
