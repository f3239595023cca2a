"""Verify on the real stack catches an acknowledged report that was lost: a ReportSubmitted on
the reports topic that the processor group committed past with nothing of it anywhere
downstream is listed as lost (topic[partition]@offset, report id) and verify is not clean, by
the function and by `gridflow audit verify` (exit 1); once its consequences are on the log,
verify is clean again."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from audit import completeness as cmp
from audit.verify import verify
from demo.histories import T0, HoursPlanner, photo
from gridflow import events as ev
from gridflow import topics
from gridflow.core import geo
from gridflow.core.refdata import load_reference_data
from gridflow.events import Message, derived_id, iso
from processors import steps
from processors.archive import photos_of
from sinks.models import create_schema, make_engine
from sinks.runner import run_sink

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
REF = load_reference_data()
GRID = "421099101202001"


def report(report_id: str) -> Message:
    lat, lon = geo.representative_point(REF.grids[GRID])
    worker = next(w for w in REF.workers.values() if w.grid_code == GRID and w.active)
    actor = f"worker:{worker.id}"
    return Message(id=derived_id("report", report_id), type=ev.REPORT_SUBMITTED, case_id="",
                   at=iso(T0), actor=actor, data={
                       "report_id": report_id, "reporter": actor, "category_code": "E0102",
                       "description": "路边垃圾堆积, 已三天无人清运", "lat": lat, "lon": lon,
                       "captured_at": iso(T0), "photos": [photo(f"reports/{report_id}/0.jpg")]})


def downstream(r: Message, prefix: str) -> list[tuple[str, str, bytes]]:
    """What the worker makes of `r` (the processors' own steps): (topic, key, value) in order —
    ReportLocated, FileReport, CaseFiled and its TaskDispatched, the photo's RecordPhotoArchived
    and PhotoArchived."""
    names = topics.topic_names(prefix)
    out: list[tuple[str, str, bytes]] = []
    state: dict[str, Any] | None = None

    def decide(key: str, raw: bytes) -> list[tuple[str, str, bytes]]:
        nonlocal state
        out.append((names["case-commands"], key, raw))
        o, state = steps.case_step(raw, state, HoursPlanner(), T0, names["case-commands"], key)
        return [(names[s], k, v) for s, k, v in o.sends]

    ((suffix, key, located),) = steps.intake_step(r.encode(), REF, T0, names["reports"]).sends
    assert suffix == "reports-located"
    out.append((names[suffix], key, located))
    filed, _ = steps.filing_step(located, [], T0, names["reports-located"])
    ((_, case_id, file_cmd),) = filed.sends
    events = decide(case_id, file_cmd)
    out += events
    for _, _, raw in events:
        event = ev.decode_message(raw)
        for ref in photos_of(event):
            cmd = steps.command(ev.RECORD_PHOTO_ARCHIVED, case_id, event.at,
                                {"sha256": ref["sha256"], "source_key": ref["key"],
                                 "source_bucket": ref["bucket"], "status": "archived"},
                                cause=f"{event.id}:{ref['sha256']}:{ref['key']}")
            out += decide(case_id, cmd.encode())
    assert [ev.loads(v)["type"] for _, _, v in out] == [
        ev.REPORT_LOCATED, ev.FILE_REPORT, ev.CASE_FILED, ev.TASK_DISPATCHED,
        ev.RECORD_PHOTO_ARCHIVED, ev.PHOTO_ARCHIVED]
    return out


def send(bootstrap: str, records: list[tuple[str, str, bytes]]) -> dict[TopicPartition, int]:
    """Produce in order; the next offset after each record's (what a consumer commits)."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    past: dict[TopicPartition, int] = {}
    try:
        for topic, key, value in records:
            meta = producer.send(topic, key=key.encode(), value=value).get(timeout=30)
            past[TopicPartition(topic, meta.partition)] = meta.offset + 1
    finally:
        producer.close()
    return past


def commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    """Commit offsets for `group` as its worker would after processing up to them."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             enable_auto_commit=False)
    try:
        consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
    finally:
        consumer.close()


def sink(settings: Any, url: str, prefix: str) -> None:
    engine = make_engine(url)
    create_schema(engine)
    run_sink(settings, engine, drain=True, topic_prefix=prefix, poll_timeout_ms=200)
    engine.dispose()


def test_verify_lists_a_report_the_processor_committed_past_and_lost(
        stack, topic_prefix, sqlite_url) -> None:  # type: ignore[no-untyped-def]
    settings = stack.settings.with_(topic_prefix=topic_prefix)
    group = cmp.processor_group(topic_prefix)
    r = report("r-lost-0001")
    reports = topics.REPORTS.name(topic_prefix)

    # acknowledged: on the reports topic, and the processor group committed past it
    past = send(stack.bootstrap, [(reports, "r-lost-0001", r.encode())])
    ((tp, next_offset),) = past.items()
    commit(stack.bootstrap, group, past)
    sink(stack.settings, sqlite_url, topic_prefix)  # the live database: nothing to apply

    result = verify(settings, sqlite_url)
    c = result.completeness
    assert not result.clean and c.total_lost == 1
    (lost,) = c.lost
    assert (lost.hop, lost.where, lost.report_id, lost.id) == (
        cmp.INTAKE, f"{reports}[{tp.partition}]@{next_offset - 1}", "r-lost-0001", r.id)
    assert lost.group == group and c.end_to_end.lost == 1
    assert result.tables.clean and result.chain.clean  # the read models agree with the log

    cli = subprocess.run([sys.executable, "-m", "bootstrap.cli", "audit", "verify", "--database",
                          sqlite_url, "--prefix", topic_prefix], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert f"{reports}[{tp.partition}]@{next_offset - 1}" in cli.stdout
    assert "r-lost-0001" in cli.stdout and "丢失" in cli.stdout

    # its consequences reach the log, the worker commits past them, the sink applies them
    past = send(stack.bootstrap, downstream(r, topic_prefix))
    commit(stack.bootstrap, group, past)
    sink(stack.settings, sqlite_url, topic_prefix)
    result = verify(settings, sqlite_url)
    c = result.completeness
    assert result.clean, ([x.render() for x in c.lost] + c.end_to_end.missing
                          + [d.render() for d in result.tables.diffs])
    assert {h.hop: (h.records, h.handed_on, h.in_flight) for h in c.hops} == {
        cmp.INTAKE: (1, 1, 0), cmp.FILING: (1, 1, 0), cmp.CASES: (2, 2, 0),
        cmp.PHOTOS: (1, 1, 0)}
    assert c.end_to_end.outcomes == {ev.CASE_FILED: 1}


def test_a_report_beyond_the_committed_offset_is_in_flight_not_lost(
        stack, topic_prefix, sqlite_url) -> None:  # type: ignore[no-untyped-def]
    settings = stack.settings.with_(topic_prefix=topic_prefix)
    reports = topics.REPORTS.name(topic_prefix)
    send(stack.bootstrap, [(reports, "r-wait-0001", report("r-wait-0001").encode())])
    sink(stack.settings, sqlite_url, topic_prefix)
    result = verify(settings, sqlite_url)  # no commits at all: everything is in flight
    assert result.clean, [x.render() for x in result.completeness.lost]
    assert result.completeness.end_to_end.in_flight == 1
    assert any("committed no offsets" in n for n in result.completeness.notes)

