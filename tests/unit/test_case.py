"""The case aggregate: every transition, every refusal, idempotency and the hash chain."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from gridflow import events as ev
from gridflow.core.case import CaseState, decide, new_case
from gridflow.events import Message, iso

T0 = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)  # a Monday, 09:00 in Beijing
PHOTO = {"bucket": "in", "key": "k1", "size": 10, "sha256": "a" * 64, "content_type": "image/jpeg"}


class HoursPlanner:
    """Plain-clock planner for the aggregate's tests (the calendar has its own)."""

    HOURS = {"sign": 2, "resolve": 48, "verify": 24}

    def due(self, category_code, severity, stage, start):
        return start + timedelta(hours=self.HOURS[stage])

    def add_working_days(self, start, days):
        return start + timedelta(days=days)


PLANNER = HoursPlanner()
_n = 0


def cmd(type_, data=None, actor="system", case_id="AJ1", minutes=0):
    global _n
    _n += 1
    return Message(id=f"c{_n}", type=type_, case_id=case_id, at=iso(T0 + timedelta(minutes=minutes)),
                   actor=actor, data=data or {})


def run(state, *commands):
    out = []
    for c in commands:
        d = decide(state, c, PLANNER)
        state = d.state
        out.extend(d.events)
    return state, out


def filed(departments=("D-CG",), report_id="r1"):
    return cmd(ev.FILE_REPORT, {
        "report": {"report_id": report_id, "reporter": "worker:W1@G1", "photos": [PHOTO]},
        "category_code": "E0101", "severity": 1, "grid_code": "G1", "village_code": "V1",
        "township_code": "T1", "departments": list(departments),
    })


def types(events):
    return [e.type for e in events]


def test_filing_opens_case_and_dispatches_one_task_per_department():
    state, events = run(new_case("AJ1"), filed(("D-CG", "D-ST")))
    assert types(events) == [ev.CASE_FILED, ev.TASK_DISPATCHED, ev.TASK_DISPATCHED]
    assert state.status == "open"
    assert {t.department for t in state.tasks.values()} == {"D-CG", "D-ST"}
    task = events[1].data
    assert task["sign_due"] == iso(T0 + timedelta(hours=2))
    assert task["resolve_due"] == iso(T0 + timedelta(hours=48))
    assert all(e.data["whistled"] for e in events[1:])  # several at once: 吹哨报到


def test_same_report_twice_and_same_command_twice_change_nothing():
    state, _ = run(new_case("AJ1"), filed())
    again = filed()
    s2, events = run(state, again)
    assert events == [] and s2.seq == state.seq
    s3, events = run(s2, again)  # same command id delivered twice
    assert events == [] and s3 == s2


def test_near_duplicate_report_is_merged_not_dispatched_again():
    state, _ = run(new_case("AJ1"), filed())
    state, events = run(state, filed(report_id="r2"))
    assert types(events) == [ev.REPORT_MERGED]
    assert len(state.tasks) == 1 and state.report_ids == ("r1", "r2")


def full_cycle():
    state, _ = run(new_case("AJ1"), filed())
    tid = next(iter(state.tasks))
    return state, tid


def test_happy_path_sign_progress_resolve_verify_closes_case():
    state, tid = full_cycle()
    state, events = run(
        state,
        cmd(ev.SIGN_TASK, {"task_id": tid}, "dept:D-CG", minutes=30),
        cmd(ev.NOTE_PROGRESS, {"task_id": tid, "note": "已到现场"}, "dept:D-CG", minutes=60),
        cmd(ev.RESOLVE_TASK, {"task_id": tid, "note": "已清理", "photos": [PHOTO]}, "dept:D-CG", minutes=90),
        cmd(ev.VERIFY_TASK, {"task_id": tid}, "worker:W1@G1", minutes=120),
        cmd(ev.RATE_CASE, {"score": 5, "comment": "很满意"}, "worker:W1@G1", minutes=130),
    )
    assert types(events) == [ev.TASK_SIGNED, ev.TASK_PROGRESS_NOTED, ev.TASK_RESOLVED,
                             ev.TASK_VERIFIED, ev.CASE_CLOSED, ev.CASE_RATED]
    assert events[0].data["on_time"] is True
    assert events[2].data["photos"][0]["role"] == "after"
    assert state.status == "closed" and state.rating == 5


