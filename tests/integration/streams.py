"""Helpers for tests that drive the stream processors through real Kafka topics."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer

from gridflow import services
from gridflow.settings import Settings


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
