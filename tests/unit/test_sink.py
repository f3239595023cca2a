"""The SQL sink on SQLite: events made by the real aggregate land in the right rows, exactly once."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from demo import histories as sample
from gridflow import events as ev
from gridflow.events import Message
from sinks import projector
from sinks.models import (
    DB_SCHEMA_VERSION,
    CaseEvent,
    DeadLetter,
    SchemaVersion,
    SchemaVersionError,
    create_schema,
    make_engine,
)
from sinks.sql import Record, SnapshotError, SqlSink
from tests.support.rows import dump, fresh_engine

TOPIC, DLQ = "t.case-events", "t.dead-letters"


@pytest.fixture
def engine(tmp_path):
    with fresh_engine(f"sqlite:///{tmp_path / 'read-models.db'}") as eng:
        yield eng


@pytest.fixture
def sink(engine):
    return SqlSink(engine, "test-sink")


def rows(engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(sql), params).mappings()]


def by_id(engine, table: str, key: str) -> dict[str, dict[str, Any]]:
    return {r[key]: r for r in rows(engine, f"SELECT * FROM {table}")}


def test_a_full_case_lifecycle_lands_in_the_right_rows(engine, sink):
    events = sample.eventful_lifecycle("AJ1")
    stats = sink.apply_batch(sample.records(events, TOPIC))
    assert (stats.applied, stats.dead_lettered, stats.duplicates) == (len(events), 0, 0)

    case = by_id(engine, "cases", "case_id")["AJ1"]
    assert case["status"] == "closed" and case["rating"] == 5
    assert case["category_name"] == "暴露垃圾" and case["grid_code"] == "G1"
    assert case["reporter"] == sample.WORKER and case["lat"] == 30.1
    assert case["event_count"] == case["last_seq"] == len(events)
    assert case["last_hash"] == events[-1].hash() and case["chain_broken_at_seq"] is None

    tasks = by_id(engine, "tasks", "task_id")
    t1, t2, t3, t4 = (tasks[f"AJ1-T0{i}"] for i in range(1, 5))
    assert (t1["department"], t1["state"]) == ("D-CG", "closed")
    assert t1["on_time_sign"] == 0 and t1["escalation_level"] == 1  # signed late, escalated
    assert t1["extensions"] == 1 and t1["pending_extension"] is None  # one granted, one refused
    assert t1["reopened"] == 2 and t1["deadline_state"] == "on_time"
    assert (t2["state"], t2["sent_back"], t2["reroute_to"]) == ("sent_back", 1, "D-SL")
    assert (t3["department"], t3["dispatch_reason"], t3["replaces_task"]) == (
        "D-SL",
        "sent_back",
        "AJ1-T02",
    )
    assert (t4["state"], t4["whistled"], t4["dispatch_reason"]) == ("cancelled", 1, "whistle")

    reports = by_id(engine, "reports", "report_id")
    assert reports["AJ1-R1"]["merged"] == 0 and reports["AJ1-R1"]["address"] == "青山村村委会旁"
    assert reports["AJ1-R2"]["merged"] == 1 and reports["AJ1-R2"]["distance_m"] == 12.5

    photos = rows(engine, "SELECT * FROM photos ORDER BY added_at, id")
    assert [p["role"] for p in photos].count("before") == 2
    archived = [p for p in photos if p["archive_status"] == "archived"]
    assert {(p["role"], p["report_id"] or p["task_id"]) for p in archived} == {
        ("before", "AJ1-R1"),
        ("after", "AJ1-T01"),
    }
    assert all(p["archive_key"].startswith("sha256/") and p["exif_lat"] == 30.1 for p in archived)

    history = [
        h["type"]
        for h in rows(
            engine, "SELECT type FROM task_history WHERE task_id = 'AJ1-T01' ORDER BY seq"
        )
    ]
    assert history[:6] == [
        ev.TASK_DISPATCHED,
        ev.DEADLINE_WARNED,
        ev.DEADLINE_BREACHED,
        ev.TASK_ESCALATED,
        ev.TASK_SIGNED,
        ev.EXTENSION_REQUESTED,
    ]
    assert ev.COMMAND_REFUSED in history and ev.PHOTO_ARCHIVED in history

    ledger = rows(engine, "SELECT * FROM case_events ORDER BY seq")
    assert [e["event_id"] for e in ledger] == [e.id for e in events]
    assert [e["hash"] for e in ledger] == [e.hash() for e in events]
    assert ledger[3]["offset"] == 3 and ledger[3]["topic"] == TOPIC

    refused = rows(engine, "SELECT * FROM command_outcomes WHERE accepted = 0")
    assert len(refused) == 1 and refused[0]["command_type"] == ev.SIGN_TASK
    assert refused[0]["code"] == "bad_state" and "已结案" in refused[0]["reason_zh"]
    filed = rows(engine, "SELECT * FROM command_outcomes WHERE command_id = 'AJ1-c1'")
    assert filed[0]["accepted"] == 1 and filed[0]["command_type"] == ev.FILE_REPORT


def test_timestamps_read_back_timezone_aware_utc(engine, sink):
    events = sample.simple_lifecycle("AJ1")
    sink.apply_batch(sample.records(events, TOPIC))
    with Session(engine) as session:
        at = session.execute(select(CaseEvent.at).where(CaseEvent.seq == 1)).scalar_one()
    assert at.tzinfo is not None and at.utcoffset() == timedelta(0)
    assert at == events[0].at_dt


def test_the_same_batch_applied_twice_changes_nothing(engine, sink):
    batch = sample.records(sample.eventful_lifecycle("AJ1") + sample.not_filed("AJ2"), TOPIC)
    sink.apply_batch(batch)
    before = dump(engine)
    again = sink.apply_batch(batch)
    assert again.applied == 0 and again.stale == len(batch)
    assert dump(engine) == before


def test_events_redelivered_at_new_offsets_are_dropped_by_event_id(engine, sink):
    events = sample.simple_lifecycle("AJ1")
    sink.apply_batch(sample.records(events, TOPIC))
    before = dump(engine)
    # a producer retry wrote them again further on, and once more within the same batch
    redelivered = sample.records(events + events, TOPIC, first_offset=100)
    stats = sink.apply_batch(redelivered)
    assert stats.applied == 0 and stats.duplicates == 2 * len(events)
    after = dump(engine)
    assert after.pop("sink_offsets") != before.pop("sink_offsets")  # the position moved on
    assert after == before


def test_an_undecodable_record_is_dead_lettered_and_the_rest_applies(engine, sink):
    events = sample.simple_lifecycle("AJ1")
    good = sample.records(events, TOPIC)
    bad = [
        Record(TOPIC, 0, len(good), b"AJ1", b"\xff\xfe not json", 1_700_000_000_000),
        Record(TOPIC, 0, len(good) + 1, b"AJ1", b'{"type": "CaseFiled"}', 1_700_000_000_000),
        Record(TOPIC, 0, len(good) + 2, b"AJ1", None, 1_700_000_000_000),
    ]
    batch = good[:3] + bad + good[3:]
    stats = sink.apply_batch(batch)
    assert (stats.applied, stats.dead_lettered) == (len(events), 3)
    dead = {d["offset"]: d for d in rows(engine, "SELECT * FROM dead_letters")}
    assert dead[len(good)]["original_encoding"] == "hex"
    assert "not valid JSON" in dead[len(good)]["reason"]
    assert dead[len(good) + 1]["original"] == '{"type": "CaseFiled"}'
    assert "'id'" in dead[len(good) + 1]["reason"]
    assert all(d["source_topic"] == TOPIC for d in dead.values())
    assert by_id(engine, "cases", "case_id")["AJ1"]["status"] == "closed"
    assert sink.next_offsets(TOPIC) == {0: len(batch)}
    # redelivered after a crash before the Kafka side noticed: still once
    fresh = SqlSink(engine, "another-consumer")
    assert fresh.apply_batch(batch).dead_lettered == 0
    assert len(rows(engine, "SELECT id FROM dead_letters")) == 3


def test_an_older_offset_redelivered_out_of_order_is_skipped(engine, sink):
    batch = sample.records(sample.simple_lifecycle("AJ1"), TOPIC)
    first = sink.apply_batch(batch[:4])
    assert first.applied == 4
    late = sink.apply_batch([batch[1], batch[4], batch[2]])  # a seek back, then out of order
    assert (late.stale, late.applied) == (2, 1)
    rest = sink.apply_batch(batch[3:])
    assert (rest.stale, rest.applied) == (2, len(batch) - 5)
    seqs = [r["seq"] for r in rows(engine, "SELECT seq FROM case_events ORDER BY seq")]
    assert seqs == list(range(1, len(batch) + 1))
    assert by_id(engine, "cases", "case_id")["AJ1"]["chain_broken_at_seq"] is None


def test_how_a_stream_is_cut_into_batches_does_not_change_the_rows(tmp_path):
    cases = [
        sample.eventful_lifecycle(f"AJ{i}", sample.T0 + timedelta(minutes=7 * i)) for i in range(5)
    ] + [sample.not_filed("AJX")]
    stream = sample.interleaved(cases, TOPIC)
    dumps = []
    for size in (len(stream), 1, 7, 50):
        eng = make_engine(f"sqlite:///{tmp_path / f'cut-{size}.db'}")
        create_schema(eng)
        s = SqlSink(eng, "cut")
        for i in range(0, len(stream), size):
            s.apply_batch(stream[i : i + size])
        d = dump(eng)
        d.pop("sink_offsets")  # written at different wall times
        dumps.append(d)
        eng.dispose()
    assert all(d == dumps[0] for d in dumps[1:])
    assert len(dumps[0]["case_events"]) == sum(len(c) for c in cases)


def test_an_unknown_event_type_reaches_the_ledger_only(engine, sink):
    events = sample.simple_lifecycle("AJ1")
    last = events[-1]
    novel = Message(
        id="e-new",
        type="CaseTeleported",
        case_id="AJ1",
        at=last.at,
        actor="system",
        data={"to": "moon"},
        causation_id="c-new",
        seq=last.seq + 1,
        prev_hash=last.hash(),
    )
    stats = sink.apply_batch(sample.records([*events, novel], TOPIC))
    assert stats.unknown_types == 1 and stats.applied == len(events) + 1
    case = by_id(engine, "cases", "case_id")["AJ1"]
    assert case["status"] == "closed" and case["last_seq"] == novel.seq
    assert case["chain_broken_at_seq"] is None
    assert rows(engine, "SELECT type FROM case_events WHERE event_id = 'e-new'")


def test_a_broken_hash_chain_is_flagged_not_refused(engine, sink):
    events = sample.simple_lifecycle("AJ1")
    forged = Message(**{**events[3].to_dict(), "prev_hash": "0" * 64})
    stats = sink.apply_batch(sample.records([*events[:3], forged, *events[4:]], TOPIC))
    assert stats.applied == len(events)
    assert by_id(engine, "cases", "case_id")["AJ1"]["chain_broken_at_seq"] == 4


def test_an_event_that_cannot_be_folded_leaves_no_trace_but_a_dead_letter(
    engine, sink, monkeypatch
):
    events = sample.simple_lifecycle("AJ1")
    sink.apply_batch(sample.records(events[:2], TOPIC))  # filed and dispatched

    def half_then_fail(rm, m, e, at, case):
        rm.task(m.case_id, e.task_id, e.department, at)["state"] = "mangled"
        case["status"] = "mangled"
        raise KeyError("boom")

    monkeypatch.setitem(projector.HANDLERS, ev.TASK_SIGNED, half_then_fail)
    stats = sink.apply_batch(sample.records(events[2:4], TOPIC, first_offset=2))
    assert (stats.applied, stats.dead_lettered) == (1, 1)
    task = by_id(engine, "tasks", "task_id")["AJ1-T01"]
    assert task["state"] == "in_progress"  # the progress note applied, the signing did not
    case = by_id(engine, "cases", "case_id")["AJ1"]
    assert case["status"] == "open" and case["event_count"] == 3
    dead = rows(engine, "SELECT reason FROM dead_letters")
    assert len(dead) == 1 and "cannot fold TaskSigned" in dead[0]["reason"]


def test_dead_letter_topic_records_are_kept_once(engine, sink):
    at = sample.T0
    letter = ev.dead_letter("t.reports", 2, 17, b'{"broken"', "undecodable: not valid JSON", at)
    binary = ev.dead_letter("t.reports", 2, 18, b"\x00\xff", "undecodable", at)
    batch = [
        Record(DLQ, 0, 0, b"t.reports", ev.canonical_json(letter), 0),
        Record(DLQ, 0, 1, b"t.reports", ev.canonical_json(binary), 0),
        Record(DLQ, 0, 2, None, b"not a dead letter", 0),
    ]
    stats = sink.apply_dead_letter_batch(batch)
    assert stats.dead_lettered == 3
    kept = by_id(engine, "dead_letters", "id")
    assert kept[letter["id"]]["original"] == '{"broken"' and kept[letter["id"]]["offset"] == 17
    assert kept[binary["id"]]["original_encoding"] == "hex"
    malformed = [d for d in kept.values() if d["source_topic"] == DLQ]
    assert len(malformed) == 1 and "malformed dead letter" in malformed[0]["reason"]
    with Session(engine) as session:
        assert session.get(DeadLetter, letter["id"]).at == at
    again = SqlSink(engine, "other").apply_dead_letter_batch(batch)
    assert again.dead_lettered == 0 and again.duplicates == 3
    assert sink.next_offsets(DLQ) == {0: 3}


def test_until_builds_the_state_as_of_a_moment_and_cannot_be_continued_live(engine):
    events = sample.eventful_lifecycle("AJ1")
    moment = sample.T0 + timedelta(minutes=125)  # after the escalation, before the signing
    as_of = SqlSink(engine, "audit", until=moment)
    stats = as_of.apply_batch(sample.records(events, TOPIC))
    assert stats.applied + stats.after_until == len(events) and stats.after_until > 0
    t1 = by_id(engine, "tasks", "task_id")["AJ1-T01"]
    assert (t1["state"], t1["deadline_state"], t1["escalation_level"]) == (
        "dispatched",
        "escalated",
        1,
    )
    assert by_id(engine, "cases", "case_id")["AJ1"]["status"] == "open"
    with pytest.raises(SnapshotError, match="as of 2026-11-02T03:05"):
        SqlSink(engine, "audit").check_resumable()
    with pytest.raises(SnapshotError):
        SqlSink(engine, "audit").apply_batch(sample.records(events, TOPIC))
    SqlSink(engine, "audit", until=moment.astimezone(UTC)).check_resumable()  # same moment: fine


def test_apply_event_folds_one_event_within_a_session(engine):
    events = sample.simple_lifecycle("AJ1")
    with Session(engine) as session, session.begin():
        for e in events[:2]:
            projector.apply_event(session, e)
    assert by_id(engine, "tasks", "task_id")["AJ1-T01"]["state"] == "dispatched"


def test_create_schema_is_idempotent_and_refuses_a_newer_database(engine):
    assert create_schema(engine) == create_schema(engine) == DB_SCHEMA_VERSION
    with Session(engine) as session, session.begin():
        session.execute(update(SchemaVersion).where(SchemaVersion.id == 1).values(version=99))
    with pytest.raises(SchemaVersionError,
                       match=f"version 99, newer than this build's {DB_SCHEMA_VERSION}"):
        create_schema(engine)


def test_a_version_1_database_gets_the_assignee_columns_and_the_board_indexes(engine, sink):
    sink.apply_batch(sample.records(sample.simple_lifecycle("AJ1"), TOPIC))
    with engine.begin() as conn:  # back to version 1: without the columns and indexes of 2
        for index in ("ix_tasks_state_closed", "ix_tasks_dispatched", "ix_cases_filed",
                      "ix_cases_closed"):
            conn.execute(text(f"DROP INDEX {index}"))
        for column in ("assignee", "assignee_name", "assigned_at"):
            conn.execute(text(f"ALTER TABLE tasks DROP COLUMN {column}"))
        conn.execute(update(SchemaVersion).where(SchemaVersion.id == 1).values(version=1))
    assert create_schema(engine) == DB_SCHEMA_VERSION
    with engine.connect() as conn:
        indexes = {r[0] for r in conn.execute(text("SELECT name FROM sqlite_master "
                                                   "WHERE type = 'index'"))}
    assert {"ix_tasks_state_closed", "ix_cases_filed"} <= indexes
    assert by_id(engine, "tasks", "task_id")["AJ1-T01"]["assignee"] is None


def test_an_assignment_names_the_tasks_assignee(engine, sink):
    events = sample.simple_lifecycle("AJ1")
    dispatched = next(e for e in events if e.type == ev.TASK_DISPATCHED)
    dept = dispatched.data["department"]
    assigned = Message(id="assign-1", type=ev.TASK_ASSIGNED, case_id="AJ1", at=dispatched.at,
                       actor=f"dept:{dept}", seq=dispatched.seq + 1, causation_id="cmd-assign",
                       data={"task_id": "AJ1-T01", "department": dept, "assignee": "ds0028",
                             "assignee_name": "城建监察员"})
    sink.apply_batch(sample.records([*events[:events.index(dispatched) + 1], assigned], TOPIC))
    task = by_id(engine, "tasks", "task_id")["AJ1-T01"]
    assert (task["assignee"], task["assignee_name"]) == ("ds0028", "城建监察员")
    [outcome] = rows(engine, "SELECT * FROM command_outcomes WHERE event_id = 'assign-1'")
    assert outcome["command_type"] == ev.ASSIGN_TASK
