"""The one Kafka loop of a consumer whose positions live in its own database (the SQL sink,
the notifier): connect, assign, seek to the stored offsets, poll, hand each poll over.

Guarantee: what the handler writes and the next offsets it stores go into the database in one
transaction, and Kafka offsets are never committed; so after any failure (Kafka unreachable,
the database down, a crash) the loop seeks back to what the database holds and reads again
from there: nothing is skipped, nothing is applied twice. Every failure is waited out by the
caller's retry policy (gridflow.retry.Backoff), logged, and retried until stopped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from gridflow.retry import Backoff

Polled = dict[TopicPartition, list[Any]]
# the next offset stored for each partition of a topic (absent: never read)
StoredOffsets = Callable[[str], Mapping[int, int]]


class StoredOffsetsConsumer:
    """A KafkaConsumer without a group, positioned from the database.

    `stored(topic)` reads the next offsets the database holds; a partition without one starts
    at the log's beginning, or with `fresh_at_end=True` at its end.
    """

    def __init__(
        self,
        bootstrap: str,
        client_id: str,
        topics: tuple[str, ...],
        stored: StoredOffsets,
        backoff: Backoff,
        *,
        max_records: int = 1000,
        poll_timeout_ms: int = 500,
        fresh_at_end: bool = False,
        config: Mapping[str, Any] | None = None,
        factory: Callable[..., Any] = KafkaConsumer,
    ) -> None:
        self.bootstrap, self.client_id, self.topics = bootstrap, client_id, topics
        self.stored, self.backoff = stored, backoff
        self.max_records, self.poll_timeout_ms = max_records, poll_timeout_ms
        self.fresh_at_end = fresh_at_end
        self.config = dict(config or {})
        self.factory = factory
        self.consumer: Any = None
        self.partitions: list[TopicPartition] = []

    @property
    def stop(self) -> threading.Event:
        return self.backoff.stop

    # --- setting up ---------------------------------------------------------------------------

    def open(self) -> bool:
        """Connect and assign every partition of the topics, waiting out an unreachable Kafka
        and topics not created yet; False when stopped first (then nothing is open)."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "client_id": self.client_id,
            "group_id": None,  # manual assignment; positions live in the database
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",  # a stored offset lost to retention: oldest kept
            "isolation_level": "read_committed",  # never an aborted transaction's records
            "max_poll_records": self.max_records,
            **self.config,
        }
        while self.consumer is None and not self.stop.is_set():
            try:
                self.consumer = self.factory(**config)
            except KafkaError as exc:
                self.backoff.wait(f"Kafka at {self.bootstrap} is unreachable", exc)
        if self.consumer is None:
            return False
        self.backoff.reset()
        while not self.stop.is_set():
            try:
                found = {name: self.consumer.partitions_for_topic(name) for name in self.topics}
            except KafkaError as exc:
                self.backoff.wait("reading topic metadata failed", exc)
                continue
            missing = [name for name, parts in found.items() if not parts]
            if missing:
                self.backoff.wait("waiting for topics",
                                  LookupError(f"no such topic: {', '.join(missing)}"))
                continue
            self.partitions = [TopicPartition(n, p) for n in self.topics
                               for p in sorted(found[n] or ())]
            self.consumer.assign(self.partitions)
            self.backoff.reset()
            return True
        return False

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None

    def end_offsets(self) -> dict[TopicPartition, int]:
        """The partitions' end offsets now (what a drain reads up to); {} when stopped."""
        while not self.stop.is_set():
            try:
                return dict(self.consumer.end_offsets(self.partitions))
            except KafkaError as exc:
                self.backoff.wait("reading end offsets failed", exc)
        return {}

    # --- positions ----------------------------------------------------------------------------

    def seek(self, from_beginning: bool = False) -> bool:
        """Position every partition at the database's next offset (`from_beginning`: at the
        log's beginning regardless). False after waiting out a database that cannot be read."""
        try:
            stored: dict[str, Mapping[int, int]] = {}
            if not from_beginning:
                stored = {t: self.stored(t) for t in {tp.topic for tp in self.partitions}}
        except Exception as exc:  # the database is down: nothing to resume from yet
            self.backoff.wait("cannot read the stored offsets", exc)
            return False
        fresh = []
        for tp in self.partitions:
            offset = stored.get(tp.topic, {}).get(tp.partition)
            if offset is None:
                fresh.append(tp)
            else:
                self.consumer.seek(tp, offset)
        if fresh:
            if self.fresh_at_end and not from_beginning:
                self.consumer.seek_to_end(*fresh)
            else:
                self.consumer.seek_to_beginning(*fresh)
        return True

    def caught_up(self, targets: Mapping[TopicPartition, int]) -> bool:
        """Whether every partition reached its target offset (raises KafkaError)."""
        for tp, end in targets.items():
            position = self.consumer.position(tp, timeout_ms=self.poll_timeout_ms)
            if position is None or position < end:
                return False
        return True

    def lag(self) -> int | None:
        """Records behind the partitions' high watermarks (None until known)."""
        total = 0
        for tp in self.partitions:
            high, position = self.consumer.highwater(tp), self.consumer.position(tp, timeout_ms=0)
            if high is None or position is None:
                return None
            total += max(0, high - position)
        return total

    # --- the loop -----------------------------------------------------------------------------

    def run(
        self,
        handle: Callable[[Polled], Any],
        *,
        from_beginning: bool = False,
        until: Mapping[TopicPartition, int] | None = None,
        failure: str = "handling a batch failed",
        fatal: tuple[type[BaseException], ...] = (),
    ) -> bool:
        """Seek, then poll and hand every poll (an empty one too) to `handle` until stopped, or
        with `until` until every partition reached its target; True when it did.

        `handle` writes its rows and the next offsets in one transaction; when it raises, the
        loop waits by the policy and seeks back to the stored offsets (an exception of `fatal`
        is raised instead). `from_beginning` holds until a non-empty poll was handled.
        """
        positioned = False
        handled_any = False
        while not self.stop.is_set():
            if not positioned:
                positioned = self.seek(from_beginning and not handled_any)
                if not positioned:
                    continue
            try:
                if until is not None and self.caught_up(until):
                    return True
                polled = self.consumer.poll(timeout_ms=self.poll_timeout_ms,
                                            max_records=self.max_records)
            except KafkaError as exc:
                self.backoff.wait("polling Kafka failed", exc)
                continue
            try:
                handle(polled)
            except fatal:
                raise
            except Exception as exc:  # database down or locked: read again from stored offsets
                self.backoff.wait(failure, exc)
                positioned = False
                continue
            handled_any = handled_any or bool(polled)
            self.backoff.reset()
        return False