@pytest.mark.parametrize(
    "command_type, data, actor, code",
    [
        (ev.RESOLVE_TASK, {"note": "x", "photos": [PHOTO]}, "dept:D-CG", "bad_state"),  # unsigned
        (ev.SIGN_TASK, {}, "dept:D-OTHER", "not_allowed"),  # another department's task
        (ev.VERIFY_TASK, {}, "worker:W1@G1", "bad_state"),  # nothing to verify yet
        (ev.CANCEL_TASK, {"reason": "x"}, "dept:D-CG", "not_allowed"),  # only supervisors cancel
        (ev.SEND_BACK_TASK, {"reason": "非我部门职责"}, "dept:D-CG", "reroute_required"),
        (ev.SIGN_TASK, {"task_id": "nope"}, "dept:D-CG", "unknown_task"),
    ],
)
def test_commands_the_state_does_not_allow_are_refused_and_change_nothing(command_type, data, actor, code):
    state, tid = full_cycle()
    data = {"task_id": tid, **data}
    after, events = run(state, cmd(command_type, data, actor))
    assert types(events) == [ev.COMMAND_REFUSED]
    assert events[0].data["code"] == code and events[0].data["reason_zh"]
    assert after.tasks == state.tasks and after.status == state.status


def test_signing_twice_is_refused_second_time():
    state, tid = full_cycle()
    state, events = run(state, cmd(ev.SIGN_TASK, {"task_id": tid}, "dept:D-CG"),
                        cmd(ev.SIGN_TASK, {"task_id": tid}, "dept:D-CG"))
    assert types(events) == [ev.TASK_SIGNED, ev.COMMAND_REFUSED]


def test_resolve_needs_one_to_nine_after_photos():
    state, tid = full_cycle()
    state, _ = run(state, cmd(ev.SIGN_TASK, {"task_id": tid}, "dept:D-CG"))
    _, events = run(state, cmd(ev.RESOLVE_TASK, {"task_id": tid, "note": "ok", "photos": []}, "dept:D-CG"))
    assert events[0].data["code"] == "photo_count"
    _, events = run(state, cmd(ev.RESOLVE_TASK, {"task_id": tid, "note": "ok", "photos": [PHOTO] * 10}, "dept:D-CG"))
    assert events[0].data["code"] == "photo_count"


def test_send_back_reroutes_to_the_right_department_with_a_fresh_clock():
    state, tid = full_cycle()
    state, events = run(state, cmd(ev.SEND_BACK_TASK, {"task_id": tid, "reason": "属水利局职责",
                                                       "reroute_to": "D-SL"}, "dept:D-CG", minutes=45))
    assert types(events) == [ev.TASK_SENT_BACK, ev.TASK_DISPATCHED]
    new = events[1].data
    assert new["department"] == "D-SL" and new["replaces_task"] == tid
    assert new["sign_due"] == iso(T0 + timedelta(minutes=45, hours=2))
    assert state.tasks[tid].state == "sent_back"


def test_failed_verification_reopens_and_counts_rework():
    state, tid = full_cycle()
    state, _ = run(state, cmd(ev.SIGN_TASK, {"task_id": tid}, "dept:D-CG"),
                   cmd(ev.RESOLVE_TASK, {"task_id": tid, "note": "ok", "photos": [PHOTO]}, "dept:D-CG"))
    state, events = run(state, cmd(ev.REJECT_TASK, {"task_id": tid, "reason": "垃圾仍在"}, "worker:W1@G1"))
    assert types(events) == [ev.TASK_REOPENED]
    assert state.tasks[tid].state == "in_progress" and state.tasks[tid].reopened == 1


def test_a_failed_verification_keeps_the_photos_taken_on_site():
    state, tid = full_cycle()
    state, _ = run(state, cmd(ev.SIGN_TASK, {"task_id": tid}, "dept:D-CG"),
                   cmd(ev.RESOLVE_TASK, {"task_id": tid, "note": "ok", "photos": [PHOTO]}, "dept:D-CG"))
    state, events = run(state, cmd(ev.REJECT_TASK, {"task_id": tid, "reason": "垃圾仍在",
                                                    "photos": [PHOTO]}, "worker:W1@G1"))
    [reopened] = events
    assert [p["role"] for p in reopened.data["photos"]] == ["verification"]


def test_unsatisfied_rating_reopens_the_closed_case():
    state, tid = full_cycle()
    state, _ = run(state, cmd(ev.SIGN_TASK, {"task_id": tid}, "dept:D-CG"),
                   cmd(ev.RESOLVE_TASK, {"task_id": tid, "note": "ok", "photos": [PHOTO]}, "dept:D-CG"),
                   cmd(ev.VERIFY_TASK, {"task_id": tid}, "worker:W1@G1"))
    state, events = run(state, cmd(ev.RATE_CASE, {"score": 1}, "worker:W1@G1"))
    assert types(events) == [ev.CASE_RATED, ev.TASK_REOPENED]
    assert state.status == "open"


