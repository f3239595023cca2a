"""The replay fast path (sinks.replay_fast) builds exactly the rows the live sink builds."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest

from demo import histories as sample
from gridflow import events as ev
from sinks import projector
from sinks.models import create_schema, make_engine
from sinks.replay_fast import NotEmpty, Replayer
from sinks.sql import Record, SnapshotError, SqlSink
from tests.support.rows import TABLES, dump

TOPIC, DLQ = "t.case-events", "t.dead-letters"


def stream() -> tuple[list[Record], list[Record]]:
    """Case events of every type over 4 partitions, with redeliveries, an unknown type, a broken
    chain and undecodable records; and a dead-letters topic."""
    cases = [sample.eventful_lifecycle(f"AJ{i}", sample.T0 + timedelta(minutes=7 * i))
             for i in range(12)] + [sample.not_filed("AJX"), sample.simple_lifecycle("AJS")]
    odd = sample.simple_lifecycle("AJU", sample.T0 + timedelta(minutes=3))
    odd[2] = dataclasses.replace(odd[2], type="SomethingNew")
    odd[4] = dataclasses.replace(odd[4], prev_hash="0" * 64)
    cases.append(odd)
    records = sample.interleaved(cases, TOPIC)
    last = len(records)
    records += [  # a producer retry, and junk
        Record(TOPIC, 0, last + i, r.key, r.value, r.timestamp) for i, r in enumerate(records[:40])
    ] + [
        Record(TOPIC, 1, last + 1, b"AJ1", b"\xff\xfe not json", 1_700_000_000_000),
        Record(TOPIC, 1, last + 2, b"AJ1", b'{"type": "CaseFiled"}', 1_700_000_000_000),
        Record(TOPIC, 1, last + 3, b"AJ1", None, 1_700_000_000_000),
    ]
    letter = ev.dead_letter("t.reports", 2, 17, b'{"broken"', "undecodable", sample.T0)
    dlq = [
        Record(DLQ, 0, 0, b"t.reports", ev.canonical_json(letter), 0),
        Record(DLQ, 0, 1, b"t.reports", ev.canonical_json(letter), 0),
        Record(DLQ, 0, 2, None, b"not a dead letter", 0),
    ]
    return records, dlq


def live(url: str, records: list[Record], dlq: list[Record], **kw: Any) -> dict[str, Any]:
    engine = make_engine(url)
    create_schema(engine)
    sink = SqlSink(engine, "sql-sink", **kw)
    for i in range(0, len(records), 97):
        sink.apply_batch(records[i:i + 97])
    sink.apply_dead_letter_batch(dlq)
    out = dump(engine)
    engine.dispose()
    return out


def fast(url: str, records: list[Record], dlq: list[Record], begun: Any = None,
         **kw: Any) -> dict[str, Any]:
    """The fast path's rows; `begun(replayer)` is called once its transaction is open."""
    engine = make_engine(url)
    create_schema(engine)
    replayer = Replayer(engine, "sql-sink", chunk_rows=50, **kw)
    replayer.begin()
    if begun is not None:
        begun(replayer)
    for i in range(0, len(records), 97):
        replayer.add_case_records(records[i:i + 97])
    replayer.add_dead_letter_records(dlq)
    replayer.finish()
    out = dump(engine)
    engine.dispose()
    return out


def test_fast_replay_builds_the_same_rows_as_the_live_sink(tmp_path):
    records, dlq = stream()
    want = live(f"sqlite:///{tmp_path / 'live.db'}", records, dlq)
    got = fast(f"sqlite:///{tmp_path / 'fast.db'}", records, dlq)
    assert want["case_events"] and want["dead_letters"] and want["command_outcomes"]
    for table in TABLES:
        assert got[table] == want[table], table


def test_fast_replay_until_is_the_same_snapshot_and_cannot_be_continued(tmp_path):
    records, dlq = stream()
    moment = sample.T0 + timedelta(minutes=125)
    want = live(f"sqlite:///{tmp_path / 'live.db'}", records, dlq, until=moment)
    url = f"sqlite:///{tmp_path / 'fast.db'}"
    got = fast(url, records, dlq, until=moment)
    for table in TABLES:
        assert got[table] == want[table], table
    engine = make_engine(url)
    with pytest.raises(SnapshotError):
        SqlSink(engine, "sql-sink").check_resumable()
    engine.dispose()


