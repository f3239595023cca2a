"""Deadline policy: rule lookup, stage deadlines and warnings on the 2026 calendar, escalation."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from gridflow.core.calendar import load_bundled_calendar
from gridflow.core.sla import (
    REFDATA_DIR,
    ExtensionLimit,
    PolicyError,
    SlaPlanner,
    SlaPolicy,
    StageLimit,
    load_bundled_policy,
)

CST = ZoneInfo("Asia/Shanghai")
CAL = load_bundled_calendar()
POLICY = load_bundled_policy()

LADDER = {
    "levels": [
        {"code": "grid", "name": "网格", "escalate_after_hours": 2},
        {"code": "village", "name": "村(社区)", "escalate_after_hours": 4},
        {"code": "township", "name": "乡镇(街道)", "escalate_after_hours": 7},
        {"code": "county_department", "name": "县直部门", "escalate_after_hours": 14},
        {"code": "county_leadership", "name": "县领导", "escalate_after_hours": None},
    ],
    "start_level_by_department_level": {"village": "village", "county": "county_department"},
}
BASE = {
    "default": {
        "sign": {"hours": 2},
        "resolve": {"days": 5},
        "verify": {"days": 2},
        "severity": {"3": {"sign": {"hours": 0.5}, "resolve": {"days": 1}}},
    },
    "rules": [
        {"match": "E01", "resolve": {"days": 3}},
        {"match": "E0102", "resolve": {"days": 1}, "severity": {"2": {"resolve": {"hours": 4}}}},
        {"match": "E05", "sign": {"hours": 0.5}, "warn_fractions": [0.25, 0.75]},
    ],
    "escalation": LADDER,
}


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=CST)


def policy(**changes: object) -> SlaPolicy:
    raw = copy.deepcopy(BASE)
    raw.update(changes)
    return SlaPolicy.load(raw)


# --- most specific rule wins -----------------------------------------------------


@pytest.mark.parametrize(
    ("code", "severity", "stage", "limit", "rule"),
    [
        ("E0102", 1, "resolve", StageLimit(1, "days"), "E0102"),  # exact code
        ("E0102", 2, "resolve", StageLimit(4, "hours"), "E0102"),  # its severity override
        ("E0101", 1, "resolve", StageLimit(3, "days"), "E01"),  # class prefix
        ("E0101", 1, "sign", StageLimit(2, "hours"), "default"),  # E01 does not set sign
        ("P0101", 1, "resolve", StageLimit(5, "days"), "default"),
        ("P0101", 3, "resolve", StageLimit(1, "days"), "default"),  # default severity table
        ("E0101", 3, "resolve", StageLimit(3, "days"), "E01"),  # category beats default severity
        ("E0101", 3, "sign", StageLimit(0.5, "hours"), "default"),
    ],
)
def test_rule_lookup(code: str, severity: int, stage: str, limit: StageLimit, rule: str) -> None:
    assert policy().limit_for(code, severity, stage) == (limit, rule)


def test_unknown_stage_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown stage"):
        policy().limit_for("E0101", 1, "archive")


# --- stage deadlines on the real calendar --------------------------------------------


def test_resolve_deadline_crosses_national_day_and_makeup_saturday() -> None:
    start = local(2026, 9, 30, 9, 0)  # Wednesday before 国庆, dispatched 09:00
    d = policy().stage_deadline("E0101", 1, "resolve", start, CAL)  # 3 working days
    assert d.stage == "resolve" and d.rule == "E01"
    assert d.start == start.astimezone(UTC)
    # 9-30, 10-08, 10-09 are working days 0..2 after the start; 10-10 is the 调休 Saturday.
    assert d.due_at.astimezone(CST) == local(2026, 10, 10, 9, 0)
    assert d.due_at.tzinfo is UTC
    # Warnings at 50% and 80% of 21 working hours, not of the 10 calendar days.
    assert d.warn_fractions == (0.5, 0.8)
    assert [w.astimezone(CST) for w in d.warn_at] == [
        local(2026, 10, 8, 14, 30),  # 6.5 h on 9-30 + 4 h on 10-08
        local(2026, 10, 9, 11, 48),  # 16.8 h: 6.5 + 7 + 3.3
    ]


def test_sign_deadline_in_working_hours_and_rule_warn_fractions() -> None:
    start = local(2026, 9, 30, 17, 15)  # 15 min before close, E05 signs within 0.5 h
    d = policy().stage_deadline("E0501", 1, "sign", start, CAL)
    assert d.due_at.astimezone(CST) == local(2026, 10, 8, 8, 45)
    assert d.warn_fractions == (0.25, 0.75)
    assert [w.astimezone(CST) for w in d.warn_at] == [
        local(2026, 9, 30, 17, 22, 30),
        local(2026, 10, 8, 8, 37, 30),
    ]


def test_deadline_until_a_given_due_instant() -> None:
    start, due = local(2026, 11, 23, 9, 0), local(2026, 11, 24, 9, 0)  # one working day
    d = policy().deadline_until("E0101", "resolve", start, due, CAL)
    assert d.rule == "given" and d.limit is None
    assert [w.astimezone(CST) for w in d.warn_at] == [
        local(2026, 11, 23, 14, 30),
        local(2026, 11, 23, 16, 36),
    ]


def test_resolve_clock_starts_at_dispatch_by_default() -> None:
    dispatched, signed = local(2026, 11, 23, 9, 0), local(2026, 11, 23, 11, 0)
    assert policy().clock_start("resolve", dispatched_at=dispatched, signed_at=signed) == dispatched
    from_sign = policy(resolve_clock_starts="sign")
    assert from_sign.clock_start("resolve", dispatched_at=dispatched, signed_at=signed) == signed
    assert from_sign.clock_start("resolve", dispatched_at=dispatched) is None
    assert policy().clock_start("verify", dispatched_at=dispatched, resolved_at=signed) == signed


def test_planner_serves_the_case_aggregate() -> None:
    planner = SlaPlanner(policy(), CAL)
    due = planner.due("E0102", 2, "resolve", local(2026, 11, 23, 15, 0))
    assert due.astimezone(CST) == local(2026, 11, 24, 10, 0)  # 2.5 h + 1.5 h
    assert planner.add_working_days(local(2026, 9, 30, 9, 0), 1).astimezone(CST) == local(
        2026, 10, 8, 9, 0
    )


# --- escalation ladder -------------------------------------------------------------


def test_ladder_from_configuration() -> None:
    ladder = POLICY.escalation_ladder
    assert [lv.code for lv in ladder] == [
        "grid",
        "village",
        "township",
        "county_department",
        "county_leadership",
    ]
    assert [lv.name for lv in ladder] == ["网格", "村(社区)", "乡镇(街道)", "县直部门", "县领导"]
    assert POLICY.start_level("county") == POLICY.level_index("county_department") == 3
    assert POLICY.start_level("unknown") == 0


def test_next_escalation_in_working_hours_and_none_at_top() -> None:
    p = policy()
    breached = local(2026, 9, 30, 16, 0)  # grid waits 2 working hours, across 国庆
    assert p.next_escalation_at(breached, 0, CAL).astimezone(CST) == local(2026, 10, 8, 9, 0)
    # county_department waits 14 h: 1.5 h on 9-30, 7 h on 10-08, 5.5 h on 10-09.
    assert p.next_escalation_at(breached, 3, CAL).astimezone(CST) == local(2026, 10, 9, 16, 0)
    assert p.next_escalation_at(breached, 4, CAL) is None
    with pytest.raises(ValueError):
        p.next_escalation_at(breached, 5, CAL)


# --- send-back, extensions -------------------------------------------------------------


def test_send_back_restarts_clock_by_default_and_is_configurable() -> None:
    assert policy().send_back_restarts_clock is True
    assert policy(send_back={"restart_clock": False}).send_back_restarts_clock is False


def test_extension_limit() -> None:
    limit = policy(
        extension={"max_count": 2, "max_days_each": 5, "max_days_total": 8}
    ).extension_limit
    assert limit == ExtensionLimit(2, 5, 8)
    assert limit.refusal(0, 0, 5) is None
    assert limit.refusal(0, 0, 6) == "at most 5 working days per extension"
    assert limit.refusal(1, 5, 4) == "at most 8 working days of extension in all"
    assert limit.refusal(2, 6, 1) == "at most 2 extension(s) per task"
    assert POLICY.extension_limit.max_count == 1


# --- the bundled configuration ----------------------------------------------------------


def test_bundled_policy_covers_every_sample_category() -> None:
    categories = json.loads((REFDATA_DIR / "sample_county" / "categories.json").read_text("utf-8"))
    for cls in categories["classes"]:
        for sub in cls["subcategories"]:
            for severity in sub["severities"]:
                for stage in ("sign", "resolve", "verify"):
                    d = POLICY.stage_deadline(
                        sub["code"], severity, stage, local(2026, 11, 23, 9), CAL
                    )
                    assert d.due_at > d.start and len(d.warn_at) == len(d.warn_fractions)
    assert POLICY.severity_names[3] == "重大"


# --- load errors name the file and the reason -----------------------------------------


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"default": {"sign": {"hours": 2}, "resolve": {"days": 5}}}, "must set every stage"),
        ({"rules": [{"match": "E01", "resolve": {"weeks": 1}}]}, "a limit is"),
        ({"rules": [{"match": "E01", "resolve": {"days": 0}}]}, "positive number"),
        ({"rules": [{"match": "E01"}, {"match": "E01"}]}, "defined twice"),
        ({"rules": [{"match": "E01", "resolv": {"days": 1}}]}, "unknown keys"),
        ({"warn_fractions": [0.8, 0.5]}, "increasing"),
        ({"warn_fractions": [0.5, 1.0]}, "strictly between 0 and 1"),
        ({"resolve_clock_starts": "signing"}, "resolve_clock_starts"),
        (
            {"escalation": {"levels": [{"code": "a", "name": "A"}, {"code": "b", "name": "B"}]}},
            "need escalate_after_hours",
        ),
    ],
)
def test_load_errors_name_file_and_reason(tmp_path, change: dict, reason: str) -> None:
    raw = copy.deepcopy(BASE)
    raw.update(change)
    path = tmp_path / "sla_bad.json"
    path.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        SlaPolicy.load(path)
    assert "sla_bad.json" in str(info.value) or "escalation" in str(info.value)
    assert reason in str(info.value)


def test_escalation_file_errors_name_that_file(tmp_path) -> None:
    (tmp_path / "ladder.json").write_text('{"levels": []}', encoding="utf-8")
    raw = {**copy.deepcopy(BASE), "escalation": "ladder.json"}
    (tmp_path / "sla.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(PolicyError, match=r"ladder\.json:1: \$\.levels: the escalation ladder needs"):
        SlaPolicy.load(tmp_path / "sla.json")
    with pytest.raises(PolicyError, match=r"missing\.json: cannot read"):
        SlaPolicy.load(BASE, escalation=tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    with pytest.raises(PolicyError, match=r"broken\.json:1: not valid JSON"):
        SlaPolicy.load(tmp_path / "broken.json")
