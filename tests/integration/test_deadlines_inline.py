"""The case processor files the stage clocks of the events it decides (GRIDFLOW_DEADLINES_INLINE,
issue 16 step 4), on the real stack: its case events carry the `gf-clocks` mark and their
warnings fire; case events without the mark (a log written by an older worker, or a backlog the
deadline agent had not read at the upgrade) are still followed by the deadline agent; a marked
event is never filed twice by it. Run with the option on and off."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer
from streams import produce, start_worker
from test_deadlines_stream import VILLAGE_DEPT, file_case, tick, wait_ready

from bootstrap import working_calendar
from gridflow import events as ev
from gridflow import topics
from gridflow.clock import scaled_spec
from gridflow.core.calendar import UNKNOWN_YEARS_WEEKDAYS
from gridflow.core.sla import SlaPlanner, load_bundled_policy, warn_instants
from gridflow.events import parse_ts
from processors import steps
from processors.deadlines import FOLLOWED_HEADER, FOLLOWED_HEADERS

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 16, 1, 0, tzinfo=UTC)  # Monday 09:00 in Beijing
N = topics.CASE_PARTITIONS


def _ids_on_one_partition(count: int) -> list[str]:
    """Case ids that all land on the same partition (so their events are read in order)."""
    want = topics.partition_of("AJ-UP-0", N)
    ids = [f"AJ-UP-{i}" for i in range(200) if topics.partition_of(f"AJ-UP-{i}", N) == want]
    return ids[:count]


def _decided_offline(case_id: str) -> list[bytes]:
    """The case events an older worker wrote for this case's FileReport."""
    planner = SlaPlanner(load_bundled_policy(),
                         replace(working_calendar(), unknown_years=UNKNOWN_YEARS_WEEKDAYS))
    out, _ = steps.case_step(file_case(case_id, 1).encode(), None, planner, T0,
                             "old.case-commands", case_id, 0, 0)
    return [value for suffix, _, value in out.sends if suffix == "case-events"]


def _commands_for(bootstrap: str, topic: str, case_ids: set[str]) -> list[dict]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=1000)
    try:
        return [json.loads(r.value) for r in consumer
                if json.loads(r.value).get("case_id") in case_ids]
    finally:
        consumer.close()


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "from-the-log"])
def test_marked_events_are_filed_once_and_unmarked_ones_still_followed(
        stack, stack_settings, tmp_path: Path, inline: bool):
    bootstrap, prefix = stack.bootstrap, stack_settings.topic_prefix
    topics.ensure_topics(bootstrap, prefix)
    old, marked, new = _ids_on_one_partition(3)
    # What an older worker left: events of `old` without the mark, and (as if the case
    # processor had filed them) events of `marked` with it, the marked ones first.
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for case_id, headers in ((marked, FOLLOWED_HEADERS), (old, None)):
        for raw in _decided_offline(case_id):
            producer.send(f"{prefix}.case-events", key=case_id.encode(), value=raw,
                          headers=headers).get(timeout=30)
    producer.close()

    settings = stack_settings.with_(clock=scaled_spec(T0, 0), deadlines_inline=inline)
    worker = start_worker(settings, tmp_path / "w")
    try:
        wait_ready(worker)
        produce(bootstrap, f"{prefix}.case-commands", new, file_case(new, 1).encode())
        # the new case's events, and whether they carry the mark
        consumer = KafkaConsumer(f"{prefix}.case-events", bootstrap_servers=bootstrap,
                                 auto_offset_reset="earliest", enable_auto_commit=False,
                                 consumer_timeout_ms=1000)
        dispatched = None
        deadline = time.monotonic() + 90
        while dispatched is None and time.monotonic() < deadline:
            for r in consumer:
                e = json.loads(r.value)
                if e["case_id"] == new and e["type"] == ev.TASK_DISPATCHED:
                    dispatched = (e, dict(r.headers or []))
            worker.check()
        consumer.close()
        assert dispatched is not None, "the new case was not dispatched"
        event, headers = dispatched
        assert (FOLLOWED_HEADER in headers) == inline, headers

        due = parse_ts(event["data"]["sign_due"])
        w50, w80 = warn_instants(T0, due, (0.5, 0.8), working_calendar())
        tick(bootstrap, prefix, w50 + timedelta(minutes=1))
        tick(bootstrap, prefix, w80 + timedelta(minutes=1))
        want = {old, new}
        deadline = time.monotonic() + 90
        warned: list[dict] = []
        while time.monotonic() < deadline:
            warned = [c for c in _commands_for(bootstrap, f"{prefix}.case-commands", want | {marked})
                      if c["type"] == ev.WARN_DEADLINE]
            if {c["case_id"] for c in warned} == want and len(warned) >= 4:
                break
            worker.check()
            time.sleep(0.5)
    finally:
        worker.stop()
    # both warnings of the old and the new case's sign-for clock, once each; none for the
    # marked case, whose clocks the deadline agent left to the case processor
    by_case = sorted((c["case_id"], c["data"]["fraction"]) for c in warned)
    assert by_case == sorted([(old, 0.5), (old, 0.8), (new, 0.5), (new, 0.8)]), by_case
    assert marked not in {c["case_id"] for c in warned}
    assert VILLAGE_DEPT in event["data"]["department"]
