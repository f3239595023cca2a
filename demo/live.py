"""The pipeline run live beside a test, a benchmark or a fault scenario: the ingest API in a
uvicorn thread, a topic read back, the processors' steps and the SQL sink in this process.

Never imported by what serves. `LiveApi` serves over real HTTP on a free loopback port
(streamed bodies, early answers and connection handling as in production, unlike an in-process
client); `read_topic` reads a topic from the beginning with kafka-python; `InProcessPipeline`
files, decides and projects what the API published; `real_deps` wires the API to the stack.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveApi:
    """`with LiveApi(app) as api: httpx.get(api.url + "/api/v1/health")`."""

    def __init__(self, app: FastAPI, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on",
            loop="asyncio",  # as the API's own server (producers.app.API_LOOP)
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"api-{self.port}", daemon=True)

    def __enter__(self) -> LiveApi:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start on port {self.port}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def read_topic(
    bootstrap: str, topic: str, until: Callable[[list[Any]], bool], timeout_s: float = 30.0
) -> list[Any]:
    """Records of `topic` from the beginning, read until `until(records)` holds or the time
    is up (then whatever was read is returned: the caller's assertion says what is missing)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=500,
    )
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        # The partitions assigned outright and read from their beginning. With a group-less
        # subscription instead, a read once returned nothing in 30 s from a topic holding the
        # record (a fresh clone's first browser test, on a loaded machine); the cause was not
        # found, and assigning outright leaves out the subscription's own metadata wait.
        partitions = None
        while not partitions and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                time.sleep(0.2)
        parts = [TopicPartition(topic, p) for p in sorted(partitions or ())]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        while parts and time.monotonic() < deadline and not until(records):
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


class InProcessPipeline:
    """The processors' pure steps and the real SQL sink, run in this process on records a test
    read from Kafka: enough pipeline behind the API to test its read routes without faust.

    Feed it the ReportSubmitted and command records the API published; it files, decides and
    projects them into `engine` exactly as the workers and the sink would. With
    `merge_duplicates`, it keeps the recent cases as the filing agent does, so a near-duplicate
    joins the open case (ReportMerged); without, every report opens a case of its own.
    """

    def __init__(self, engine: Any, ref: Any, merge_duplicates: bool = False) -> None:
        from bootstrap import bundled_planner
        from sinks.sql import SqlSink

        self.ref = ref
        self.sink = SqlSink(engine, "api-tests")
        self.planner = bundled_planner()
        self.states: dict[str, Any] = {}
        self.offset = 0
        self.events: list[Any] = []
        self.recent: dict[str, Any] | None = {} if merge_duplicates else None

    def report(self, raw: bytes, now: Any) -> None:
        """A ReportSubmitted → intake → filing → case → read models."""
        from processors import steps

        for suffix, key, value in steps.intake_step(raw, self.ref, now, "reports").sends:
            if suffix == "reports-located":
                if self.recent is None:
                    filed, _ = steps.filing_step(value, [], now, "reports-located")
                else:
                    filed = steps.filing_step_keyed(value, self.recent, key, now, "reports-located")
                for _, case_key, command in filed.sends:
                    self.command(command, case_key, now)
            elif suffix == "case-commands":
                self.command(value, key, now)

    def command(self, raw: bytes, case_id: str, now: Any) -> None:
        """A command on case-commands → the case's events → read models."""
        from gridflow.events import decode_message
        from processors import steps
        from sinks.sql import Record

        out, state = steps.case_step(
            raw, self.states.get(case_id), self.planner, now, "case-commands", case_id
        )
        if state is not None:
            self.states[case_id] = state
        records = []
        for suffix, key, value in out.sends:
            if suffix != "case-events":
                continue
            self.offset += 1
            records.append(Record("case-events", 0, self.offset, key.encode(), value, None))
            self.events.append(decode_message(value))
        if records:
            self.sink.apply_batch(records)


def real_deps(
    settings: Any, s3: Any, ref: Any, bootstrap: str | None = None, timeout_s: float = 10.0
) -> Any:
    """The API's deps on the real stack (Kafka at `bootstrap`, default the settings')."""
    from producers.app import Deps
    from producers.publisher import KafkaPublisher
    from producers.store import MinioStore
    from sinks.models import make_engine

    return Deps(
        ref=ref,
        publisher=KafkaPublisher(bootstrap or settings.kafka_bootstrap, timeout_s),
        store=MinioStore(s3),
        engine=make_engine(settings.database_url),
    )
