"""The filing agent's recent cases kept per township and category (processors.steps)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gridflow import events as ev
from gridflow.events import Message, decode_message
from processors import steps

AT = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)


def located(n: int, category: str, lat: float, lon: float) -> bytes:
    report = {"report_id": f"R{n:08d}", "lat": lat, "lon": lon, "category_code": category}
    return Message(id=f"loc{n}", type=ev.REPORT_LOCATED, case_id=f"AJ{n:06d}",
                   at="2026-11-02T01:00:00.000000Z", actor="worker:W1",
                   data={"report": report, "category_code": category}).encode()


def filed(out: steps.Outputs) -> Any:
    [(topic, _key, value)] = out.sends
    assert topic == "case-commands"
    return decode_message(value)


def test_only_the_same_category_is_a_duplicate_and_each_category_has_its_entry() -> None:
    table: dict[str, Any] = {}
    first = filed(steps.filing_step_keyed(located(1, "E0101", 30.0, 110.0), table, "T1", AT, "s"))
    other = filed(steps.filing_step_keyed(located(2, "E0201", 30.0, 110.0), table, "T1", AT, "s"))
    dup = filed(steps.filing_step_keyed(located(3, "E0101", 30.0001, 110.0), table, "T1", AT, "s"))

    assert (first.case_id, other.case_id) == ("AJ000001", "AJ000002")
    assert dup.case_id == "AJ000001" and dup.data["distance_m"] < 50
    assert sorted(table) == [steps.filing_key("T1", "E0101"), steps.filing_key("T1", "E0201")]
    assert [c["case_id"] for c in table[steps.filing_key("T1", "E0101")]] == ["AJ000001"]


def test_keyed_filing_decides_as_the_list_form_does() -> None:
    raws = [located(i, "E0101", 30.0 + i * 0.0002, 110.0) for i in range(5)]
    table: dict[str, Any] = {}
    candidates: list[dict[str, Any]] = []
    for raw in raws:
        keyed = filed(steps.filing_step_keyed(raw, table, "T1", AT, "s"))
        out, candidates = steps.filing_step(raw, candidates, AT, "s")
        assert keyed == filed(out)


def test_an_undecodable_record_is_a_dead_letter_and_writes_nothing() -> None:
    table: dict[str, Any] = {}
    out = steps.filing_step_keyed(b"{not json", table, "T1", AT, "reports-located", 0, 7)
    assert [s[0] for s in out.sends] == ["dead-letters"] and table == {}


def test_the_duplicate_radius_is_configuration() -> None:
    from datetime import timedelta

    near = [located(1, "E0101", 30.0, 110.0), located(2, "E0101", 30.00055, 110.0)]  # ~61 m
    strict: dict[str, Any] = {}
    wide: dict[str, Any] = {}
    a = [filed(steps.filing_step_keyed(r, strict, "T1", AT, "s")) for r in near]
    b = [filed(steps.filing_step_keyed(r, wide, "T1", AT, "s", None, None, 80.0,
                                       timedelta(hours=24))) for r in near]
    assert a[1].case_id == "AJ000002"  # 50 m by default: a separate case
    assert b[1].case_id == "AJ000001" and b[1].data["own_case_id"] == "AJ000002"
