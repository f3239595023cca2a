"""The worker's RocksDB table store (processors.tablestore): disk state trails the changelog,
reads see the latest change, each worker process gets a data directory of its own."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faust.streams import _current_event
from faust.types import TP

from bootstrap import bootstrap
from gridflow.settings import Settings, load_settings
from processors import tablestore
from processors.app import build_app
from processors.tablestore import (
    STALE_AFTER_S,
    WRITTEN_AT_KEY,
    AckedRocksStore,
    claim_data_dir,
    instance_id_for,
    store_url,
    table_options,
)
from processors.worker import runtime_for_role


def _app(tmp_path: Path, store: str = "rocksdb") -> Any:
    settings = load_settings().with_(topic_prefix="tstore", faust_data_dir=tmp_path / "data",
                                     worker_store=store)
    return build_app(runtime_for_role(bootstrap(settings), "pipeline"))


class _Event:
    def __init__(self, partition: int) -> None:
        self.message = SimpleNamespace(partition=partition, topic="tstore.reports")


def _in_event(partition: int) -> _Event:
    event = _Event(partition)
    _current_event.set(weakref.ref(event))  # type: ignore[arg-type]
    return event  # the caller keeps it alive while the weak reference is used


def _ack(table: Any, partition: int, offset: int, key: str, value: Any,
         flush: bool = True) -> None:
    store = table.data
    store.on_changelog_acked(partition, offset, store._encode_key(key),
                             None if value is None else store._encode_value(value))
    if flush:
        store.flush_acked()


def _sent(app: Any) -> list[tuple[str, int, Any, Any]]:
    """What the app's tables send to their changelogs from now on: (table, partition, key,
    value), value None for a tombstone. Nothing reaches a producer."""
    sent: list[tuple[str, int, Any, Any]] = []
    for table in app.tables.values():
        table._verified_source_topics_for_partitions.add("tstore.reports")

        def send(partition: int, key: Any, value: Any, key_serializer: Any = None,
                 value_serializer: Any = None, _table: Any = table) -> None:
            if key_serializer == "raw":  # the store's own bytes, sent as they are
                assert isinstance(key, bytes), key
                key = _table.data._decode_key(key)
            if value is not None and value_serializer == "raw":
                assert isinstance(value, bytes), value
                value = _table.data._decode_value(value)
            sent.append((_table.name, partition, key, value))

        table.send_changelog = send
    return sent


def _on_disk(table: Any, partition: int, key: str) -> Any:
    store = table.data
    raw = store._db_for_partition(partition).get(store._encode_key(key))
    return None if raw is None else store._decode_value(raw)


def test_the_store_setting_chooses_rocksdb_or_memory(tmp_path):
    assert _app(tmp_path).conf.store.scheme == "rocksdb"
    assert _app(tmp_path, "memory").conf.store.scheme == "memory"
    assert table_options("memory") is None
    assert table_options("rocksdb")["write_buffer_size"] <= 8 * 1024 * 1024
    with pytest.raises(ValueError, match="GRIDFLOW_WORKER_STORE"):
        store_url("redis")
    with pytest.raises(ValueError, match="GRIDFLOW_WORKER_STORE"):
        Settings(worker_store="disk")
    assert Settings().worker_store == "rocksdb"  # the production default


def test_a_change_reaches_disk_only_once_the_changelog_has_it(tmp_path):
    app = _app(tmp_path)
    sent = _sent(app)
    cases = app.tables["cases"]
    cases.coalesce = False  # the path of a table that sends each change with it
    assert isinstance(cases.data, AckedRocksStore)
    event = _in_event(2)
    cases["AJ1"] = {"seq": 1}
    assert cases.data["AJ1"] == {"seq": 1}  # read back at once (from memory)
    assert _on_disk(cases, 2, "AJ1") is None  # a SIGKILL now loses nothing the log has
    assert cases.data.persisted_offset(TP("x", 2)) is None
    assert sent == [("cases", 2, "AJ1", {"seq": 1})]  # sent with the change
    cases["AJ1"] = {"seq": 2}  # a second change before the first is acknowledged
    assert sent[1:] == [("cases", 2, "AJ1", {"seq": 2})]
    _ack(cases, 2, 10, "AJ1", {"seq": 1})
    assert _on_disk(cases, 2, "AJ1") == {"seq": 1}
    assert cases.data["AJ1"] == {"seq": 2}  # the unacknowledged change still wins
    assert cases.data.persisted_offset(TP("x", 2)) == 10
    assert cases.data.pending_count() == 1  # the second change waits for its own record
    _ack(cases, 2, 11, "AJ1", {"seq": 2})
    assert cases.data.pending_count() == 0
    assert _on_disk(cases, 2, "AJ1") == {"seq": 2}
    assert cases.data.persisted_offset(TP("x", 2)) == 11
    del event


def test_acknowledged_changes_are_written_in_batches_with_the_highest_offset(tmp_path):
    app = _app(tmp_path)
    _sent(app)
    cases = app.tables["cases"]
    cases.coalesce = False  # the path of a table that sends each change with it
    store = cases.data
    event = _in_event(3)
    for n in range(5):
        cases[f"AJ{n}"] = {"seq": n}
    cases["AJ0"] = {"seq": 9}  # a second change of one key
    assert cases.unsent_count() == 0  # each sent with its change
    for offset, (key, seq) in enumerate([("AJ0", 0), ("AJ1", 1), ("AJ2", 2), ("AJ0", 9)]):
        _ack(cases, 3, 100 + offset, key, {"seq": seq}, flush=False)
    # acknowledged but not written yet: a SIGKILL now leaves the disk at an older prefix
    assert _on_disk(cases, 3, "AJ1") is None and store.persisted_offset(TP("x", 3)) is None
    assert cases.get("AJ0") == {"seq": 9} and cases.get("AJ4") == {"seq": 4}
    assert store.pending_count() == 5
    store.flush_acked()
    assert [_on_disk(cases, 3, f"AJ{n}") for n in range(5)] == [
        {"seq": 9}, {"seq": 1}, {"seq": 2}, None, None]
    assert store.persisted_offset(TP("x", 3)) == 103
    assert store.pending_count() == 2  # AJ3, AJ4: the changelog has not acknowledged them
    assert cases.get("AJ3") == {"seq": 3} and cases.get("nobody") is None
    # a full batch is written at once
    for n in range(tablestore.FLUSH_EVERY):
        cases[f"B{n}"] = n
        _ack(cases, 3, 200 + n, f"B{n}", n, flush=False)
    assert _on_disk(cases, 3, f"B{tablestore.FLUSH_EVERY - 1}") == tablestore.FLUSH_EVERY - 1
    assert store.persisted_offset(TP("x", 3)) == 200 + tablestore.FLUSH_EVERY - 1
    del event


def test_a_get_reads_the_store_once(tmp_path, monkeypatch):
    app = _app(tmp_path)
    cases = app.tables["cases"]
    event = _in_event(1)
    cases.data["AJ7"] = {"seq": 7}
    _ack(cases, 1, 5, "AJ7", {"seq": 7})
    reads: list[str] = []
    store = cases.data
    for name in ("_get", "_contains"):
        original = getattr(store, name)
        monkeypatch.setattr(store, name, lambda k, _o=original, _n=name: (reads.append(_n),
                                                                           _o(k))[1])
    assert cases.get("AJ7") == {"seq": 7} and reads == ["_get"]
    assert cases.get("none") is None and cases.get("none", 3) == 3
    del event


def test_a_delete_is_a_change_like_any_other(tmp_path):
    app = _app(tmp_path)
    sent = _sent(app)
    cases = app.tables["cases"]
    cases.coalesce = False  # the path of a table that sends each change with it
    event = _in_event(0)
    cases["AJ2"] = {"seq": 5}
    _ack(cases, 0, 3, "AJ2", {"seq": 5})
    del cases["AJ2"]
    assert "AJ2" not in cases.data and cases.data.get("AJ2") is None
    assert sent[-1] == ("cases", 0, "AJ2", None)  # the tombstone, sent with the change
    assert _on_disk(cases, 0, "AJ2") == {"seq": 5}  # until the tombstone is acknowledged
    _ack(cases, 0, 4, "AJ2", None)
    assert _on_disk(cases, 0, "AJ2") is None
    assert "AJ2" not in cases.data
    del event


def test_changes_of_a_partition_given_away_are_forgotten(tmp_path):
    app = _app(tmp_path)
    sent = _sent(app)
    recent = app.tables["recent-cases"]
    assert recent.coalesce
    event = _in_event(1)
    recent["T1|C"] = [1]
    other = _in_event(2)
    recent["T2|C"] = [2]
    topic = recent.changelog_topic.get_topic_name()
    asyncio.run(recent.on_rebalance(set(), {TP(topic, 1)}, set()))
    assert recent.data.pending_count() == 1  # T2|C, of the partition still held
    assert recent.send_unsent() == 1 and sent == [("recent-cases", 2, "T2|C", [2])]
    del event, other


def test_every_table_reaches_the_changelog_once_per_key_and_commit_the_cases_last(tmp_path):
    # A township's recent cases, a minute's shard of the deadline book, a case touched by
    # several commands are rewritten many times between commits: each key goes once, with its
    # last value, at the commit; the book before the cases, so that a case's state waits for
    # its clocks (processors.delivery.StateAfterOutput.early).
    app = _app(tmp_path)
    sent = _sent(app)
    tables = {name: app.tables[name] for name in
              ("cases", "recent-cases", "deadline-entries", "deadline-buckets")}
    assert all(t.coalesce for t in tables.values())
    cases, recent, entries = tables["cases"], tables["recent-cases"], tables["deadline-entries"]
    event = _in_event(1)
    for n in range(50):
        cases["AJ1"] = {"seq": n}  # a case touched by 50 commands
        recent["T1|C"] = [n]
        entries[f"clock{n % 2}"] = n
    recent["T2|C"] = [1]
    del recent["T2|C"]
    assert sent == []  # nothing before the commit
    assert cases.unsent_count() == 1 and recent.unsent_count() == 2
    assert tablestore.send_unsent_changes(app.tables.values()) == 5
    names = [s[0] for s in sent]
    assert names.index("cases") == len(sent) - 1  # the case last, after the book
    assert ("cases", 1, "AJ1", {"seq": 49}) in sent
    assert ("deadline-entries", 1, "clock0", 48) in sent and ("deadline-entries", 1, "clock1", 49) in sent
    assert [s for s in sent if s[0] == "recent-cases"] == [
        ("recent-cases", 1, "T1|C", [49]), ("recent-cases", 1, "T2|C", None)]
    assert tablestore.send_unsent_changes(app.tables.values()) == 0  # sent once
    # the store: reads see the last change; one acknowledgement per key clears it
    assert recent.get("T1|C") == [49] and recent.get("T2|C") is None
    for offset, (_, partition, key, value) in enumerate(s for s in sent if s[0] == "recent-cases"):
        _ack(recent, partition, offset, key, value, flush=False)
    recent.data.flush_acked()
    assert recent.data.pending_count() == 0
    assert _on_disk(recent, 1, "T1|C") == [49] and _on_disk(recent, 1, "T2|C") is None
    del event


def test_the_rocksdb_tables_send_the_bytes_their_store_holds(tmp_path, monkeypatch):
    # one encoding per change: the changelog gets the store's bytes, not a second encoding
    app = _app(tmp_path)
    _sent(app)
    cases = app.tables["cases"]
    cases.coalesce = False  # the path of a table that sends each change with it
    event = _in_event(0)
    calls: list[tuple[Any, ...]] = []
    cases.send_changelog = lambda *a, **kw: calls.append((a, kw))
    encode = cases.data._encode_value
    encoded: list[Any] = []
    monkeypatch.setattr(cases.data, "_encode_value",
                        lambda v: encoded.append(v) or encode(v))
    cases["AJ1"] = {"seq": 1}
    assert encoded == [{"seq": 1}]  # once, by the store
    (partition, key, value), kw = calls[0]
    assert (partition, key, value) == (0, cases.data._encode_key("AJ1"),
                                       cases.data._get(cases.data._encode_key("AJ1")))
    assert kw == {"key_serializer": "raw", "value_serializer": "raw"}
    del event


def test_a_memory_table_sends_its_values_once_per_commit_too(tmp_path):
    app = _app(tmp_path, "memory")
    sent = _sent(app)
    recent = app.tables["recent-cases"]
    event = _in_event(3)
    for n in range(5):
        recent["T|C"] = [n]
    recent["T|D"] = [1]
    del recent["T|D"]
    assert recent.get("T|C") == [4] and recent.get("T|D") is None
    assert tablestore.send_unsent_changes(app.tables.values()) == 2
    assert sent == [("recent-cases", 3, "T|C", [4]), ("recent-cases", 3, "T|D", None)]
    del event


def test_a_change_needs_the_event_it_belongs_to(tmp_path):
    app = _app(tmp_path)
    _sent(app)
    _current_event.set(None)
    with pytest.raises(TypeError, match="stream iteration"):
        app.tables["cases"]["AJ1"] = {"seq": 1}


def test_the_changelog_value_and_the_stored_bytes_are_the_same_encoding(tmp_path):
    # on_changelog_acked writes the changelog message's own key and value bytes: they must be
    # what the store itself encodes, or a restart would read keys the agents never look up.
    app = _app(tmp_path)
    cases = app.tables["cases"]
    key, value = "AJ20261203-ABCDEFGH", {"case_id": "x", "tasks": {"t": {"a": 1}}}
    topic = cases.changelog_topic  # what send_changelog serializes the message with
    sent_key, _ = topic.prepare_key(key, cases.key_serializer)
    sent_value, _ = topic.prepare_value(value, cases.value_serializer)
    assert sent_key == cases.data._encode_key(key)
    assert sent_value == cases.data._encode_value(value)


def test_each_worker_process_claims_its_own_data_directory(tmp_path):
    # a second process on the machine cannot take the slot this one holds
    first = claim_data_dir(tmp_path, "g-processor")
    code = ("import sys; from pathlib import Path; from processors.tablestore import "
            "claim_data_dir; print(claim_data_dir(Path(sys.argv[1]), 'g-processor'))")
    other = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                           text=True, check=True).stdout.strip()
    assert Path(other) != first and Path(other).parent == first.parent
    # ... and once it is gone, its slot is free for the next one (a restart gets it back)
    again = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                           text=True, check=True).stdout.strip()
    assert again == other


def test_the_instance_id_follows_host_role_and_data_directory(tmp_path):
    a = instance_id_for("pipeline", tmp_path / "w0", host="node 1")
    assert a == instance_id_for("pipeline", tmp_path / "w0", host="node 1")
    assert a.startswith("node-1-pipeline-")
    assert a != instance_id_for("pipeline", tmp_path / "w1", host="node 1")
    assert a != instance_id_for("archive", tmp_path / "w0", host="node 1")


def test_local_state_too_old_to_trust_is_restored_afresh(tmp_path):
    # a tombstone stays on a compacted changelog ~24 h: older local state could keep a case
    # whose deletion it will never read, so it is dropped and the changelog restores it
    app = _app(tmp_path)
    cases = app.tables["cases"]
    store = cases.data
    topic = cases.changelog_topic.get_topic_name()
    event = _in_event(3)
    store["AJ9"] = {"seq": 1}
    _ack(cases, 3, 7, "AJ9", {"seq": 1})
    # the time mark is not a key of the table
    assert list(store._visible_keys(store._db_for_partition(3))) == [store._encode_key("AJ9")]
    store.revoke_partitions(cases, {TP(topic, 3)})
    assert _on_disk(cases, 3, "AJ9") == {"seq": 1}  # recent: opened again as it was
    assert store.persisted_offset(TP(topic, 3)) == 7
    store._db_for_partition(3).put(WRITTEN_AT_KEY, repr(time.time() - STALE_AFTER_S - 60).encode())
    store.revoke_partitions(cases, {TP(topic, 3)})
    assert _on_disk(cases, 3, "AJ9") is None  # too old: gone, restored from the changelog
    assert store.persisted_offset(TP(topic, 3)) is None
    del event


def test_a_changelog_not_yet_in_the_consumers_metadata_is_no_partition_mismatch(
        tmp_path, monkeypatch):
    """faust counts a changelog its consumer's metadata does not list yet as 0 partitions (a
    topic created at start-up a moment before the broker's metadata had it) and crashed the
    agent on its first write. 0 leaves the check for a later write; a real mismatch fails."""
    from faust.exceptions import PartitionsMismatch

    app = _app(tmp_path)
    buckets = app.tables["deadline-buckets"]
    counts = {"tstore.case-events": 4, buckets.changelog_topic_name: 0}
    monkeypatch.setattr(type(app.consumer), "topic_partitions",
                        lambda self, topic: counts.get(topic))
    buckets._verify_source_topic_partitions("tstore.case-events")  # not listed yet: no error
    assert "tstore.case-events" not in buckets._verified_source_topics_for_partitions
    counts[buckets.changelog_topic_name] = 4
    buckets._verify_source_topic_partitions("tstore.case-events")
    assert "tstore.case-events" in buckets._verified_source_topics_for_partitions
    counts[buckets.changelog_topic_name] = 2
    buckets._verified_source_topics_for_partitions.clear()
    with pytest.raises(PartitionsMismatch):
        buckets._verify_source_topic_partitions("tstore.case-events")


def test_a_database_left_half_created_by_a_kill_is_restored_afresh(tmp_path):
    # SIGKILL while RocksDB creates a partition's database leaves its write-ahead log without
    # a manifest; opening it failed ("Corruption ... wal_dir contains existing log file") on
    # every start after. The changelog has everything the disk could hold: start afresh.
    app = _app(tmp_path)
    cases = app.tables["cases"]
    store = cases.data
    path = store.partition_path(2)
    path.mkdir(parents=True)
    (path / "000008.log").write_bytes(b"\x00" * 64)  # what the kill left
    event = _in_event(2)
    store["AJ1"] = {"seq": 1}
    _ack(cases, 2, 3, "AJ1", {"seq": 1})  # written: partition 2's database is opened
    assert _on_disk(cases, 2, "AJ1") == {"seq": 1}
    assert (path / "CURRENT").exists() and not (path / "000008.log").exists()
    assert store.persisted_offset(TP("x", 2)) == 3
    del event


def _counting_reads(monkeypatch, store: Any) -> list[bytes]:
    reads: list[bytes] = []
    original = store._get
    monkeypatch.setattr(store, "_get", lambda k: (reads.append(k), original(k))[1])
    return reads


def test_the_worker_tables_remember_what_they_read_and_wrote(tmp_path, monkeypatch):
    app = _app(tmp_path)
    _sent(app)
    cases = app.tables["cases"]
    assert cases.read_cache and app.tables["recent-cases"].read_cache
    event = _in_event(1)
    cases.data["AJ7"] = {"seq": 7}  # in the store already (restored, say)
    reads = _counting_reads(monkeypatch, cases.data)
    assert cases.get("AJ7") == {"seq": 7} and len(reads) == 1
    assert cases.get("AJ7") == {"seq": 7} and len(reads) == 1  # remembered, not read again
    assert cases.get("none") is None and cases.get("none", 3) == 3 and len(reads) == 2
    cases["AJ8"] = {"seq": 1}
    assert cases.get("AJ8") == {"seq": 1} and len(reads) == 2  # as written
    del cases["AJ7"]
    assert cases.get("AJ7") is None and len(reads) == 2  # its removal too
    assert "AJ7" not in cases and cases.data.get("AJ8") == {"seq": 1}  # the store agrees
    del event


def test_a_table_forgets_what_it_read_when_its_store_changes_under_it(tmp_path, monkeypatch):
    app = _app(tmp_path)
    _sent(app)
    cases = app.tables["cases"]
    event = _in_event(1)
    cases["AJ1"] = {"seq": 1}
    _ack(cases, 1, 5, "AJ1", {"seq": 1})  # on disk, nothing pending
    assert cases.get("AJ1") == {"seq": 1}
    reads = _counting_reads(monkeypatch, cases.data)
    topic = cases.changelog_topic.get_topic_name()

    def restored(value: Any) -> Any:  # a changelog record as recovery applies it
        raw = cases.data._encode_value(value)
        return SimpleNamespace(message=SimpleNamespace(
            key=cases.data._encode_key("AJ1"), value=raw, partition=1, offset=9,
            tp=TP(topic, 1)), key="AJ1", value=raw)

    cases.apply_changelog_batch([restored({"seq": 2})])
    assert cases.get("AJ1") == {"seq": 2} and len(reads) == 1
    cases.data["AJ1"] = {"seq": 3}
    asyncio.run(cases.on_recovery_completed(set(), set()))
    assert cases.get("AJ1") == {"seq": 3} and len(reads) == 2
    cases.data["AJ1"] = {"seq": 4}
    asyncio.run(cases.on_rebalance({TP(topic, 1)}, set(), set()))
    assert cases.get("AJ1") == {"seq": 4} and len(reads) == 3
    del event


def test_a_table_remembers_a_bounded_number_of_values(tmp_path, monkeypatch):
    monkeypatch.setattr(tablestore, "READ_CACHE_SIZE", 10)
    app = _app(tmp_path)
    _sent(app)
    recent = app.tables["recent-cases"]
    event = _in_event(0)
    for n in range(25):
        recent[f"T{n}|C"] = [n]
        assert len(recent._read) <= 10
    assert recent.get("T3|C") == [3]  # forgotten, read from the store
    del event


def test_a_table_without_the_read_cache_reads_its_store_each_time(tmp_path, monkeypatch):
    app = _app(tmp_path)
    cases = app.tables["cases"]
    cases.read_cache = False
    event = _in_event(1)
    cases.data["AJ7"] = {"seq": 7}
    reads = _counting_reads(monkeypatch, cases.data)
    assert cases.get("AJ7") == cases.get("AJ7") == {"seq": 7} and len(reads) == 2
    del event
