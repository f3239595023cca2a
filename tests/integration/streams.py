"""Helpers for tests that drive the stream processors through real Kafka topics."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from gridflow.settings import Settings
from infra import services
from tests.waiting import wait_until


def start_worker(settings: Settings, tmp_path: Path, name: str = "worker") -> services.Service:
    return services.start(name, ["worker", "--loglevel", "info"],
                          settings.with_(faust_data_dir=tmp_path / "faust"), tmp_path)


def produce(bootstrap: str, topic: str, key: str, value: bytes, partition: int | None = None) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    producer.send(topic, key=key.encode(), value=value, partition=partition).get(timeout=30)
    producer.close()


def consume_until(bootstrap: str, topic: str, done: Callable[[list[dict]], bool],
                  timeout_s: float = 90.0, service: services.Service | None = None) -> list[dict]:
    """Read `topic` from the beginning until `done(seen)`; fail with what was seen."""
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=1000)
    seen: list[dict] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for record in consumer:
                seen.append(json.loads(record.value))
            if done(seen):
                return seen
            if service is not None:
                service.check()
    finally:
        consumer.close()
    raise AssertionError(f"timed out on {topic}; saw {[s.get('type') for s in seen]}")


def wait_consumed(bootstrap: str, group: str, topics: list[str], timeout_s: float = 90.0,
                  check: Callable[[], None] | None = None) -> dict[TopicPartition, int]:
    """Wait until consumer group `group` (a worker's faust app id) has committed, on every
    partition of `topics`, at least the end offsets those partitions had when this was called:
    everything in them so far has been processed (faust commits an offset only after what the
    agents sent for it is acknowledged). Returns those end offsets (empty partitions left out).
    `check` runs between tries, e.g. the worker's check()."""
    # a consumer in the group that never subscribes: it reads the group's commits, never joins
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=group)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t))]
        ends = {tp: off for tp, off in consumer.end_offsets(tps).items() if off}
        lag: dict[TopicPartition, tuple[int | None, int]] = {}  # behind: (committed, end)

        def caught_up() -> bool:
            lag.clear()
            for tp, end in ends.items():
                done = consumer.committed(tp)
                if done is None or done < end:
                    lag[tp] = (done, end)
            return not lag

        try:
            wait_until(f"group {group} to commit {topics} up to their ends", caught_up,
                       timeout_s, check=check)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; behind (committed, end): {lag}") from None
        return ends
    finally:
        consumer.close()
