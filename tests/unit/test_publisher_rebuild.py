"""producers.publisher.KafkaPublisher after an ack that never came: kafka-python's idempotent
producer can stay wedged after a partition leader died with its batches in flight (every later
send times out, found by `gridflow chaos --scenario broker-failover`), so the publisher builds
a new producer for the next request, and a record whose producer was dropped under it is
reported as maybe written (its photos must stay)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kafka.errors import IllegalStateError, KafkaTimeoutError

from gridflow.events import Message
from producers import publisher as pub
from producers.publisher import KafkaPublisher, PublishError

MSG = Message(id="e1", type="ReportSubmitted", case_id="", at="2026-11-16T00:30:00+00:00",
              actor="worker:w", data={})


class FakeFuture:
    def __init__(self, outcome: Exception | None, gate: threading.Event | None = None) -> None:
        self.outcome, self.gate = outcome, gate

    def get(self, timeout: float) -> None:
        if self.gate is not None:
            self.gate.wait(5)
        if self.outcome is not None:
            raise self.outcome


class FakeProducer:
    made: list[FakeProducer] = []

    def __init__(self, **config: Any) -> None:
        self.outcomes: list[tuple[Exception | None, threading.Event | None]] = []
        self.closed = False
        FakeProducer.made.append(self)

    def send(self, topic: str, key: bytes, value: bytes) -> FakeFuture:
        outcome, gate = self.outcomes.pop(0) if self.outcomes else (None, None)
        return FakeFuture(outcome, gate)

    def close(self, timeout: float) -> None:
        self.closed = True
        raise KafkaTimeoutError("Timeout waiting for future")  # as a wedged one does


@pytest.fixture
def fake_kafka(monkeypatch: pytest.MonkeyPatch) -> type[FakeProducer]:
    import kafka

    FakeProducer.made = []
    monkeypatch.setattr(kafka, "KafkaProducer", FakeProducer)
    return FakeProducer


def test_an_ack_timeout_gets_a_new_producer_for_the_next_request(fake_kafka) -> None:  # type: ignore[no-untyped-def]
    p = KafkaPublisher("127.0.0.1:1", timeout_s=0.1)
    p.publish("t", "k", MSG)
    [first] = fake_kafka.made
    first.outcomes.append((KafkaTimeoutError("no ack"), None))
    with pytest.raises(PublishError) as err:
        p.publish("t", "k", MSG)
    assert err.value.maybe_written
    assert first.closed
    p.publish("t", "k", MSG)  # at once: no back-off, the cluster answered before
    assert len(fake_kafka.made) == 2


def test_a_record_of_a_dropped_producer_may_be_written(fake_kafka, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    forced: list[object] = []
    monkeypatch.setattr(pub, "_close_now", lambda producer: forced.append(producer))
    p = KafkaPublisher("127.0.0.1:1", timeout_s=0.1)
    p.publish("t", "k", MSG)
    [first] = fake_kafka.made
    gate = threading.Event()
    first.outcomes += [(IllegalStateError("Producer is closed forcefully."), gate),
                       (KafkaTimeoutError("no ack"), None)]
    results: list[PublishError] = []

    def waiting() -> None:
        try:
            p.publish("t", "k", MSG)
        except PublishError as exc:
            results.append(exc)

    t = threading.Thread(target=waiting)
    t.start()
    with pytest.raises(PublishError):
        p.publish("t", "k2", MSG)  # its ack times out: the producer is dropped
    gate.set()
    t.join(5)
    assert forced == [first]
    [other] = results
    assert other.maybe_written  # failed because its producer was dropped: it may be out


def test_a_refusal_of_the_current_producer_is_not_written(fake_kafka) -> None:  # type: ignore[no-untyped-def]
    p = KafkaPublisher("127.0.0.1:1", timeout_s=0.1)
    p.publish("t", "k", MSG)
    fake_kafka.made[0].outcomes.append((IllegalStateError("refused"), None))
    with pytest.raises(PublishError) as err:
        p.publish("t", "k", MSG)
    assert not err.value.maybe_written
    assert len(fake_kafka.made) == 1