def test_extension_granted_moves_the_deadline_refused_keeps_it():
    state, tid = full_cycle()
    state, _ = run(state, cmd(ev.SIGN_TASK, {"task_id": tid}, "dept:D-CG"))
    due = state.tasks[tid].resolve_due
    state, events = run(
        state,
        cmd(ev.REQUEST_EXTENSION, {"task_id": tid, "days": 3, "reason": "需采购材料"}, "dept:D-CG"),
        cmd(ev.DECIDE_EXTENSION, {"task_id": tid, "approve": True}, "supervisor:S1"),
    )
    assert types(events) == [ev.EXTENSION_REQUESTED, ev.EXTENSION_GRANTED]
    assert state.tasks[tid].extensions == 1
    assert state.tasks[tid].resolve_due == iso(T0 + timedelta(hours=48, days=3))
    assert state.tasks[tid].resolve_due != due
    state, events = run(state, cmd(ev.DECIDE_EXTENSION, {"task_id": tid, "approve": False}, "supervisor:S1"))
    assert events[0].data["code"] == "no_extension"


def test_whistle_dispatches_several_departments_at_once():
    state, _ = full_cycle()
    state, events = run(state, cmd(ev.WHISTLE_CASE, {"departments": ["D-SL", "D-HB", "D-CG"],
                                                     "reason": "河道大面积污染"}, "supervisor:S1"))
    assert types(events) == [ev.CASE_WHISTLED, ev.TASK_DISPATCHED, ev.TASK_DISPATCHED]
    assert events[0].data["departments"] == ["D-SL", "D-HB"]  # D-CG already has an open task
    _, events = run(state, cmd(ev.WHISTLE_CASE, {"departments": ["D-SL"]}, "dept:D-CG"))
    assert events[0].data["code"] == "not_allowed"


def test_deadline_commands_fire_once_and_are_dropped_when_stale():
    state, tid = full_cycle()
    due = state.tasks[tid].sign_due
    warn = cmd(ev.WARN_DEADLINE, {"task_id": tid, "stage": "sign", "due_at": due, "fraction": 0.5})
    breach = cmd(ev.BREACH_DEADLINE, {"task_id": tid, "stage": "sign", "due_at": due})
    esc = cmd(ev.ESCALATE_TASK, {"task_id": tid, "stage": "sign", "due_at": due, "level": 1,
                                 "level_code": "village"})
    state, events = run(state, warn, breach, esc, esc)
    assert types(events) == [ev.DEADLINE_WARNED, ev.DEADLINE_BREACHED, ev.TASK_ESCALATED]
    assert state.tasks[tid].escalation_level == 1
    state, _ = run(state, cmd(ev.SIGN_TASK, {"task_id": tid}, "dept:D-CG"))
    # the sign clock stopped: a late sign-for breach is no longer news
    _, events = run(state, cmd(ev.BREACH_DEADLINE, {"task_id": tid, "stage": "sign", "due_at": due}))
    assert events == []


def test_events_form_a_hash_chain_and_state_round_trips():
    state, first = run(new_case("AJ1"), filed())
    tid = next(iter(state.tasks))
    state, events = run(state, cmd(ev.SIGN_TASK, {"task_id": tid}, "dept:D-CG"))
    chain = first + events
    assert [e.seq for e in chain] == list(range(1, len(chain) + 1))
    for prev, nxt in zip(chain, chain[1:], strict=False):
        assert nxt.prev_hash == prev.hash()
    assert CaseState.from_dict(state.to_dict()) == state


def test_event_ids_are_deterministic_for_a_replayed_command():
    c = filed()
    a = decide(new_case("AJ1"), c, PLANNER).events
    b = decide(new_case("AJ1"), c, PLANNER).events
    assert [e.id for e in a] == [e.id for e in b]
    assert [e.hash() for e in a] == [e.hash() for e in b]


# --- policy through the planner: extension limits, send-back clock ------------------------


class PolicyHoursPlanner(HoursPlanner):
    """HoursPlanner that also states policy, as SlaPlanner does (a case.PolicyPlanner)."""

    def __init__(self, max_count=1, max_days_each=5, max_days_total=5, restart=True):
        from gridflow.core.sla import ExtensionLimit

        self.extension_limit = ExtensionLimit(max_count, max_days_each, max_days_total)
        self.send_back_restarts_clock = restart


def run_with(planner, state, *commands):
    out = []
    for c in commands:
        d = decide(state, c, planner)
        state = d.state
        out.extend(d.events)
    return state, out


def signed_task(planner):
    state, tid = full_cycle()
    state, _ = run_with(planner, state, cmd(ev.SIGN_TASK, {"task_id": tid}, "dept:D-CG"))
    return state, tid


def ask(tid, days):
    return cmd(ev.REQUEST_EXTENSION, {"task_id": tid, "days": days, "reason": "需采购材料"}, "dept:D-CG")


def approve(tid):
    return cmd(ev.DECIDE_EXTENSION, {"task_id": tid, "approve": True}, "supervisor:S1")