def test_a_fast_replay_can_be_continued_by_the_live_sink(tmp_path):
    records, dlq = stream()
    half = len(records) // 2
    want = live(f"sqlite:///{tmp_path / 'live.db'}", records, dlq)
    engine = make_engine(f"sqlite:///{tmp_path / 'fast.db'}")
    create_schema(engine)
    replayer = Replayer(engine, "sql-sink")
    replayer.begin()
    replayer.add_case_records(records[:half])
    replayer.finish()
    sink = SqlSink(engine, "sql-sink")
    sink.apply_batch(records)  # the first half is below the stored offsets: skipped
    sink.apply_dead_letter_batch(dlq)
    assert dump(engine) == want
    engine.dispose()


def test_an_event_that_cannot_be_folded_is_dead_lettered_the_same_way(tmp_path, monkeypatch):
    def half_then_fail(rm, m, e, at, case):  # type: ignore[no-untyped-def]
        case["rating"] = 99
        raise ValueError("boom")

    monkeypatch.setitem(projector.HANDLERS, ev.CASE_RATED, half_then_fail)
    records, dlq = stream()
    want = live(f"sqlite:///{tmp_path / 'live.db'}", records, dlq)
    got = fast(f"sqlite:///{tmp_path / 'fast.db'}", records, dlq)
    assert any("boom" in str(row) for row in want["dead_letters"])
    for table in TABLES:
        assert got[table] == want[table], table


def test_the_fast_path_needs_an_empty_database_and_leaves_it_empty_when_aborted(tmp_path):
    records, _ = stream()
    engine = make_engine(f"sqlite:///{tmp_path / 'db.db'}")
    create_schema(engine)
    replayer = Replayer(engine, "sql-sink", chunk_rows=10)
    replayer.begin()
    replayer.add_case_records(records)  # chunks already written inside the transaction
    replayer.abort()
    assert all(not rows for rows in dump(engine).values())
    SqlSink(engine, "someone-else").apply_batch(records[:1])
    with pytest.raises(NotEmpty):
        Replayer(engine, "sql-sink").begin()
    engine.dispose()


