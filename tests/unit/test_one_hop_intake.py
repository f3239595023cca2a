"""Intake and filing in one step (issue 16, processors.steps.intake_and_file_step): a report
keyed by its township (intake.report_key, as the API publishes it) is filed on the partition
that holds its township's recent cases, with exactly the FileReport the two-hop path
(intake_step → reports-located → filing_step_keyed) makes; a report on any other partition
takes the two-hop path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bench.load import County
from gridflow import events as ev
from gridflow import topics
from gridflow.core import intake
from gridflow.events import decode_message
from processors import steps

T0 = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
N = topics.CASE_PARTITIONS
COUNTY = County()


def reports(count: int, spread_s: int = 90) -> list[tuple[str, bytes]]:
    """Residents' reports; every third one a few metres from the one before it, of the same
    category (a near-duplicate), as the API keys them."""
    out: list[tuple[str, bytes]] = []
    for i in range(count):
        key, raw = COUNTY.keyed_report(i, "onehop", T0 + timedelta(seconds=i * spread_s))
        if i % 3 == 2:
            msg, before = decode_message(raw), decode_message(out[-1][1]).data
            data = {**msg.data, "lat": before["lat"] + 0.00005, "lon": before["lon"],
                    "category_code": before["category_code"]}
            raw = ev.Message(id=msg.id, type=msg.type, case_id="", at=msg.at, actor=msg.actor,
                             data=data).encode()
            key = intake.report_key(COUNTY.ref, data["report_id"], data["lat"], data["lon"])
        out.append((key, raw))
    return out


def two_hop(raw: bytes, table: dict[str, Any]) -> list[tuple[str, str, bytes]]:
    out = steps.intake_step(raw, COUNTY.ref, T0, "reports", 0, 1)
    sends = []
    for topic, key, value in out.sends:
        if topic == "reports-located":
            sends += steps.filing_step_keyed(value, table, key, T0, "reports-located", 0, 1).sends
        else:
            sends.append((topic, key, value))
    return sends


def one_hop(key: str, raw: bytes, table: dict[str, Any]) -> list[tuple[str, str, bytes]]:
    return steps.intake_and_file_step(raw, COUNTY.ref, table, T0, "reports",
                                      topics.partition_of(key, N), 1, N).sends


def test_the_api_keys_a_report_by_the_township_it_is_in() -> None:
    key, raw = reports(1)[0]
    data = decode_message(raw).data
    grid_township = intake.file_report(
        COUNTY.ref, intake.validate_report(data, now=T0), T0).township_code
    assert key == grid_township
    assert intake.report_key(COUNTY.ref, "R1", None, None) == "R1"
    assert intake.report_key(COUNTY.ref, "R1", 0.0, 0.0) == "R1"  # outside the county
    assert intake.report_key(COUNTY.ref, "R1", "not a number", 1) == "R1"


def test_one_hop_files_exactly_what_two_hops_file() -> None:
    # 400 reports a minute and a half apart over a small county: many near-duplicates
    one_table: dict[str, Any] = {}
    two_table: dict[str, Any] = {}
    merged = 0
    for key, raw in reports(400):
        one = one_hop(key, raw, one_table)
        two = two_hop(raw, two_table)
        assert one == two  # same records, byte for byte, in the same order
        merged += any(b'"own_case_id"' in value for _, _, value in one)
    assert one_table == two_table
    assert merged > 0, "the sample has near-duplicates"


def test_a_report_on_another_partition_goes_on_to_reports_located() -> None:
    key, raw = reports(1)[0]
    elsewhere = (topics.partition_of(key, N) + 1) % N
    table: dict[str, Any] = {}
    out = steps.intake_and_file_step(raw, COUNTY.ref, table, T0, "reports", elsewhere, 1, N)
    assert [(topic, k) for topic, k, _ in out.sends] == [("reports-located", key)]
    assert out.sends == steps.intake_step(raw, COUNTY.ref, T0, "reports", elsewhere, 1).sends
    assert table == {}  # that partition does not hold the township's recent cases


def test_refusals_and_dead_letters_are_as_before() -> None:
    bad = b'{"not": "a report"'
    table: dict[str, Any] = {}
    out = steps.intake_and_file_step(bad, COUNTY.ref, table, T0, "reports", 0, 5, N)
    assert [s[0] for s in out.sends] == ["dead-letters"] and table == {}
    key, raw = reports(1)[0]
    msg = decode_message(raw)
    outside = ev.Message(id=msg.id, type=msg.type, case_id="", at=msg.at, actor=msg.actor,
                         data={**msg.data, "lat": 0.0, "lon": 0.0}).encode()
    out = steps.intake_and_file_step(outside, COUNTY.ref, table, T0, "reports",
                                     topics.partition_of(key, N), 5, N)
    assert out.sends == steps.intake_step(outside, COUNTY.ref, T0, "reports", 0, 5).sends
    [(topic, _, value)] = out.sends
    assert topic == "case-commands" and decode_message(value).type == ev.REFUSE_REPORT


def test_partition_of_is_kafkas_default_partitioner() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    parts = list(range(N))
    for key in ("330102001", "R00000001", "街道", ""):
        assert topics.partition_of(key, N) == DefaultPartitioner()(key.encode(), parts, parts)
