"""A report decided in one step (issue 16, second step): the API places the ticket on the
partition of the report's township (intake.ticket_for), so the case agent, which reads the
reports and the case commands as one stream, decides the report's FileReport at once instead of
sending it round through `<p>.case-commands` (processors.app, Outputs.take_commands_on). The
case's events are exactly those the round trip gives."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from kafka.partitioner.default import murmur2 as kafka_murmur2

from bench.load import County
from gridflow import events as ev
from gridflow import topics
from gridflow.core import intake, partitioning
from gridflow.core.calendar import UNKNOWN_YEARS_WEEKDAYS, load_bundled_calendar
from gridflow.core.sla import SlaPlanner, load_bundled_policy
from gridflow.events import decode_message
from processors import steps

T0 = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
N = topics.CASE_PARTITIONS
COUNTY = County()
PLANNER = SlaPlanner(load_bundled_policy(),
                     replace(load_bundled_calendar(), unknown_years=UNKNOWN_YEARS_WEEKDAYS))


def test_murmur2_is_kafkas() -> None:
    for n in range(3000):
        data = os.urandom(n % 41)
        assert partitioning.murmur2(data) == kafka_murmur2(data)
    for key in ("421099101", "AJ20261102-IIXGJVR6", "街道", ""):
        assert partitioning.partition_of(key, N) == topics.partition_of(key, N)


def test_a_ticket_lands_on_its_townships_partition_and_is_deterministic() -> None:
    townships = sorted({g.township_code for g in COUNTY.ref.grids.values()})
    assert len({partitioning.partition_of(t, N) for t in townships}) > 1, "sample spans partitions"
    moved = 0
    for i in range(300):
        township = townships[i % len(townships)]
        rid = f"R{i:07d}"
        cid = intake.case_id_for(rid, T0, township)
        assert intake.CASE_ID_RE.match(cid)
        assert partitioning.partition_of(cid, N) == partitioning.partition_of(township, N)
        assert cid == intake.case_id_for(rid, T0 + timedelta(hours=2), township)  # same day
        assert cid.startswith("AJ20261102-")
        moved += cid != intake.case_id_for(rid, T0)
    # without a township the id is the one it always was; about 3 in 4 had to be drawn again
    assert 150 < moved < 300
    assert intake.case_id_for("R1", T0) == intake.case_id_for("R1", T0, "")


def test_the_ticket_answered_is_the_case_filed() -> None:
    key, raw = COUNTY.keyed_report(7, "hop", T0)
    msg = decode_message(raw)
    ticket = intake.ticket_for(COUNTY.ref, msg.data["report_id"], msg.data["lat"],
                               msg.data["lon"], msg.at_dt)
    assert msg.case_id == ticket
    out = steps.intake_and_file_step(raw, COUNTY.ref, {}, T0, "reports",
                                     topics.partition_of(key, N), 1, N)
    [(topic, case_key, value)] = out.sends
    assert (topic, case_key) == ("case-commands", ticket)
    assert decode_message(value).case_id == ticket
    # outside the county: no township, the id as before
    assert intake.ticket_for(COUNTY.ref, "R1", 0.0, 0.0, T0) == intake.case_id_for("R1", T0)


def test_a_malformed_ticket_is_a_dead_letter() -> None:
    key, raw = COUNTY.keyed_report(1, "hop", T0)
    bad = replace(decode_message(raw), case_id="DROP TABLE cases").encode()
    out = steps.intake_and_file_step(bad, COUNTY.ref, {}, T0, "reports", 0, 9, N)
    [(topic, _, value)] = out.sends
    assert topic == "dead-letters"
    dead = ev.loads(value)
    assert "case_id" in dead["reason"] and dead["offset"] == 9


def test_take_commands_on_keeps_order_and_leaves_the_rest() -> None:
    out = steps.Outputs()
    here = [k for k in (f"AJ20261102-{i:08d}" for i in range(40))
            if topics.partition_of(k, N) == 1][:2]
    there = next(k for k in (f"X{i}" for i in range(40)) if topics.partition_of(k, N) != 1)
    out.send("dead-letters", "reports", b"d")
    out.send("case-commands", here[0], b"a")
    out.send("case-commands", there, b"b")
    out.send("case-commands", here[1], b"c")
    assert out.take_commands_on(1, N) == [(here[0], b"a"), (here[1], b"c")]
    assert out.sends == [("dead-letters", "reports", b"d"), ("case-commands", there, b"b")]


def _decide(value: bytes, case_id: str, cases: dict[str, Any], source: str,
            p: int, made: ev.Message | None = None) -> list[tuple[str, str, bytes]]:
    res, state = steps.case_step(value, cases.get(case_id), PLANNER, T0, source, case_id, p, 1,
                                 made)
    if state is not None:
        cases[case_id] = state
    return res.sends


def _one_step(key: str, raw: bytes, recent: dict[str, Any], cases: dict[str, Any],
              ) -> list[tuple[str, str, bytes]]:
    """What the case agent does with a report (processors.app): intake and filing, then the
    commands that land here decided at once, each handed on as the message it was made as."""
    p = topics.partition_of(key, N)
    out = steps.intake_and_file_step(raw, COUNTY.ref, recent, T0, "reports", p, 1, N)
    here = out.take_local_commands(p, N)
    sent = list(out.sends)
    for case_id, value, made in here:
        assert made is not None and made.encode() == value
        sent += _decide(value, case_id, cases, "reports", p, made)
    return sent


def _round_trip(key: str, raw: bytes, recent: dict[str, Any], cases: dict[str, Any],
                ) -> list[tuple[str, str, bytes]]:
    """The same report with every case command sent round through case-commands first."""
    p = topics.partition_of(key, N)
    out = steps.intake_and_file_step(raw, COUNTY.ref, recent, T0, "reports", p, 1, N)
    sent: list[tuple[str, str, bytes]] = []
    for topic, case_id, value in out.sends:
        if topic == "case-commands":
            sent += _decide(value, case_id, cases, "case-commands", p)
        else:
            sent.append((topic, case_id, value))
    return sent


def test_one_step_decides_exactly_what_the_round_trip_decides() -> None:
    # 300 reports a minute apart, every third a near-duplicate of the one before it
    recent_a: dict[str, Any] = {}
    recent_b: dict[str, Any] = {}
    cases_a: dict[str, Any] = {}
    cases_b: dict[str, Any] = {}
    merged = opened = 0
    prev = b""
    for i in range(300):
        key, raw = COUNTY.keyed_report(i, "hop", T0 + timedelta(minutes=i))
        if i % 3 == 2:
            msg, before = decode_message(raw), decode_message(prev).data
            data = {**msg.data, "lat": before["lat"] + 0.00005, "lon": before["lon"],
                    "category_code": before["category_code"]}
            ticket = intake.ticket_for(COUNTY.ref, data["report_id"], data["lat"], data["lon"],
                                       msg.at_dt)
            raw = replace(msg, data=data, case_id=ticket).encode()
            key = intake.report_key(COUNTY.ref, data["report_id"], data["lat"], data["lon"])
        prev = raw
        one = _one_step(key, raw, recent_a, cases_a)
        two = _round_trip(key, raw, recent_b, cases_b)
        assert one == two  # the same events, byte for byte, in the same order
        assert not [s for s in one if s[0] == "case-commands"], "nothing sent round"
        types = [decode_message(v).type for t, _, v in one if t == "case-events"]
        merged += ev.REPORT_MERGED in types
        opened += ev.CASE_FILED in types
    assert cases_a == cases_b and recent_a == recent_b
    assert merged > 0 and opened > 0


def test_a_report_whose_case_is_elsewhere_is_sent_round() -> None:
    """A report written before the tickets (no case id in it) keeps the id it always had,
    which lands anywhere: its FileReport goes through case-commands unless it lands here."""
    sent_round = 0
    for i in range(40):
        key, raw = COUNTY.keyed_report(i, "old", T0, keyed="township")
        p = topics.partition_of(key, N)
        out = steps.intake_and_file_step(raw, COUNTY.ref, {}, T0, "reports", p, 1, N)
        [(_, case_id, _)] = out.sends
        here = out.take_commands_on(p, N)
        assert bool(here) == (topics.partition_of(case_id, N) == p)
        sent_round += not here
    assert sent_round > 0


def test_a_refused_report_is_decided_from_the_message_as_from_its_bytes() -> None:
    # a position outside every grid: intake refuses it with a RefuseReport for its case, made
    # here and decided here; decided from the message or from its bytes, the same events
    key, raw = COUNTY.keyed_report(5, "far", T0)
    msg = decode_message(raw)
    far = replace(msg, data={**msg.data, "lat": 1.0, "lon": 1.0}).encode()
    for p in range(N):
        out = steps.intake_and_file_step(far, COUNTY.ref, {}, T0, "reports", p, 1, N)
        here = out.take_local_commands(p, N)
        if here:
            break
    [(case_id, value, made)] = here
    assert made is not None and made.type == ev.REFUSE_REPORT and made.encode() == value
    from_message, state_m = steps.case_step(value, None, PLANNER, T0, "reports", case_id, p, 1,
                                            made)
    from_bytes, state_b = steps.case_step(value, None, PLANNER, T0, "reports", case_id, p, 1)
    assert from_message.sends == from_bytes.sends and from_message.sends
    assert state_m == state_b


def test_bytes_sent_as_bytes_have_no_message_and_a_bad_made_command_is_a_dead_letter() -> None:
    out = steps.Outputs()
    out.send("case-commands", "AJ20261102-AAAAAAAA", b"{}")
    [(_, _, made)] = out.take_local_commands(topics.partition_of("AJ20261102-AAAAAAAA", N), N)
    assert made is None
    # a made command whose payload does not check is dead-lettered as decoding would have
    bad = ev.Message(id="c1", type=ev.FILE_REPORT, case_id="AJ20261102-AAAAAAAA",
                     at="2026-11-02T01:00:00.000000Z", actor="system", data={"report": 7})
    res, state = steps.case_step(bad.encode(), None, PLANNER, T0, "reports", bad.case_id, 0, 1,
                                 bad)
    again, _ = steps.case_step(bad.encode(), None, PLANNER, T0, "reports", bad.case_id, 0, 1)
    assert state is None and [t for t, _, _ in res.sends] == ["dead-letters"]
    assert res.sends == again.sends


def test_a_report_read_again_files_its_case_at_once_and_wakes_the_commands_waiting_for_it(
) -> None:
    # After a crash lost a case's state, the photo archive's answer to its CaseFiled (on
    # case-commands) can be read before the report (on reports) that files the case again. The
    # answer waits in the state; the report's filing, made in the step, is not held behind it.
    key, raw = COUNTY.keyed_report(3, "hop", T0)
    p = topics.partition_of(key, N)
    out = steps.intake_and_file_step(raw, COUNTY.ref, {}, T0, "reports", p, 1, N)
    [(case_id, value, made)] = out.take_local_commands(p, N)
    first, state = steps.case_step(value, None, PLANNER, T0, "reports", case_id, p, 1, made,
                                   in_order=False)
    filed = [decode_message(v) for _, _, v in first.sends]
    assert filed[0].type == ev.CASE_FILED
    photo = ev.Message(id="rpa-1", type=ev.RECORD_PHOTO_ARCHIVED, case_id=case_id,
                       at=filed[0].at, actor="system:archive",
                       data={"sha256": "a" * 64, "source_key": "k", "status": "archived",
                             "event_seq": 1}).encode()
    answered, _ = steps.case_step(photo, state, PLANNER, T0, "case-commands", case_id, p, 2)
    lost: dict[str, Any] | None = None  # the next owner's state
    held, lost = steps.case_step(photo, lost, PLANNER, T0, "case-commands", case_id, p, 2)
    assert held.sends == [] and lost is not None and len(lost["waiting"]) == 1
    # read from case-commands, a filing would wait behind it
    behind, _ = steps.case_step(value, lost, PLANNER, T0, "case-commands", case_id, p, 3)
    assert behind.sends == []
    again, after = steps.case_step(value, lost, PLANNER, T0, "reports", case_id, p, 1, made,
                                   in_order=False)
    assert [v for _, _, v in again.sends] == [v for _, _, v in (*first.sends, *answered.sends)]
    assert after is not None and not after["waiting"]


def test_a_waiting_command_that_cannot_be_decided_is_dead_lettered_and_the_rest_decided(
        monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A command decided at once whose payload makes the decision raise is dead-lettered
    # (case_step). Reached while waiting, it is dead-lettered the same way by the decision that
    # reached it, and that decision (the report's filing here) goes on.
    from gridflow.core import case as case_core

    key, raw = COUNTY.keyed_report(4, "hop", T0)
    p = topics.partition_of(key, N)
    out = steps.intake_and_file_step(raw, COUNTY.ref, {}, T0, "reports", p, 1, N)
    [(case_id, value, made)] = out.take_local_commands(p, N)
    at = decode_message(value).at
    photo = ev.Message(id="rpa-2", type=ev.RECORD_PHOTO_ARCHIVED, case_id=case_id, at=at,
                       actor="system:archive",
                       data={"sha256": "d" * 64, "source_key": "k", "status": "archived",
                             "event_seq": 1})
    odd = ev.Message(id="odd-1", type=ev.RATE_CASE, case_id=case_id, at=at,
                     actor="resident:13800000000", data={"score": 5})

    def boom(b, c, d, planner):  # type: ignore[no-untyped-def]
        raise TypeError("a payload the handler cannot take")

    monkeypatch.setitem(case_core._HANDLERS, ev.RATE_CASE, boom)
    state: dict[str, Any] | None = None
    for c in (photo, odd):  # the rating waits behind the photo's answer
        held, state = steps.case_step(c.encode(), state, PLANNER, T0, "case-commands", case_id,
                                      p, 5)
        assert held.sends == []
    res, state = steps.case_step(value, state, PLANNER, T0, "reports", case_id, p, 9, made,
                                 in_order=False)
    kinds = [(topic, decode_message(v).type if topic == "case-events" else "")
             for topic, _, v in res.sends]
    events = [k for t, k in kinds if t == "case-events"]
    assert events[0] == ev.CASE_FILED and events[-1] == ev.PHOTO_ARCHIVED
    [dead_raw] = [v for topic, _, v in res.sends if topic == "dead-letters"]
    dead = ev.loads(dead_raw)
    assert "malformed RateCase" in dead["reason"] and dead["offset"] == 9
    assert state is not None and not state["waiting"]
    assert "odd-1" not in state["recent_commands"]