def _variants() -> list[bytes]:
    """Case events as producers write them, and the same events written otherwise: other key
    order, spacing, escapes, number and envelope types, odd values in data, broken JSON."""
    import json
    import random

    rnd = random.Random(7)
    values: list[Any] = ["é中文", "\u2028", "\x00\x1f\"\\/", 1.5, 1e16, 1e-7, -0.0, 10**30, True,
                         None, [], {}, {"z": 1, "a": [2, {"y": "x", "b": 3.25}]}, "\ud800x"]
    base = [e.encode() for e in sample.eventful_lifecycle("AJQ")]
    out = list(base)
    for i in range(600):
        d = json.loads(base[i % len(base)])
        for _ in range(2):
            d["data"][rnd.choice(["zz", "a", "task_id", "中"])] = rnd.choice(values)
        if i % 5 == 0:
            d["seq"] = rnd.choice([3, "3", True, 3.0])
        if i % 7 == 0:
            d["schema"] = rnd.choice([1, 1.0, True, 2])
        if i % 11 == 0:
            d["at"] = rnd.choice(["2025-01-01T00:00:00+08:00", "2025-01-01T00:00:00", "bad", 5])
        if i % 13 == 0:
            d.pop(rnd.choice(["causation_id", "prev_hash", "seq", "schema", "data", "id"]), None)
        if i % 17 == 0:
            d[rnd.choice(["case_id", "causation_id", "prev_hash", "data"])] = rnd.choice(values)
        text_ = json.dumps(d, ensure_ascii=rnd.random() < 0.5, sort_keys=rnd.random() < 0.5,
                           separators=rnd.choice([None, (",", ":")]))
        raw = text_.encode("utf-8", "surrogatepass")
        out.append(raw if i % 19 else raw[: len(raw) // 2])
    return out + [b"", b"{", b"[]", b"\xef\xbb\xbf{}", "{}".encode("utf-16-le"), b"null"]


def test_the_quick_decoding_decodes_and_hashes_as_the_live_sink():
    from sinks.sql import _decode_case_event, decode_hashed

    quick = 0
    for raw in _variants():
        try:
            m = _decode_case_event(raw)
        except ev.SchemaError:
            assert decode_hashed(raw) is None, raw
            continue
        got = decode_hashed(raw)
        if got is None:  # the general path decides
            continue
        quick += 1
        try:
            digest = m.hash()
        except UnicodeEncodeError:
            digest = None
        assert got == (m, m.at_dt, digest), raw
        names = [f.name for f in dataclasses.fields(ev.Message)]
        assert [repr(getattr(got[0], f)) for f in names] == [repr(getattr(m, f)) for f in names]
    assert quick > 300


def test_altered_events_break_the_chain_in_the_fast_path_as_in_the_live_sink(tmp_path):
    """Bytes that are not canonical but mean the same event keep the chain; changed content
    (under an unchanged hash chain) breaks it: both exactly as the live sink sees them."""
    import json

    events = sample.simple_lifecycle("AJT")
    raws = [e.encode() for e in events]
    spaced = json.loads(raws[1])
    raws[1] = json.dumps(spaced, ensure_ascii=True, indent=1).encode()  # same event, other bytes
    changed = json.loads(raws[3])
    changed["data"]["note"] = "changed afterwards"
    raws[3] = json.dumps(changed, ensure_ascii=False, sort_keys=True,
                         separators=(",", ":")).encode()  # canonical, but not what was hashed
    records = [Record(TOPIC, 0, i, b"AJT", raw, 1_700_000_000_000) for i, raw in enumerate(raws)]
    want = live(f"sqlite:///{tmp_path / 'live.db'}", records, [])
    got = fast(f"sqlite:///{tmp_path / 'fast.db'}", records, [])
    assert got == want
    (case,) = want["cases"]
    assert ["chain_broken_at_seq", repr(events[4].seq)] in case


def test_a_failed_write_fails_the_replay_and_leaves_the_database_empty(tmp_path, monkeypatch):
    from sinks import replay_fast

    def fail(self, table, rows):  # type: ignore[no-untyped-def]
        raise RuntimeError(f"disk full writing {table.name}")

    records, _ = stream()
    engine = make_engine(f"sqlite:///{tmp_path / 'db.db'}")
    create_schema(engine)
    monkeypatch.setattr(replay_fast._SqliteWriter, "write", fail)
    replayer = Replayer(engine, "sql-sink", chunk_rows=10)
    replayer.begin()
    with pytest.raises(RuntimeError, match="disk full"):
        replayer.add_case_records(records)
        replayer.finish()
    replayer.abort()
    assert all(not rows for rows in dump(engine).values())
    engine.dispose()


def test_json_columns_are_written_compact_and_read_back_as_the_same_values():
    import json
    import math

    import orjson

    from sinks.models import json_text

    engine = make_engine("sqlite://")
    assert engine.dialect._json_serializer is json_text
    for value in ({"b": "é中文", "a": [1.5, 1e16, -0.0, 1e-05, None, True, {"z": "\u2028\x00"}]},
                  [], "x", 12, {"n": 2**63 - 1}, {"t": ("a", 1)}):
        text = json_text(value)
        assert json.loads(text) == json.loads(json.dumps(value, ensure_ascii=False))
        assert text == orjson.dumps(value).decode()  # compact, UTF-8
    assert json_text({"b": "中"}) == '{"b":"中"}'  # UTF-8, not \u escapes
    # what orjson refuses, json.dumps writes as before
    assert json_text({1: "a", None: 2}) == json.dumps({1: "a", None: 2}, ensure_ascii=False)
    assert json_text([2**70]) == "[1180591620717411303424]"
    # NaN is no JSON: null, not json.dumps's NaN (no event carries one)
    assert json_text([math.nan, math.inf]) == "[null,null]"
    engine.dispose()


# --- SQLite: the replay's transaction written with a rollback journal ---------------------------

def _journal(path) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    """The file's journal mode and a new connection's synchronous setting, as the engine
    opens it (make_engine's pragmas)."""
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            return (conn.exec_driver_sql("PRAGMA journal_mode").scalar(),
                    conn.exec_driver_sql("PRAGMA synchronous").scalar())
    finally:
        engine.dispose()


def _mode_of(replayer: Replayer) -> str:
    cur = replayer._need_writer().raw.cursor()
    try:
        cur.execute("PRAGMA journal_mode")
        return cur.fetchone()[0]
    finally:
        cur.close()


def test_a_sqlite_replay_is_written_with_a_rollback_journal_and_the_file_is_wal_again(tmp_path):
    records, dlq = stream()
    want = live(f"sqlite:///{tmp_path / 'live.db'}", records, dlq)
    path = tmp_path / "fast.db"
    modes: list[str] = []
    got = fast(f"sqlite:///{path}", records, dlq, begun=lambda r: modes.append(_mode_of(r)))
    assert modes == ["delete"]
    assert got == want
    assert _journal(path) == ("wal", 1)  # WAL, synchronous=NORMAL
    assert not (tmp_path / "fast.db-journal").exists()


def test_an_aborted_sqlite_replay_leaves_the_file_empty_and_in_wal(tmp_path):
    records, _ = stream()
    path = tmp_path / "db.db"
    engine = make_engine(f"sqlite:///{path}")
    create_schema(engine)
    replayer = Replayer(engine, "sql-sink", chunk_rows=10)
    replayer.begin()
    assert _mode_of(replayer) == "delete"
    replayer.add_case_records(records)
    replayer.abort()
    assert all(not rows for rows in dump(engine).values())
    engine.dispose()
    assert _journal(path) == ("wal", 1)


def test_with_another_connection_open_the_replay_keeps_wal_and_does_not_wait(tmp_path, caplog):
    import logging
    import sqlite3

    records, dlq = stream()
    want = live(f"sqlite:///{tmp_path / 'live.db'}", records, dlq)
    path = tmp_path / "fast.db"
    engine = make_engine(f"sqlite:///{path}")
    create_schema(engine)
    reader = sqlite3.connect(path)  # someone looking at the (empty) tables
    assert reader.execute("SELECT count(*) FROM cases").fetchone() == (0,)
    replayer = Replayer(engine, "sql-sink", chunk_rows=50)
    with caplog.at_level(logging.INFO, logger="gridflow.sinks.replay_fast"):
        replayer.begin()
    assert _mode_of(replayer) == "wal"
    assert "another connection has the database open" in caplog.text
    cur = replayer._need_writer().raw.cursor()
    cur.execute("PRAGMA busy_timeout")
    assert cur.fetchone()[0] == 30000  # the engine's busy timeout is back
    cur.close()
    for i in range(0, len(records), 97):
        replayer.add_case_records(records[i:i + 97])
    replayer.add_dead_letter_records(dlq)
    replayer.finish()
    assert reader.execute("SELECT count(*) FROM case_events").fetchone()[0] == \
        len(want["case_events"])  # WAL: the reader sees the commit
    reader.close()
    assert dump(engine) == want
    engine.dispose()


_KILLED_MID_REPLAY = """
import os, signal, sys
sys.path[:0] = [{root!r}]
from tests.unit.test_sink_replay_fast import stream
from sinks.models import make_engine
from sinks.replay_fast import Replayer
records, _ = stream()
replayer = Replayer(make_engine({url!r}), "sql-sink", chunk_rows=10)
replayer.begin()
for _ in range(3):
    replayer.add_case_records(records)  # chunks written inside the transaction
print("written", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_replay_killed_mid_transaction_leaves_the_file_empty_and_replayable(tmp_path):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    path = tmp_path / "db.db"
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    create_schema(engine)
    engine.dispose()
    proc = subprocess.run([sys.executable, "-c", _KILLED_MID_REPLAY.format(root=root, url=url)],
                          capture_output=True, text=True, timeout=120, cwd=root)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "written" in proc.stdout
    assert (tmp_path / "db.db-journal").exists()  # the hot journal of the killed transaction
    engine = make_engine(url)  # the first connection rolls it back, and sets WAL again
    assert all(not rows for rows in dump(engine).values())
    engine.dispose()
    assert _journal(path) == ("wal", 1)
    records, dlq = stream()
    assert fast(url, records, dlq) == live(f"sqlite:///{tmp_path / 'live.db'}", records, dlq)