def test_a_second_extension_beyond_the_policy_count_is_refused_with_a_reason():
    planner = PolicyHoursPlanner(max_count=1)
    state, tid = signed_task(planner)
    state, events = run_with(planner, state, ask(tid, 3), approve(tid))
    assert types(events) == [ev.EXTENSION_REQUESTED, ev.EXTENSION_GRANTED]
    assert state.tasks[tid].extension_days == 3
    after, events = run_with(planner, state, ask(tid, 1))
    assert types(events) == [ev.COMMAND_REFUSED]
    refused = events[0].data
    assert refused["code"] == "extension_count"
    assert "最多延期1次" in refused["reason_zh"] and "at most 1 extension" in refused["reason_en"]
    assert after.tasks == state.tasks  # nothing pending, the deadline as granted


def test_an_extension_longer_than_the_policy_allows_each_time_is_refused():
    planner = PolicyHoursPlanner(max_count=3, max_days_each=5, max_days_total=10)
    state, tid = signed_task(planner)
    _, events = run_with(planner, state, ask(tid, 6))
    assert events[0].data["code"] == "extension_too_long"
    assert "5个工作日" in events[0].data["reason_zh"]


def test_extensions_beyond_the_policy_total_are_refused():
    planner = PolicyHoursPlanner(max_count=3, max_days_each=5, max_days_total=8)
    state, tid = signed_task(planner)
    state, events = run_with(planner, state, ask(tid, 5), approve(tid))
    assert types(events) == [ev.EXTENSION_REQUESTED, ev.EXTENSION_GRANTED]
    state, events = run_with(planner, state, ask(tid, 4))
    assert events[0].data["code"] == "extension_total"
    assert "累计延期不得超过8个工作日" in events[0].data["reason_zh"]
    state, events = run_with(planner, state, ask(tid, 3), approve(tid))  # exactly 8 in all
    assert types(events) == [ev.EXTENSION_REQUESTED, ev.EXTENSION_GRANTED]
    assert state.tasks[tid].extensions == 2 and state.tasks[tid].extension_days == 8


def test_an_approval_beyond_the_limit_is_refused_and_the_request_stays_pending():
    state, tid = signed_task(PLANNER)
    state, _ = run_with(PLANNER, state, ask(tid, 20))  # asked under a planner without limits
    after, events = run_with(PolicyHoursPlanner(max_days_each=10), state, approve(tid))
    assert events[0].data["code"] == "extension_too_long"
    assert after.tasks[tid].pending_extension is not None
    assert after.tasks[tid].resolve_due == state.tasks[tid].resolve_due


def test_a_planner_without_policy_limits_extensions_only_to_30_days_each():
    state, tid = signed_task(PLANNER)
    state, events = run_with(PLANNER, state, ask(tid, 20), approve(tid), ask(tid, 20), approve(tid))
    assert types(events).count(ev.EXTENSION_GRANTED) == 2


def test_send_back_restarts_the_clock_when_the_policy_says_so():
    planner = PolicyHoursPlanner(restart=True)
    state, tid = full_cycle()
    state, events = run_with(planner, state, cmd(ev.SEND_BACK_TASK, {
        "task_id": tid, "reason": "属水利局职责", "reroute_to": "D-SL"}, "dept:D-CG", minutes=45))
    new = events[1].data
    assert new["clock"] == "restarted"
    assert new["sign_due"] == iso(T0 + timedelta(minutes=45, hours=2))
    assert new["resolve_due"] == iso(T0 + timedelta(minutes=45, hours=48))


def test_send_back_keeps_the_original_deadlines_when_the_policy_says_so():
    planner = PolicyHoursPlanner(restart=False)
    state, tid = full_cycle()
    original = state.tasks[tid]
    state, events = run_with(planner, state, cmd(ev.SEND_BACK_TASK, {
        "task_id": tid, "reason": "属水利局职责", "reroute_to": "D-SL"}, "dept:D-CG", minutes=300))
    assert types(events) == [ev.TASK_SENT_BACK, ev.TASK_DISPATCHED]
    new = events[1].data
    assert new["clock"] == "inherited" and new["replaces_task"] == tid
    assert new["sign_due"] == original.sign_due  # already past: the new department is late
    assert new["resolve_due"] == original.resolve_due
    task = state.tasks[new["task_id"]]
    assert (task.sign_due, task.resolve_due) == (original.sign_due, original.resolve_due)
    state, events = run_with(planner, state, cmd(ev.SIGN_TASK, {"task_id": task.task_id},
                                                 "dept:D-SL", minutes=310))
    assert events[0].data["on_time"] is False


