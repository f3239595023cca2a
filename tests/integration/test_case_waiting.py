"""A command ahead of its case's state waits in the state, on the real stack.

After a crash lost a case's state, the photo archive's answer to the case's CaseFiled (a
RecordPhotoArchived carrying `event_seq`) can be read before the report that files the case
again. Here the answer is put on case-commands before the report exists at all, so the worker
certainly reads it first: it must wait, for as long as it takes, and be decided right after the
report files the case, under its own id. Until step 13 of issue 16 it went round case-commands
instead, and a hundred rounds later, with the report still not there, it was refused as
"no such case" on the case's chain (CI, 2026-12-05: the report filed after it forked the chain).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from streams import consume_until, produce, start_worker

from bench.load import County
from gridflow import events as ev
from gridflow import topics
from gridflow.clock import scaled_spec
from gridflow.events import Message, decode_message
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 16, 1, 0, tzinfo=UTC)


def test_a_photo_answer_read_before_its_report_waits_for_it_and_is_decided_after_it(
        stack, stack_settings, tmp_path: Path) -> None:
    bootstrap, prefix = stack.bootstrap, stack_settings.topic_prefix
    settings = stack_settings.with_(clock=scaled_spec(T0, 0))
    key, report = County().keyed_report(5, "wait", T0)
    case_id = decode_message(report).case_id
    photo = Message(id="rpa-wait-1", type=ev.RECORD_PHOTO_ARCHIVED, case_id=case_id,
                    at=decode_message(report).at, actor="system:archive",
                    data={"sha256": "c" * 64, "source_key": "reports/x/1.jpg",
                          "status": "archived", "role": "before", "event_seq": 1})
    worker = start_worker(settings, tmp_path / "w")
    try:
        produce(bootstrap, f"{prefix}.case-commands", case_id, photo.encode())
        wait_until("the worker to hold the photo's command",
                   lambda: f"case {case_id}: 1 command(s) waiting" in
                   worker.log_path.read_text(errors="replace"), 120.0, check=worker.check)
        time.sleep(3.0)  # long enough for a hundred rounds through case-commands, as before
        produce(bootstrap, f"{prefix}.reports", key, report,
                topics.partition_of(key, topics.CASE_PARTITIONS))
        seen = consume_until(
            bootstrap, f"{prefix}.case-events",
            lambda s: any(e["type"] == ev.PHOTO_ARCHIVED and e["case_id"] == case_id
                          for e in s), service=worker)
    finally:
        worker.stop()
    chain = [e for e in seen if e["case_id"] == case_id]
    assert [e["type"] for e in chain][0] == ev.CASE_FILED
    assert ev.COMMAND_REFUSED not in [e["type"] for e in chain]
    assert [e["seq"] for e in chain] == list(range(1, len(chain) + 1))
    last = chain[-1]
    assert last["type"] == ev.PHOTO_ARCHIVED and last["causation_id"] == photo.id
    assert last["data"]["sha256"] == "c" * 64
    log = worker.log_path.read_text(errors="replace")
    assert f"case {case_id}: 0 command(s) waiting" in log  # woken by the filing
