"""Case history for auditors: Beijing time, who and what in Chinese, the chain checked, every
photo listed with its archive copy; moments typed by an auditor read unambiguously."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from audit import history
from audit.moments import MomentError, beijing, parse_moment
from audit.summaries import actor_zh, summarize
from demo import histories as sample
from gridflow import events as ev
from gridflow.events import Message, iso


def test_a_time_without_offset_is_beijing_time_and_says_so() -> None:
    m = parse_moment("2026-10-01 09:00")
    assert m.utc == datetime(2026, 10, 1, 1, 0, tzinfo=UTC)
    assert "北京时间" in m.explanation and "Beijing" in m.explanation
    assert parse_moment("2026-10-01T09:00:30").utc == datetime(2026, 10, 1, 1, 0, 30, tzinfo=UTC)


def test_a_time_with_an_offset_is_taken_as_given() -> None:
    assert parse_moment("2026-10-01T09:00+08:00").utc == datetime(2026, 10, 1, 1, 0, tzinfo=UTC)
    z = parse_moment("2026-10-01T01:00Z")
    assert z.utc == datetime(2026, 10, 1, 1, 0, tzinfo=UTC) and "offset" in z.explanation
    assert "09:00:00" in z.explanation  # shown in Beijing time too


@pytest.mark.parametrize("text", ["2026-10-01", "", "yesterday", "2026-13-01 09:00"])
def test_ambiguous_or_bad_moments_are_refused_with_a_hint(text: str) -> None:
    with pytest.raises(MomentError):
        parse_moment(text)


def test_beijing_formatting() -> None:
    assert beijing(datetime(2026, 11, 16, 1, 0, tzinfo=UTC)) == "2026-11-16 09:00:00"
    assert beijing(None) == "—"


def test_every_event_type_has_a_chinese_line() -> None:
    events = sample.eventful_lifecycle("AJ001", sample.T0)
    names = {"D1": "城管局"}
    lines = {m.type: summarize(m, names) for m in events}
    assert set(lines) >= {ev.CASE_FILED, ev.TASK_DISPATCHED, ev.TASK_SIGNED, ev.TASK_RESOLVED}
    for t, line in lines.items():
        assert line and "unknown" not in line, t
    odd = Message(id="x", type="SomethingNew", case_id="AJ", at=iso(sample.T0), actor="a")
    assert "未知" in summarize(odd)
    broken = Message(id="x", type=ev.TASK_DISPATCHED, case_id="AJ", at=iso(sample.T0),
                     actor="system", data={"sign_due": "not a time", "department": 3})
    assert "派遣" in summarize(broken)


def test_actors_read_as_people() -> None:
    assert actor_zh("worker:GW0001@421099101201001") == "网格员 GW0001 (网格 421099101201001)"
    assert actor_zh("dept:county.chengguan", {"county.chengguan": "城管局"}) == "部门 城管局"
    assert actor_zh("system:deadlines") == "系统 (时限监控)"


def test_history_lists_events_in_order_and_checks_the_chain() -> None:
    events = sample.eventful_lifecycle("AJ001", sample.T0)
    rows = [(m, f"p0@{i}", m.hash()) for i, m in enumerate(events)]
    h = history.build_history("AJ001", "test", rows)
    assert [e.seq for e in h.entries] == list(range(1, len(events) + 1))
    assert h.findings == [] and h.entries[0].at == events[0].at
    # one ledger row edited, one event missing
    bad = [rows[0], (rows[1][0], rows[1][1], "0" * 64), *rows[3:]]
    h = history.build_history("AJ001", "test", bad)
    assert {f.kind for f in h.findings} == {"ledger_edited", "seq_gap"}


def test_expected_photos_join_references_and_archive_records() -> None:
    events = sample.eventful_lifecycle("AJ001", sample.T0)
    photos = history.expected_photos(events)
    assert photos and all(len(p.sha256) == 64 for p in photos)
    archived = [e for e in events if e.type == ev.PHOTO_ARCHIVED]
    assert archived, "the sample archives photos"
    keys = {p.archive_key for p in photos if p.archive_key}
    assert keys == {str(e.data["archive_key"]) for e in archived if e.data.get("archive_key")}
    # an archive record for a photo no event referenced is listed too
    orphan = replace(archived[0], id="o", data={**archived[0].data, "sha256": "b" * 64,
                                                "source_key": "elsewhere.jpg"})
    assert len(history.expected_photos([*events, orphan])) == len(photos) + 1
