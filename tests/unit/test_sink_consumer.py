"""The one loop of a consumer whose offsets live in its database (sinks.consumer), on a fake
Kafka client: where it seeks, what it hands over, how it waits out Kafka and the database."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaConnectionError, KafkaError

from gridflow.core.retry import RetryPolicy
from gridflow.retry import Backoff
from sinks.consumer import StoredOffsetsConsumer
from tests.support.stop import RecordingStop

TOPIC = "t.case-events"


class Rec(NamedTuple):
    topic: str
    partition: int
    offset: int
    value: bytes


class FakeKafka:
    """A log of `records` per partition; failures scripted per call."""

    def __init__(self, log: Mapping[TopicPartition, int], fail: dict[str, int] | None = None,
                 **config: Any) -> None:
        self.log = dict(log)  # partition -> how many records
        self.fail = dict(fail or {})
        self.config = config
        self.positions: dict[TopicPartition, int] = {}
        self.seeks: list[tuple[str, Any]] = []
        self.closed = False

    def _maybe_fail(self, what: str) -> None:
        if self.fail.get(what, 0) > 0:
            self.fail[what] -= 1
            raise KafkaError(f"{what} failed")

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        self._maybe_fail("metadata")
        parts = {tp.partition for tp in self.log if tp.topic == topic}
        return parts or None

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = list(partitions)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append(("seek", (tp.partition, offset)))
        self.positions[tp] = offset

    def seek_to_beginning(self, *tps: TopicPartition) -> None:
        self.seeks.append(("beginning", sorted(tp.partition for tp in tps)))
        for tp in tps:
            self.positions[tp] = 0

    def seek_to_end(self, *tps: TopicPartition) -> None:
        self.seeks.append(("end", sorted(tp.partition for tp in tps)))
        for tp in tps:
            self.positions[tp] = self.log[tp]

    def poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Rec]]:
        self._maybe_fail("poll")
        out: dict[TopicPartition, list[Rec]] = {}
        for tp in self.assigned:
            start, end = self.positions[tp], min(self.log[tp], self.positions[tp] + max_records)
            if start < end:
                out[tp] = [Rec(tp.topic, tp.partition, o, b"x") for o in range(start, end)]
                self.positions[tp] = end
        return out

    def position(self, tp: TopicPartition, timeout_ms: int = 0) -> int:
        return self.positions[tp]

    def highwater(self, tp: TopicPartition) -> int:
        return self.log[tp]

    def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.log[tp] for tp in tps}

    def close(self) -> None:
        self.closed = True


class Database:
    """Stored next offsets, written with the 'rows' in one step; can be down."""

    def __init__(self, stored: dict[int, int] | None = None) -> None:
        self.offsets = dict(stored or {})
        self.rows: list[tuple[int, int]] = []
        self.down = 0  # how many next calls fail

    def next_offsets(self, topic: str) -> dict[int, int]:
        self._maybe_down()
        return dict(self.offsets)

    def _maybe_down(self) -> None:
        if self.down > 0:
            self.down -= 1
            raise ConnectionError("database is down")

    def apply(self, polled: dict[TopicPartition, list[Rec]]) -> None:
        self._maybe_down()
        for tp, batch in polled.items():
            fresh = [r for r in batch if r.offset >= self.offsets.get(tp.partition, 0)]
            self.rows += [(r.partition, r.offset) for r in fresh]  # one transaction: rows ...
            if batch:
                self.offsets[tp.partition] = batch[-1].offset + 1  # ... and offsets together


def make(log: dict[int, int], db: Database, *, fail: dict[str, int] | None = None,
         at_end: bool = False, connect_failures: int = 0):
    stop = RecordingStop()
    kafkas: list[FakeKafka] = []
    attempts = {"n": 0}

    def factory(**config: Any) -> FakeKafka:
        attempts["n"] += 1
        if attempts["n"] <= connect_failures:
            raise KafkaConnectionError("no broker")
        kafka = FakeKafka({TopicPartition(TOPIC, p): n for p, n in log.items()}, fail, **config)
        kafkas.append(kafka)
        return kafka

    backoff = Backoff(RetryPolicy("unit-consumer", 0.5, 2.0), stop)
    kc = StoredOffsetsConsumer("kafka:9092", "gridflow-test", (TOPIC,), db.next_offsets,
                               backoff, max_records=3, fresh_at_end=at_end, factory=factory)
    return kc, stop, kafkas


def drain(kc: StoredOffsetsConsumer, handle: Any, **kwargs: Any) -> bool:
    assert kc.open()
    return kc.run(handle, until=kc.end_offsets(), **kwargs)


def test_a_consumer_without_a_group_commits_nothing_and_reads_committed_only():
    kc, _, kafkas = make({0: 1}, Database())
    assert kc.open()
    config = kafkas[0].config
    assert config["group_id"] is None and config["enable_auto_commit"] is False
    assert config["isolation_level"] == "read_committed" and config["client_id"] == "gridflow-test"
    kc.close()
    assert kafkas[0].closed


def test_it_seeks_to_the_stored_offsets_and_fresh_partitions_start_at_the_beginning():
    db = Database({0: 4})
    kc, _, kafkas = make({0: 6, 1: 2}, db)
    assert drain(kc, db.apply)
    assert kafkas[0].seeks == [("seek", (0, 4)), ("beginning", [1])]
    assert sorted(db.rows) == [(0, 4), (0, 5), (1, 0), (1, 1)]
    assert db.offsets == {0: 6, 1: 2}


def test_fresh_partitions_start_at_the_end_when_asked():
    db = Database({0: 1})
    kc, _, kafkas = make({0: 3, 1: 5}, db, at_end=True)
    assert drain(kc, db.apply)
    assert kafkas[0].seeks == [("seek", (0, 1)), ("end", [1])]
    assert sorted(db.rows) == [(0, 1), (0, 2)]


def test_from_beginning_reads_the_whole_log_again():
    db = Database({0: 5})
    kc, _, kafkas = make({0: 5}, db)
    seen: list[int] = []
    assert drain(kc, lambda polled: seen.extend(r.offset for b in polled.values() for r in b),
                 from_beginning=True)
    assert kafkas[0].seeks == [("beginning", [0])] and seen == [0, 1, 2, 3, 4]


def test_a_failing_batch_is_read_again_from_the_stored_offsets_and_nothing_twice():
    db = Database()
    kc, stop, kafkas = make({0: 7}, db)
    calls = {"n": 0}

    def flaky(polled: dict[TopicPartition, list[Rec]]) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the second batch rolls back
            raise ConnectionError("database is locked")
        db.apply(polled)

    assert drain(kc, flaky, failure="applying a batch failed")
    assert db.rows == [(0, o) for o in range(7)]  # each once, in order
    assert kafkas[0].seeks == [("beginning", [0]), ("seek", (0, 3))]  # back to the stored 3
    assert stop.waited == [0.5]


def test_a_database_that_cannot_be_read_is_waited_out_with_growing_delays():
    db = Database({0: 2})
    db.down = 3
    kc, stop, _ = make({0: 4}, db)
    assert drain(kc, db.apply)
    assert stop.waited == [0.5, 1.0, 2.0]
    assert db.rows == [(0, 2), (0, 3)]


def test_kafka_unreachable_and_failing_polls_are_waited_out_then_the_delay_resets():
    db = Database()
    kc, stop, _ = make({0: 2}, db, fail={"metadata": 1, "poll": 2}, connect_failures=2)
    assert drain(kc, db.apply)
    # connect: 0.5, 1 (reset once connected); metadata: 0.5 (reset); polls: 0.5, 1
    assert stop.waited == [0.5, 1.0, 0.5, 0.5, 1.0]
    assert db.rows == [(0, 0), (0, 1)]
    assert kc.backoff.failures == 0  # a handled poll resets it


def test_a_fatal_error_is_raised_not_retried():
    class Snapshot(Exception):
        pass

    def refuse(polled: Any) -> None:
        if polled:
            raise Snapshot("a snapshot cannot be continued")

    kc, stop, _ = make({0: 2}, Database())
    with pytest.raises(Snapshot):
        drain(kc, refuse, fatal=(Snapshot,))
    assert stop.waited == []


def test_every_poll_is_handed_over_even_an_empty_one_until_stopped():
    kc, stop, _ = make({0: 0}, Database())
    rounds: list[int] = []

    def handle(polled: Any) -> None:
        rounds.append(len(polled))
        if len(rounds) == 3:
            stop.set()

    assert kc.open()
    assert kc.run(handle) is False  # stopped, not caught up
    assert rounds == [0, 0, 0]


def test_it_waits_for_a_missing_topic_until_stopped():
    kc, stop, kafkas = make({}, Database())  # the topic does not exist (yet)
    real_wait = stop.wait

    def wait(timeout: float | None = None) -> bool:
        if len(stop.waited) == 2:
            stop.set()
        return real_wait(timeout)

    stop.wait = wait  # type: ignore[method-assign]
    assert kc.open() is False
    assert stop.waited == [0.5, 1.0, 2.0] and not kc.partitions
    kc.close()
    assert kafkas[0].closed


def test_lag_counts_what_is_left_to_read():
    db = Database({0: 1})
    kc, _, _ = make({0: 4, 1: 2}, db)
    assert kc.open() and kc.seek()
    assert kc.lag() == 3 + 2