def test_the_bundled_policy_reaches_the_aggregate_through_sla_planner():
    from bootstrap import bundled_planner
    from gridflow.core.case import PolicyPlanner

    planner = bundled_planner()
    assert isinstance(planner, PolicyPlanner) and planner.send_back_restarts_clock is True
    state, tid = signed_task(planner)
    state, events = run_with(planner, state, ask(tid, 11))  # bundled: 10 days each
    assert events[0].data["code"] == "extension_too_long"
    state, events = run_with(planner, state, ask(tid, 2), approve(tid), ask(tid, 1))
    assert types(events) == [ev.EXTENSION_REQUESTED, ev.EXTENSION_GRANTED, ev.COMMAND_REFUSED]
    assert events[-1].data["code"] == "extension_count"  # bundled: one extension per task


def test_whistle_names_the_tasks_it_dispatches_and_escalation_names_the_grid():
    state, _ = full_cycle()
    state, events = run(state, cmd(ev.WHISTLE_CASE, {"departments": ["D-SL", "D-HB"],
                                                     "reason": "河道大面积污染"}, "supervisor:S1"))
    whistled, dispatched = events[0].data, [e.data for e in events[1:]]
    assert whistled["tasks"] == [
        {k: d[k] for k in ("task_id", "department", "sign_due", "resolve_due")} for d in dispatched
    ]
    assert [d["task_id"] for d in dispatched] == ["AJ1-T02", "AJ1-T03"]
    due = state.tasks["AJ1-T02"].sign_due
    _, events = run(state, cmd(ev.ESCALATE_TASK, {"task_id": "AJ1-T02", "stage": "sign",
                                                  "due_at": due, "level": 1}))
    assert events[0].data["grid_code"] == "G1"


def test_a_signed_task_cannot_be_sent_back():
    state, tid = signed_task(PLANNER)
    after, events = run(state, cmd(ev.SEND_BACK_TASK, {"task_id": tid, "reason": "属水利局职责",
                                                       "reroute_to": "D-SL"}, "dept:D-CG"))
    assert types(events) == [ev.COMMAND_REFUSED] and events[0].data["code"] == "bad_state"
    assert "已签收" in events[0].data["reason_zh"] and after.tasks == state.tasks


def test_a_near_duplicate_of_a_closed_case_is_filed_as_its_own_case():
    state, tid = full_cycle()
    state, _ = run(state, cmd(ev.SIGN_TASK, {"task_id": tid}, "dept:D-CG"),
                   cmd(ev.RESOLVE_TASK, {"task_id": tid, "note": "ok", "photos": [PHOTO]}, "dept:D-CG"),
                   cmd(ev.VERIFY_TASK, {"task_id": tid}, "worker:W1@G1"))
    assert state.status == "closed"
    late = filed(report_id="r9")
    late = Message(late.id, late.type, late.case_id, late.at, late.actor,
                   {**late.data, "distance_m": 12.0, "own_case_id": "AJ9"})
    decision = decide(state, late, PLANNER)
    assert decision.events == [] and decision.state.report_ids == state.report_ids
    [refile] = decision.commands
    assert refile.case_id == "AJ9" and refile.type == ev.FILE_REPORT
    assert "distance_m" not in refile.data and "own_case_id" not in refile.data
    new_state, events = run(new_case("AJ9"), refile)
    assert types(events)[:2] == [ev.CASE_FILED, ev.TASK_DISPATCHED] and new_state.status == "open"
    # the same redirect decided again (redelivery) hands on the same command id
    assert decide(state, late, PLANNER).commands[0].id == refile.id


def test_a_near_duplicate_of_an_open_case_is_still_merged():
    state, _ = run(new_case("AJ1"), filed())
    dup = filed(report_id="r2")
    dup = Message(dup.id, dup.type, dup.case_id, dup.at, dup.actor,
                  {**dup.data, "distance_m": 5.0, "own_case_id": "AJ2"})
    decision = decide(state, dup, PLANNER)
    assert types(decision.events) == [ev.REPORT_MERGED] and decision.commands == []


def test_state_to_dict_is_what_asdict_gives_and_shares_nothing_mutable():
    import dataclasses
    import json

    state, tid = full_cycle()
    state, _ = run(state, cmd(ev.SIGN_TASK, {"task_id": tid}, "dept:D-CG"),
                   cmd(ev.REQUEST_EXTENSION, {"task_id": tid, "days": 3, "reason": "需采购材料"},
                       "dept:D-CG"))
    assert state.tasks[tid].pending_extension  # a nested dict in the state
    d = state.to_dict()
    assert json.dumps(d, sort_keys=True) == json.dumps(dataclasses.asdict(state), sort_keys=True)
    d["tasks"][tid]["pending_extension"]["days"] = 99
    d["tasks"][tid]["state"] = "changed"
    assert state.tasks[tid].pending_extension["days"] == 3
    assert state.tasks[tid].state != "changed"
    assert CaseState.from_dict(state.to_dict()) == state


def test_a_message_is_encoded_once_and_a_replaced_one_anew():
    import dataclasses

    m = filed()
    first = m.encode()
    assert m.encode() is first
    assert m.hash() == __import__("hashlib").sha256(first).hexdigest()
    other = dataclasses.replace(m, actor="worker:W2@G1")
    assert other.encode() != first and b"W2@G1" in other.encode()
    assert m == Message(**{f.name: getattr(m, f.name) for f in dataclasses.fields(m)})


