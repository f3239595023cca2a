"""How a replay's partitions are split among folding processes (sinks.replay_parallel)."""

from __future__ import annotations

from kafka import TopicPartition

from sinks.replay_parallel import PARALLEL_MIN_RECORDS, processes_for, split


def test_a_small_log_is_folded_in_one_process_a_large_one_in_one_per_core(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert processes_for(PARALLEL_MIN_RECORDS - 1, 8, None) == 1
    assert processes_for(PARALLEL_MIN_RECORDS, 8, None) == 2
    assert processes_for(PARALLEL_MIN_RECORDS, 1, None) == 1  # one partition: one fold
    assert processes_for(10, 8, 3) == 3  # asked for
    assert processes_for(10, 2, 3) == 2  # at most one per partition
    assert processes_for(10, 8, 0) == 1


def test_the_cores_are_the_ones_this_process_may_run_on(monkeypatch):
    from sinks.replay_parallel import usable_cores

    monkeypatch.setattr("os.cpu_count", lambda: 64)  # the host's
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {3, 4})  # the container's cpuset
    assert usable_cores() == 2
    monkeypatch.delattr("os.sched_getaffinity")
    assert usable_cores() == 64


def test_partitions_are_split_by_their_records_and_the_dead_letters_go_to_the_first():
    tp = lambda p: TopicPartition("g.case-events", p)  # noqa: E731
    dead = TopicPartition("g.dead-letters", 0)
    targets = {tp(0): 100, tp(1): 10, tp(2): 60, tp(3): 50, dead: 3}
    groups = split(targets, "g.dead-letters", 2)
    assert groups == [{tp(0): 100, tp(1): 10, dead: 3}, {tp(2): 60, tp(3): 50}]  # 113 and 110
    assert split(targets, "g.dead-letters", 8)[0] == {tp(0): 100, dead: 3}
    assert len(split(targets, "g.dead-letters", 8)) == 4  # no empty group
    assert sorted(p for g in split(targets, "g.dead-letters", 3) for p in g) == sorted(targets)


def test_the_shipper_sends_in_order_from_its_thread_and_stops_when_the_parent_is_gone():
    import pickle
    import time
    from multiprocessing import Pipe

    import pytest

    from sinks.replay_parallel import _Shipper

    receiver, sender = Pipe(duplex=False)
    shipper = _Shipper(sender, "sqlite")
    got = []
    for i in range(40):  # more than it queues: the reader below drains them
        shipper.send(("progress", {"n": i}, 0))
        if i % 8 == 7:
            while receiver.poll(0.05):
                got.append(pickle.loads(receiver.recv_bytes()))
    shipper.close()
    while receiver.poll(0.05):
        got.append(pickle.loads(receiver.recv_bytes()))
    assert [m[1]["n"] for m in got] == list(range(40))

    receiver, sender = Pipe(duplex=False)
    shipper = _Shipper(sender, "sqlite")
    receiver.close()  # the parent is gone
    with pytest.raises(OSError):
        for _ in range(1000):
            shipper.send(("rows", "cases", [("x" * 1000,)] * 100))
            time.sleep(0.001)
    shipper.close()  # returns: nothing more is sent


def test_what_a_folding_process_ships_reads_back_as_it_was_sent():
    import pickle
    from datetime import UTC, datetime

    from sinks.replay_parallel import _dumps

    at = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
    same = "AJ0001"  # one string in many rows, as a case id is
    rows = [(f"ev{i}", same, i, "CaseFiled", "2026-11-02T01:00:00.000250+00:00", '{"a":1}',
             None, True, 1.5, -(2**63), "不能解析") for i in range(2000)]
    messages = [
        ("rows", "case_events", rows),
        ("progress", {"records": 3, "applied": 2, "seconds": 0.25}, 17),
        ("dead", [{"id": "d1", "reason": "不能解析", "value": b"\xff\x00", "at": at}]),
        ("next", {("g.case-events", 0): 12, ("g.dead-letters", 0): 3}),
        ("done", [("g.case-events", 0)], 1.75),
        ("error", "RuntimeError: boom"),
    ]
    for message in messages:
        assert pickle.loads(_dumps(message)) == message
    got = pickle.loads(_dumps(messages[0]))[2]
    assert [type(v) for v in got[7]] == [type(v) for v in rows[7]]


def test_timestamps_shipped_as_text_are_the_same_instants():
    from datetime import UTC, datetime, timedelta, timezone

    from sqlalchemy.dialects import postgresql

    from sinks.bulk import converters, utc_iso
    from sinks.models import Base

    assert utc_iso(None) is None
    at = datetime(2026, 11, 2, 1, 0, 0, 250, tzinfo=UTC)
    assert utc_iso(at) == "2026-11-02T01:00:00.000250Z"
    east8 = at.astimezone(timezone(timedelta(hours=8)))
    assert utc_iso(east8) == utc_iso(at) == utc_iso("2026-11-02T09:00:00.000250+08:00")
    assert datetime.fromisoformat(utc_iso(datetime(2026, 1, 1, tzinfo=UTC))) == \
        datetime(2026, 1, 1, tzinfo=UTC)
    table = Base.metadata.tables["case_events"]
    dialect = postgresql.psycopg.dialect()
    live = {name: fn for name, _, fn in converters(table, dialect)}
    shipped = {name: fn for name, _, fn in converters(table, dialect, json_as_text=True,
                                                      times_as_text=True)}
    assert live["at"](east8) == at
    assert datetime.fromisoformat(shipped["at"](east8)) == at
