"""Publishing messages to Kafka: the API's only way onto the log.

Guarantee: `publish` returns only after the broker acknowledged the record with acks=all
on an idempotent producer; any failure raises PublishError, so the caller answers 503 and
the client retries (at-least-once; the event id is deterministic, consumers dedupe on it).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from gridflow.events import Message

log = logging.getLogger(__name__)


class PublishError(Exception):
    """The record was not acknowledged.

    `maybe_written` is True when the record was handed to the broker but the ack did not
    arrive in time: it may be on the log, so what it references must not be removed.
    """

    def __init__(self, reason: str, maybe_written: bool = False) -> None:
        super().__init__(reason)
        self.maybe_written = maybe_written


class Publisher(Protocol):
    def publish(self, topic: str, key: str, message: Message) -> None: ...

    def close(self) -> None: ...


class KafkaPublisher:
    """A kafka-python KafkaProducer (acks=all, idempotent), built on first use, rebuilt after
    it could not reach the cluster; one producer is shared by all request threads.

    After the cluster was found unreachable, publishing fails at once for `backoff_s` instead
    of every request waiting out its own timeout (the client retries after Retry-After).
    """

    def __init__(
        self,
        bootstrap: str,
        timeout_s: float = 10.0,
        client_id: str = "gridflow-api",
        backoff_s: float = 3.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        self.client_id = client_id
        self.backoff_s = backoff_s
        self._producer: object | None = None
        self._lock = threading.Lock()
        self._down_until = 0.0

    def _get(self):  # type: ignore[no-untyped-def]
        from kafka import KafkaProducer

        with self._lock:
            if self._producer is None:
                if time.monotonic() < self._down_until:  # another thread just failed to connect
                    raise PublishError("kafka was unreachable moments ago; not retrying yet")
                ms = int(self.timeout_s * 1000)
                self._producer = KafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    client_id=self.client_id,
                    acks="all",
                    enable_idempotence=True,
                    allow_auto_create_topics=False,
                    linger_ms=0,
                    max_block_ms=ms,
                    request_timeout_ms=ms,
                    # Not longer: while Kafka cannot acknowledge, the API answers 503 and the
                    # phone retries (kafka-outage). A leader failover (the dead broker fenced
                    # after broker.session.timeout.ms, 9 s) mostly fits; on a loaded machine
                    # some requests get their 503 (broker-failover, docs/RELIABILITY.md).
                    delivery_timeout_ms=ms + 1000,
                    bootstrap_timeout_ms=ms,
                    # Retry a lost broker every second at most (kafka-python backs off up to
                    # 30 s): after an outage the API accepts reports again within about a
                    # second of Kafka's return, not half a minute later (chaos kafka-outage).
                    reconnect_backoff_max_ms=1000,
                )
            return self._producer

    def _drop(self, producer: object | None = None, backoff: bool = True) -> None:
        """Forget the producer (`producer`: only if it is still the current one) and close it;
        `backoff`: the cluster was unreachable, fail fast for `backoff_s`."""
        with self._lock:
            if producer is not None and producer is not self._producer:
                return  # another request thread dropped it already
            old, self._producer = self._producer, None
            if backoff:
                self._down_until = time.monotonic() + self.backoff_s
        if old is not None:
            _close_now(old)

    def publish(self, topic: str, key: str, message: Message) -> None:
        from kafka.errors import KafkaError, KafkaTimeoutError

        if time.monotonic() < self._down_until:
            raise PublishError("kafka was unreachable moments ago; not retrying yet")
        try:
            producer = self._get()
            future = producer.send(topic, key=key.encode(), value=message.encode())  # type: ignore[attr-defined]
        except KafkaError as exc:
            # Not handed over: no metadata, cluster unreachable, record refused locally.
            self._drop()
            raise PublishError(f"kafka unavailable: {exc}") from exc
        try:
            future.get(timeout=self.timeout_s + 2)
        except KafkaTimeoutError as exc:
            # No answer in time. A leader that died with this producer's batches in flight
            # can leave kafka-python's idempotent producer wedged: every later send times out
            # too, even once a new leader is elected (chaos broker-failover). A new producer
            # (a new producer id) is built for the next request; the record may be on the log.
            self._drop(producer, backoff=False)
            raise PublishError(f"kafka ack timed out: {exc}", maybe_written=True) from exc
        except KafkaError as exc:
            # A producer dropped meanwhile fails its pending records: they may be on the log.
            dropped = producer is not self._producer
            raise PublishError(f"kafka refused the record: {exc}", maybe_written=dropped) from exc

    def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.close(timeout=5)  # type: ignore[attr-defined]


def _close_now(producer: object) -> None:
    """Close a producer that may be wedged: a second for what is in flight, then force.
    (kafka-python's close() raises when its flush times out, before it stops the sender
    thread: stop that thread ourselves then, or every dropped producer leaves one behind.)"""
    try:
        producer.close(timeout=1)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - closing a broken producer is best effort
        log.debug("closing a broken producer failed; forcing it", exc_info=True)
        sender = getattr(producer, "_sender", None)
        if sender is not None:
            sender.force_close()