def test_a_department_assigns_its_task_to_a_staff_member_and_may_reassign_it():
    state, tid = full_cycle()
    state, events = run(state, cmd(ev.ASSIGN_TASK, {"task_id": tid, "assignee": "ds0028",
                                                    "assignee_name": "城建监察员", "by": "ds0005"},
                                   "dept:D-CG"))
    assert types(events) == [ev.TASK_ASSIGNED]
    assert events[0].data == {"task_id": tid, "department": "D-CG", "assignee": "ds0028",
                              "assignee_name": "城建监察员", "previous": "", "by": "ds0005",
                              "by_name": ""}
    assert state.tasks[tid].assignee == "ds0028" and state.tasks[tid].state == "dispatched"
    state, events = run(state, cmd(ev.SIGN_TASK, {"task_id": tid}, "dept:D-CG"),
                        cmd(ev.ASSIGN_TASK, {"task_id": tid, "assignee": "ds0005"}, "dept:D-CG"))
    assert types(events) == [ev.TASK_SIGNED, ev.TASK_ASSIGNED]
    assert events[1].data["previous"] == "ds0028" and state.tasks[tid].assignee == "ds0005"
    assert CaseState.from_dict(state.to_dict()) == state


@pytest.mark.parametrize("data, actor, code", [
    ({"assignee": "ds0028"}, "dept:D-OTHER", "not_allowed"),  # another department's task
    ({"assignee": "ds0028"}, "supervisor:sv1", "not_allowed"),  # the department's own business
    ({"assignee": " "}, "dept:D-CG", "assignee_required"),
])
def test_an_assignment_is_the_tasks_departments_and_names_someone(data, actor, code):
    state, tid = full_cycle()
    after, events = run(state, cmd(ev.ASSIGN_TASK, {"task_id": tid, **data}, actor))
    assert types(events) == [ev.COMMAND_REFUSED] and events[0].data["code"] == code
    assert after.tasks == state.tasks


def test_a_resolved_task_is_not_assigned_again_nor_to_the_same_person_twice():
    state, tid = full_cycle()
    state, _ = run(state, cmd(ev.ASSIGN_TASK, {"task_id": tid, "assignee": "a"}, "dept:D-CG"))
    _, events = run(state, cmd(ev.ASSIGN_TASK, {"task_id": tid, "assignee": "a"}, "dept:D-CG"))
    assert events[0].data["code"] == "already_assigned"
    state, _ = run(state, cmd(ev.SIGN_TASK, {"task_id": tid}, "dept:D-CG"),
                   cmd(ev.RESOLVE_TASK, {"task_id": tid, "note": "ok", "photos": [PHOTO]},
                       "dept:D-CG"))
    _, events = run(state, cmd(ev.ASSIGN_TASK, {"task_id": tid, "assignee": "b"}, "dept:D-CG"))
    assert events[0].data["code"] == "bad_state"


def test_a_stored_state_without_assignees_still_loads():
    state, tid = full_cycle()
    stored = state.to_dict()
    del stored["tasks"][tid]["assignee"]  # as written before tasks had assignees
    assert CaseState.from_dict(stored).tasks[tid].assignee == ""


def _archived(event_seq=None, waited=None, case_id="AJ1"):
    data = {"sha256": "a" * 64, "source_key": "k1", "status": "archived", "role": "before",
            "report_id": "r1"}
    if event_seq is not None:
        data["event_seq"] = event_seq
    if waited is not None:
        data["waited"] = waited
    return cmd(ev.RECORD_PHOTO_ARCHIVED, data, case_id=case_id)


def test_a_photo_archived_for_an_event_the_state_has_is_recorded():
    state, events = run(new_case("AJ1"), filed())
    state, more = run(state, _archived(event_seq=events[0].seq))
    assert types(more) == [ev.PHOTO_ARCHIVED]
    assert "event_seq" not in more[0].data and "waited" not in more[0].data
    _, old = run(state, _archived())  # a command written before event_seq existed
    assert types(old) == [ev.PHOTO_ARCHIVED]


