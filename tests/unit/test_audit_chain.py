"""Hash-chain verification: a clean log passes; an event altered, removed or inserted in the log,
and a ledger row edited in the database, are each reported with the case id."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from audit import chain
from audit.chain import ChainVerifier, ledger_row_hash
from demo import histories as sample
from gridflow.events import Message


def cases() -> list[list[Message]]:
    return [sample.eventful_lifecycle(f"AJ{i:03d}", sample.T0 + timedelta(minutes=i))
            for i in range(3)]


def ledger_rows(events: list[Message]) -> list[dict[str, Any]]:
    return [{"event_id": m.id, "case_id": m.case_id, "seq": m.seq, "type": m.type,
             "at": m.at_dt, "actor": m.actor, "data": m.data, "schema": m.schema,
             "causation_id": m.causation_id, "prev_hash": m.prev_hash, "hash": m.hash(),
             "partition": 0, "offset": i} for i, m in enumerate(events)]


def verify(log: list[Message], ledger: list[dict[str, Any]]) -> chain.ChainReport:
    v = ChainVerifier()
    for offset, m in enumerate(log):
        v.feed(0, offset, m.encode())
    return v.compare_ledger(ledger)


def kinds(report: chain.ChainReport) -> set[tuple[str, str]]:
    return {(f.kind, f.case_id) for f in report.findings}


def test_a_clean_log_and_ledger_pass() -> None:
    events = [m for c in cases() for m in c]
    report = verify(events, ledger_rows(events))
    assert report.clean and report.cases == 3 and report.events == len(events)
    assert report.ledger_rows == len(events)


def test_exact_redeliveries_are_counted_not_reported() -> None:
    events = [m for c in cases() for m in c]
    report = verify(events + events[:4], ledger_rows(events))
    assert report.clean and report.duplicates == 4


def test_an_altered_event_breaks_the_next_link_and_differs_from_the_ledger() -> None:
    a, b, c = cases()
    ledger = ledger_rows(a + b + c)
    altered = replace(b[3], data={**b[3].data, "note": "篡改"})
    report = verify(a + b[:3] + [altered] + b[4:] + c, ledger)
    assert kinds(report) == {(chain.ALTERED, b[0].case_id), (chain.LINK_BROKEN, b[0].case_id)}
    link = next(f for f in report.findings if f.kind == chain.LINK_BROKEN)
    assert link.seq == b[4].seq and "altered" in link.detail


def test_an_altered_last_event_is_caught_by_the_ledger_alone() -> None:
    a, b, c = cases()
    altered = replace(c[-1], actor="dept:forged")
    report = verify(a + b + c[:-1] + [altered], ledger_rows(a + b + c))
    assert kinds(report) == {(chain.ALTERED, c[0].case_id)}


def test_a_removed_event_leaves_a_gap() -> None:
    a, b, c = cases()
    report = verify(a + b[:2] + b[3:] + c, ledger_rows(a + b + c))
    assert kinds(report) == {(chain.SEQ_GAP, b[0].case_id), (chain.REMOVED, b[0].case_id)}
    removed = next(f for f in report.findings if f.kind == chain.REMOVED)
    assert removed.event_id == b[2].id and removed.seq == b[2].seq


def test_an_inserted_event_is_reported_whether_or_not_it_is_well_forged() -> None:
    a, b, c = cases()
    ledger = ledger_rows(a + b + c)
    # a forgery with a valid link at the end of the chain: only the ledger knows
    forged = replace(a[-1], id="forged-1", seq=a[-1].seq + 1, prev_hash=a[-1].hash())
    report = verify(a + [forged] + b + c, ledger)
    assert kinds(report) == {(chain.NOT_IN_LEDGER, a[0].case_id)}
    # a clumsy one in the middle: a repeated seq
    clumsy = replace(b[2], id="forged-2", data={"note": "x"})
    report = verify(a + b[:3] + [clumsy] + b[3:] + c, ledger)
    assert kinds(report) == {(chain.SEQ_REPEAT, b[0].case_id), (chain.NOT_IN_LEDGER, b[0].case_id)}


def test_an_edited_ledger_row_is_reported() -> None:
    events = [m for c in cases() for m in c]
    ledger = ledger_rows(events)
    ledger[5] = {**ledger[5], "data": {**ledger[5]["data"], "score": 5}}
    report = verify(events, ledger)
    assert kinds(report) == {(chain.LEDGER_EDITED, events[5].case_id)}


def test_undecodable_records_are_listed_as_dead_letters_not_findings() -> None:
    v = ChainVerifier()
    v.feed(2, 17, b"\xff not json")
    report = v.compare_ledger([])
    assert report.clean and [u.split(":")[0] for u in report.undecodable] == ["p2@17"]


def test_ledger_row_hash_is_the_event_hash() -> None:
    for row, m in zip(ledger_rows(cases()[0]), cases()[0], strict=True):
        assert ledger_row_hash(row) == m.hash()


def test_findings_render_with_case_id_in_both_languages() -> None:
    a, b, c = cases()
    report = verify(a + b[:2] + b[3:] + c, ledger_rows(a + b + c))
    text = report.findings[0].render()
    assert b[0].case_id in text and "事件" in text and "seq" in text
