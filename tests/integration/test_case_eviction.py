"""A finished case leaves the worker's case table on the real stack: a tombstone on the table's
changelog once the eviction period has passed in domain time, and a later command for it is
refused on the case's own chain — by this worker and by a worker on a new machine that
restored its tables from the changelogs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from streams import consume_until, produce, start_worker

from gridflow import events as ev
from gridflow.clock import scaled_spec
from gridflow.core.eviction import EVICTED_CODE
from gridflow.events import Message, decode_message, iso
from processors.app import app_id_for
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 16, 1, 0, tzinfo=UTC)
CASE = "AJ20261116-EVICTME1"
OTHER = "AJ20261116-SECONDCS"


def refuse_report(case_id: str) -> Message:
    return Message(id=f"refuse-{case_id}", type=ev.REFUSE_REPORT, case_id=case_id, at=iso(T0),
                   actor="resident:13800000000",
                   data={"report": {"report_id": f"rep-{case_id}", "reporter": "resident:13800000000"},
                         "code": "outside_county", "reason_zh": "不在本县范围内",
                         "reason_en": "outside the county"})


def rate(case_id: str, n: int, at: datetime) -> Message:
    return Message(id=f"rate-{case_id}-{n}", type=ev.RATE_CASE, case_id=case_id, at=iso(at),
                   actor="resident:13800000000", data={"score": 1})


def tick_all(bootstrap: str, prefix: str, now: datetime) -> None:
    for p in range(4):
        produce(bootstrap, f"{prefix}.deadline-ticks", str(p),
                json.dumps({"now": iso(now)}).encode(), p)


def changelog_records(bootstrap: str, topic: str, key: bytes) -> list[bytes | None]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, consumer_timeout_ms=1000)
    try:
        return [r.value for r in consumer if r.key == key]
    finally:
        consumer.close()


def events_of(bootstrap: str, prefix: str, case_id: str, n: int, worker) -> list[dict]:
    seen = consume_until(bootstrap, f"{prefix}.case-events",
                         lambda s: len([e for e in s if e["case_id"] == case_id]) >= n,
                         service=worker)
    return [e for e in seen if e["case_id"] == case_id]


def test_a_finished_case_is_tombstoned_and_a_late_command_refused(stack, stack_settings,
                                                                   tmp_path: Path):
    bootstrap, prefix = stack.bootstrap, stack_settings.topic_prefix
    settings = stack_settings.with_(clock=scaled_spec(T0, 0), closed_case_evict_days=1.0)
    changelog = f"{app_id_for(prefix, True)}-cases-changelog"
    key = json.dumps(CASE).encode()
    worker = start_worker(settings, tmp_path / "w1")
    try:
        produce(bootstrap, f"{prefix}.case-commands", CASE, refuse_report(CASE).encode())
        produce(bootstrap, f"{prefix}.case-commands", OTHER, refuse_report(OTHER).encode())
        [not_filed] = events_of(bootstrap, prefix, CASE, 1, worker)
        assert not_filed["type"] == ev.CASE_NOT_FILED
        events_of(bootstrap, prefix, OTHER, 1, worker)

        tick_all(bootstrap, prefix, T0 + timedelta(hours=12))  # not yet: nothing happens
        # the case is finished and a day passes in domain time: its state leaves the table
        tick_all(bootstrap, prefix, T0 + timedelta(days=1, hours=2))
        wait_until("a tombstone for the case on the changelog",
                   lambda: None in changelog_records(bootstrap, changelog, key), 90.0,
                   check=worker.check)
        assert changelog_records(bootstrap, changelog, key)[-1] is None

        produce(bootstrap, f"{prefix}.case-commands", CASE,
                rate(CASE, 1, T0 + timedelta(days=2)).encode())
        first, refused = events_of(bootstrap, prefix, CASE, 2, worker)
        assert refused["type"] == ev.COMMAND_REFUSED
        assert refused["data"]["code"] == EVICTED_CODE and refused["data"]["reason_zh"]
        # on the case's own chain, not a new case
        assert refused["seq"] == 2
        assert refused["prev_hash"] == decode_message(json.dumps(first).encode(),
                                                      ev.EVENT_TYPES).hash()
    finally:
        worker.stop()

    # a worker on a new machine (empty data directory) restores the stub from the changelog
    again = start_worker(settings, tmp_path / "w2")
    try:
        produce(bootstrap, f"{prefix}.case-commands", CASE,
                rate(CASE, 2, T0 + timedelta(days=3)).encode())
        chain = events_of(bootstrap, prefix, CASE, 3, again)
        assert [e["seq"] for e in chain] == [1, 2, 3]
        assert chain[2]["data"]["code"] == EVICTED_CODE
        assert not any(e["type"] == ev.CASE_FILED for e in chain)
    finally:
        again.stop()