def test_a_photo_archived_ahead_of_the_cases_state_waits_in_it_until_the_state_catches_up():
    # The worker was killed after CaseFiled reached the log and before the case's state did;
    # the archive answered the event. Deciding now would refuse it as "no such case" on the
    # chain where the CaseFiled decided again is about to go: it waits in the state instead,
    # and the decision that files the case again decides it, with the ids and bytes it had.
    filing = filed()
    state, events = run(new_case("AJ1"), filing)
    photo = _archived(event_seq=events[0].seq)
    first, recorded = run(state, photo)  # how the first worker decided them

    lost = new_case("AJ1")  # the state the partition's next owner has
    d = decide(lost, photo, PLANNER)
    assert d.events == [] and d.commands == []
    assert photo.id not in d.state.recent_commands and len(d.state.waiting) == 1
    assert decide(d.state, photo, PLANNER).state.waiting == d.state.waiting  # a redelivery
    stored = CaseState.from_dict(json.loads(json.dumps(d.state.to_dict())))  # the changelog's
    again = decide(stored, filing, PLANNER, in_order=False)  # the report, read again
    assert [e.encode() for e in again.events] == [e.encode() for e in (*events, *recorded)]
    assert again.state == first and again.state.waiting == ()
    assert decide(again.state, photo, PLANNER).events == []  # decided: remembered
    # behind an existing case's later event (a ReportMerged, say) it waits the same way
    ahead = decide(first, _archived(event_seq=first.seq + 1), PLANNER)
    assert ahead.events == [] and len(ahead.state.waiting) == 1


def test_waiting_commands_and_those_after_them_are_decided_in_the_order_they_came():
    # The order the first worker decided them in: one partition of case-commands, in order.
    filing = filed()
    state, events = run(new_case("AJ1"), filing)
    tid = events[1].data["task_id"]
    photo = _archived(event_seq=1)
    sign = cmd(ev.SIGN_TASK, {"task_id": tid, "seen_seq": events[-1].seq}, "dept:D-CG",
               minutes=30)
    note = cmd(ev.NOTE_PROGRESS, {"task_id": tid, "note": "在办"}, "dept:D-CG", minutes=40)
    later = cmd(ev.RECORD_PHOTO_ARCHIVED, {"sha256": "b" * 64, "source_key": "k2",
                                           "status": "archived", "event_seq": 9})
    after = cmd(ev.NOTE_PROGRESS, {"task_id": tid, "note": "再办"}, "dept:D-CG", minutes=50)
    lost = new_case("AJ1")
    for c in (photo, sign, note, later, after):  # `note` needs nothing: it waits behind them
        d = decide(lost, c, PLANNER)
        assert d.events == [] and d.commands == []
        lost = d.state
    assert [w["id"] for w in lost.waiting] == [photo.id, sign.id, note.id, later.id, after.id]
    # a filing from another topic is not held behind them: it is what they wait for
    assert decide(lost, filing, PLANNER).state.waiting[-1]["id"] == filing.id  # on case-commands
    d = decide(lost, filing, PLANNER, in_order=False)
    assert [e.hash() for e in d.events[:len(events)]] == [e.hash() for e in events]
    assert types(d.events[len(events):]) == [ev.PHOTO_ARCHIVED, ev.TASK_SIGNED,
                                              ev.TASK_PROGRESS_NOTED]
    assert [e.causation_id for e in d.events[len(events):]] == [photo.id, sign.id, note.id]
    assert [e.seq for e in d.events] == list(range(1, len(d.events) + 1))
    # `later` waits for an event no decision here reached, and holds `after` behind it
    assert [w["id"] for w in d.state.waiting] == [later.id, after.id]
    assert {photo.id, sign.id, note.id} <= set(d.state.recent_commands)
    # the same as the first worker's decisions, one by one
    first = state
    for c in (photo, sign, note):
        first = decide(first, c, PLANNER).state
    assert d.state.tasks == first.tasks and d.state.last_hash == first.last_hash


def test_a_wait_that_cannot_end_ends_within_a_bound():
    from gridflow.core.case import WAIT_LIMIT, WAITING_KEPT

    state = new_case("AJ2")
    photos = [cmd(ev.RECORD_PHOTO_ARCHIVED, {"sha256": "a" * 64, "source_key": f"k{i}",
                                             "status": "archived", "event_seq": 1},
                  case_id="AJ2") for i in range(WAITING_KEPT + 1)]
    for c in photos[:WAITING_KEPT]:
        d = decide(state, c, PLANNER)
        assert d.events == []
        state = d.state
    d = decide(state, photos[-1], PLANNER)  # one too many: the oldest is decided as it is
    assert d.events[0].type == ev.COMMAND_REFUSED and d.events[0].data["code"] == "unknown_case"
    assert d.events[0].causation_id == photos[0].id
    # its refusal is seq 1, what the others wait for: they are decided after it, in order
    assert [e.causation_id for e in d.events] == [c.id for c in photos]
    assert types(d.events) == [ev.COMMAND_REFUSED] * len(photos) and d.state.waiting == ()
    # a command written by the older rounds through case-commands, at their limit: decided now
    old = decide(new_case("AJ3"), _archived(event_seq=1, waited=WAIT_LIMIT, case_id="AJ3"),
                 PLANNER)
    assert types(old.events) == [ev.COMMAND_REFUSED] and old.state.waiting == ()


