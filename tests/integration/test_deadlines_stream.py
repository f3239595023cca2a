"""Deadlines on the real stack with an injected clock: warnings, breach and the escalation
ladder fire once each, across a worker restart, and a signed task's clock stops."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from streams import consume_until, produce, start_worker, wait_consumed

from bootstrap import working_calendar
from gridflow import events as ev
from gridflow.clock import scaled_spec
from gridflow.core.sla import load_bundled_policy, warn_instants
from gridflow.events import Message, iso, parse_ts
from processors.app import app_id_for
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 16, 1, 0, tzinfo=UTC)  # Monday 09:00 in Beijing
VILLAGE_DEPT = "421099101201.cwh"  # a village committee: breaches start at the village level


def file_case(case_id: str, n: int) -> Message:
    return Message(
        id=f"file-{case_id}", type=ev.FILE_REPORT, case_id=case_id, at=iso(T0),
        actor="worker:GW0001@421099101201001",
        data={"report": {"report_id": f"rep-{case_id}", "reporter": "worker:GW0001@421099101201001",
                         "photos": []},
              "category_code": "E0301", "severity": 1, "grid_code": "421099101201001",
              "village_code": "421099101201", "township_code": "421099101",
              "departments": [VILLAGE_DEPT]},
    )


def wait_ready(worker, timeout_s: float = 90.0) -> None:
    """Until the restarted worker has recovered its tables and runs its agents."""
    wait_until("the restarted worker to get ready",
               lambda: "[^Worker]: Ready" in worker.log_path.read_text(errors="replace"),
               timeout_s, check=worker.check)


def tick(bootstrap: str, prefix: str, now: datetime) -> None:
    for p in range(4):
        produce(bootstrap, f"{prefix}.deadline-ticks", str(p), json.dumps({"now": iso(now)}).encode(), p)


def of_task(events: list[dict], task_id: str, type_: str) -> list[dict]:
    return [e for e in events if e["type"] == type_ and e["data"].get("task_id") == task_id]


def test_deadlines_fire_once_each_across_a_restart(stack, stack_settings, tmp_path: Path):
    bootstrap, prefix = stack.bootstrap, stack_settings.topic_prefix
    # A frozen clock: the worker's own timer always says T0; the test moves time with ticks.
    settings = stack_settings.with_(clock=scaled_spec(T0, 0))
    worker = start_worker(settings, tmp_path / "w1")
    try:
        for case_id in ("AJ-LATE", "AJ-SIGNED"):
            produce(bootstrap, f"{prefix}.case-commands", case_id, file_case(case_id, 1).encode())
        events = consume_until(bootstrap, f"{prefix}.case-events",
                               lambda s: len([e for e in s if e["type"] == ev.TASK_DISPATCHED]) == 2,
                               service=worker)
        late = next(e for e in events if e["type"] == ev.TASK_DISPATCHED and e["case_id"] == "AJ-LATE")
        signed = next(e for e in events if e["type"] == ev.TASK_DISPATCHED and e["case_id"] == "AJ-SIGNED")
        due = parse_ts(late["data"]["sign_due"])
        cal, policy = working_calendar(), load_bundled_policy()
        w50, w80 = warn_instants(T0, due, (0.5, 0.8), cal)

        # the second task is signed right away: its clock must stop
        sign = Message(id="sign-1", type=ev.SIGN_TASK, case_id="AJ-SIGNED", at=iso(T0 + timedelta(minutes=5)),
                       actor=f"dept:{VILLAGE_DEPT}", data={"task_id": signed["data"]["task_id"]})
        produce(bootstrap, f"{prefix}.case-commands", "AJ-SIGNED", sign.encode())
        consume_until(bootstrap, f"{prefix}.case-events",
                      lambda s: any(e["type"] == ev.TASK_SIGNED for e in s), service=worker)

        tick(bootstrap, prefix, w50 + timedelta(minutes=1))
        consume_until(bootstrap, f"{prefix}.case-events",
                      lambda s: len(of_task(s, late["data"]["task_id"], ev.DEADLINE_WARNED)) == 1,
                      service=worker)
        # a graceful restart: what the worker has read so far is committed before it stops
        wait_consumed(bootstrap, app_id_for(prefix, pipeline=True),
                      [f"{prefix}.{t}" for t in ("case-commands", "case-events", "deadline-ticks")],
                      check=worker.check)
    finally:
        worker.stop()  # mid-way: the 80% warning, the breach and the escalations are still ahead

    worker = start_worker(settings, tmp_path / "w2")
    try:
        wait_ready(worker)
        tick(bootstrap, prefix, w50 + timedelta(minutes=2))  # already fired: must not fire again
        tick(bootstrap, prefix, due + timedelta(minutes=1))
        # climb the ladder: village -> township -> county department -> county leadership
        later = due + timedelta(days=30)
        for i in range(6):
            tick(bootstrap, prefix, later + timedelta(minutes=2 * i))
        task_id = late["data"]["task_id"]
        events = consume_until(
            bootstrap, f"{prefix}.case-events",
            lambda s: max((e["data"].get("level", 0) for e in of_task(s, task_id, ev.TASK_ESCALATED)),
                          default=0) >= policy.level_index("county_leadership"),
            service=worker)
    finally:
        worker.stop()

    story = [(e["case_id"][-6:], e["type"], e["at"], e["data"].get("stage"),
              e["data"].get("fraction") or e["data"].get("level")) for e in events]
    warned = of_task(events, task_id, ev.DEADLINE_WARNED)
    assert sorted(w["data"]["fraction"] for w in warned) == [0.5, 0.8], story
    assert [w["at"] for w in sorted(warned, key=lambda w: w["data"]["fraction"])] == [iso(w50), iso(w80)]
    breaches = of_task(events, task_id, ev.DEADLINE_BREACHED)
    assert len(breaches) == 1 and breaches[0]["at"] == iso(due)
    levels = [e["data"]["level"] for e in of_task(events, task_id, ev.TASK_ESCALATED)]
    start = policy.start_level("village")
    assert levels == list(range(start + 1, policy.level_index("county_leadership") + 1))
    assert of_task(events, task_id, ev.TASK_ESCALATED)[-1]["data"]["level_name"] == "县领导"
    # nothing fired twice, and the signed task's sign-for clock stopped
    ids = Counter(e["id"] for e in events)
    assert [i for i, n in ids.items() if n > 1] == []
    other = signed["data"]["task_id"]
    stages = [(e["type"], e["data"]["stage"]) for e in events
              if e["data"].get("task_id") == other and e["type"] in (ev.DEADLINE_WARNED, ev.DEADLINE_BREACHED)]
    assert ("DeadlineWarned", "sign") not in stages and ("DeadlineBreached", "sign") not in stages
    # its resolve clock runs on instead: 30 days later it is overdue on that stage
    assert ("DeadlineBreached", "resolve") in stages