def test_a_person_s_command_ahead_of_the_case_s_state_waits_under_its_own_id():
    # A department signs a task it saw in the read models (the API stamps seen_seq, the case's
    # last seq there). The worker was killed after the dispatch reached the log and before the
    # case's state did; deciding the sign against the older state would refuse the task as
    # unknown. It waits in the state until the report is decided again, then is decided under
    # its own id (its outcome is the one the department waits for), as if nothing had happened.
    filing = filed()
    state, events = run(new_case("AJ1"), filing)
    tid = events[1].data["task_id"]
    sign = cmd(ev.SIGN_TASK, {"task_id": tid, "seen_seq": events[-1].seq}, "dept:D-CG",
               minutes=30)
    lost = new_case("AJ1")  # the state the restarted worker has
    d = decide(lost, sign, PLANNER)
    assert d.events == [] and d.commands == [] and sign.id not in d.state.recent_commands
    done = decide(d.state, filing, PLANNER, in_order=False)
    assert [e.hash() for e in done.events[:len(events)]] == [e.hash() for e in events]
    assert types(done.events[len(events):]) == [ev.TASK_SIGNED]
    assert done.events[-1].causation_id == sign.id and sign.id in done.state.recent_commands
    assert decide(done.state, sign, PLANNER).events == []  # the original, redelivered: nothing
    # decided exactly as it is against the state that has the dispatch
    direct = decide(state, sign, PLANNER)
    assert [e.hash() for e in direct.events] == [e.hash() for e in done.events[len(events):]]
    assert direct.state == done.state
    # a stamp of the wrong type is ignored (the payload's own check refuses it)
    odd = decide(lost, cmd(ev.SIGN_TASK, {"task_id": tid, "seen_seq": "2"}, "dept:D-CG"), PLANNER)
    assert odd.state.waiting == () and types(odd.events) == [ev.COMMAND_REFUSED]
    # a waiting command whose payload does not check is refused when it is reached
    bad = cmd(ev.SIGN_TASK, {"task_id": 7, "seen_seq": 2}, "dept:D-CG", minutes=30)
    w = decide(lost, bad, PLANNER)
    assert len(w.state.waiting) == 1
    woken = decide(w.state, filing, PLANNER, in_order=False)
    assert types(woken.events)[-1] == ev.COMMAND_REFUSED
    assert woken.events[-1].data["code"] == "bad_payload" and woken.state.waiting == ()


def test_a_stale_deadline_command_is_not_remembered_so_its_clock_can_fire_it_again():
    # After a crash the deadline agent's command can be read before the report that files its
    # task again: against the state it finds, it is stale and dropped. Remembering its id then
    # would drop the same command when the re-filed clock fires it, and the warning would be
    # lost. A command that applied is remembered: its repeat emits nothing.
    state, tid = full_cycle()
    due = state.tasks[tid].sign_due
    warn = cmd(ev.WARN_DEADLINE, {"task_id": tid, "stage": "sign", "due_at": due, "fraction": 0.5})
    lost = new_case("AJ1")
    early = decide(lost, warn, PLANNER)
    assert early.events == [] and warn.id not in early.state.recent_commands
    applied = decide(state, warn, PLANNER)
    assert types(applied.events) == [ev.DEADLINE_WARNED] and warn.id in applied.state.recent_commands
    assert decide(applied.state, warn, PLANNER).events == []  # its repeat: nothing
    # a person's escalation that changes nothing is remembered as before
    esc = cmd(ev.ESCALATE_TASK, {"task_id": tid, "level": 0}, "supervisor:S1")
    assert esc.id in decide(state, esc, PLANNER).state.recent_commands


def test_a_state_is_evolved_as_dataclasses_replace_would_make_it():
    from dataclasses import replace

    import pytest

    from gridflow.core.case import CaseState, TaskState, _evolve

    task = TaskState("T1", "D1", "dispatched", "2026-03-02T01:00:00Z", "2026-03-02T05:00:00Z",
                     pending_extension={"days": 2})
    state = CaseState("C1", status="open", report_ids=("R1",), tasks={"T1": task}, seq=3)
    for base, changes in ((state, {"seq": 4, "last_hash": "ab", "last_at": "x"}),
                          (state, {"status": "closed", "rating": 5}),
                          (state, {}),
                          (task, {"state": "signed", "signed_at": "y"}),
                          (task, {"pending_extension": None, "extensions": 1})):
        made, expected = _evolve(base, **changes), replace(base, **changes)
        assert made == expected and type(made) is type(expected)
        assert made.__dict__ == expected.__dict__
        assert made is not base and base == replace(base)  # the original is untouched
    with pytest.raises(TypeError, match="no field"):
        _evolve(state, sequence=5)
    with pytest.raises(AttributeError):  # still frozen
        _evolve(state, seq=1).seq = 2  # type: ignore[misc]
