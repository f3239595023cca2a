"""Notifications: which case events notify whom (pure core), the config's checks, the backoff,
and the notifier's send state on SQLite with an in-memory send method (no network, no Kafka)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from bootstrap import bundled_planner
from gridflow import events as ev
from gridflow.core import notify as core
from gridflow.core.case import decide, new_case
from gridflow.core.notify import (
    Contact,
    Notice,
    NotifyConfig,
    NotifyConfigError,
    RetryPolicy,
    escalation_recipient,
    load_notify_config,
    notices_for,
    parse_notify_config,
)
from gridflow.core.refdata import load_reference_data
from gridflow.events import Message, iso
from sinks.models import make_engine
from sinks.notify import Notifier, send_states
from sinks.notify_models import RETRYING, SENT, create_notify_tables
from sinks.notify_send import SendFailed

REF = load_reference_data()
PLANNER = bundled_planner()
T0 = datetime(2026, 11, 16, 1, 0, tzinfo=UTC)  # Monday 09:00 in Beijing
GRID = "421099101201001"  # 石门村一组: village 421099101201, township 421099101
VILLAGE_DEPT = "421099101201.cwh"
CONFIG = load_notify_config(None, REF)
_n = 0


def cmd(type_: str, data: dict[str, Any], actor: str = "system", minutes: float = 0) -> Message:
    global _n
    _n += 1
    return Message(id=f"n{_n}", type=type_, case_id="AJ-N1", at=iso(T0 + timedelta(minutes=minutes)),
                   actor=actor, data=data)


def history(*commands: Message) -> tuple[Any, list[Message]]:
    state, out = new_case("AJ-N1"), []
    for c in commands:
        d = decide(state, c, PLANNER)
        state, out = d.state, out + d.events
    return state, out


def filing(departments: tuple[str, ...] = (VILLAGE_DEPT,)) -> Message:
    return cmd(ev.FILE_REPORT, {
        "report": {"report_id": "r-n1", "reporter": f"worker:GW0001@{GRID}", "photos": []},
        "category_code": "E0102", "severity": 1, "grid_code": GRID,
        "village_code": "421099101201", "township_code": "421099101",
        "departments": list(departments)})


def all_notices(events: list[Message], config: NotifyConfig = CONFIG) -> list[Notice]:
    return [n for e in events for n in notices_for(e, config, REF)]


# --- what each event calls for ---------------------------------------------------------------


def test_a_dispatched_task_is_a_new_task_notice_to_its_department():
    _, events = history(filing())
    notices = all_notices(events)
    assert [(n.kind, n.recipient, n.task_id) for n in notices] == [
        (core.NEW_TASK, VILLAGE_DEPT, "AJ-N1-T01")]
    n = notices[0]
    assert "新任务" in n.title_zh and "签收" in n.text_zh and "暴露垃圾" in n.text_zh
    assert n.payload()["sign_due"] == events[1].data["sign_due"]
    assert Notice.from_payload(n.payload()) == n


def test_a_send_back_notifies_the_department_the_task_is_rerouted_to():
    state, events = history(filing())
    _, more = history(filing(), cmd(ev.SEND_BACK_TASK, {
        "task_id": "AJ-N1-T01", "reason": "不属本村职责", "reroute_to": "421099101.zhifa"},
        f"dept:{VILLAGE_DEPT}", minutes=10))
    notices = all_notices(more[len(events):])
    assert [(n.kind, n.recipient, n.task_id) for n in notices] == [
        (core.NEW_TASK, "421099101.zhifa", "AJ-N1-T02")]
    assert notices[0].title_zh.startswith("退单改派") and notices[0].facts["replaces_task"] == "AJ-N1-T01"


def test_a_deadline_warning_goes_to_the_tasks_department():
    state, _ = history(filing())
    due = state.tasks["AJ-N1-T01"].sign_due
    _, events = history(filing(), cmd(ev.WARN_DEADLINE, {
        "task_id": "AJ-N1-T01", "stage": "sign", "due_at": due, "fraction": 0.8}, minutes=50))
    notices = all_notices([e for e in events if e.type == ev.DEADLINE_WARNED])
    assert [(n.kind, n.recipient) for n in notices] == [(core.DEADLINE_WARNING, VILLAGE_DEPT)]
    assert "签收时限" in notices[0].text_zh and "80%" in notices[0].text_zh


@pytest.mark.parametrize("level, code, recipient", [
    (1, "village", VILLAGE_DEPT),
    (2, "township", "421099101.zongzhi"),
    (3, "county_department", "county.wangge"),
    (4, "county_leadership", "county.duchashi"),
])
def test_an_escalation_notifies_whoever_serves_the_new_level_there(level, code, recipient):
    state, _ = history(filing())
    due = state.tasks["AJ-N1-T01"].sign_due
    _, events = history(filing(), cmd(ev.ESCALATE_TASK, {
        "task_id": "AJ-N1-T01", "stage": "sign", "due_at": due, "level": level,
        "level_code": code, "level_name": "某级", "notify": ["分管领导"]}, minutes=200))
    notices = all_notices([e for e in events if e.type == ev.TASK_ESCALATED])
    assert [(n.kind, n.recipient) for n in notices] == [(core.ESCALATION, recipient)]
    assert "升级至某级督办" in notices[0].text_zh and "分管领导" in notices[0].text_zh


def test_a_whistle_notifies_each_department_called_once_with_its_task():
    _, events = history(filing(), cmd(ev.WHISTLE_CASE, {
        "departments": ["county.huanjing", "county.shuili", VILLAGE_DEPT], "reason": "河道污染"},
        "supervisor:SV0001", minutes=30))
    notices = all_notices(events[2:])  # after the filing's own new-task notice
    assert [(n.kind, n.recipient, n.task_id) for n in notices] == [
        (core.WHISTLE, "county.huanjing", "AJ-N1-T02"),
        (core.WHISTLE, "county.shuili", "AJ-N1-T03"),
    ]  # no second (new-task) notice for the whistle's own dispatches
    assert all("河道污染" in n.text_zh and n.facts["sign_due"] for n in notices)


def test_notice_ids_are_one_per_event_and_recipient_and_stable():
    _, events = history(filing(("county.huanjing", "county.shuili")))
    first, again = all_notices(events), all_notices(events)
    assert [n.id for n in first] == [n.id for n in again]
    assert len({n.id for n in first}) == 2
    assert not any(all_notices([e]) for e in events if e.type == ev.CASE_FILED)


def test_departments_without_contact_are_skipped_when_there_is_no_default():
    config = NotifyConfig(contacts={"county.huanjing": Contact("log")}, default=None)
    _, events = history(filing(("county.huanjing", "county.shuili")))
    assert [n.recipient for n in all_notices(events, config)] == ["county.huanjing"]


def test_every_grid_of_the_sample_county_has_someone_at_every_level():
    for grid in REF.grids:
        for level in core.DEFAULT_ESCALATION_RECIPIENTS:
            assert escalation_recipient(CONFIG, REF, level, grid) in REF.departments
    assert escalation_recipient(CONFIG, REF, "village", "no-such-grid") == "level:village"
    assert escalation_recipient(CONFIG, REF, "planet", GRID) == "level:planet"


# --- configuration and backoff -------------------------------------------------------------


@pytest.mark.parametrize("raw, where", [
    ({"departments": {"county.nope": {"method": "log"}}}, "$.departments.county.nope"),
    ({"departments": {"county.huanjing": {"method": "fax"}}}, "$.departments.county.huanjing.method"),
    ({"departments": {"county.huanjing": {"method": "webhook"}}}, "county.huanjing.url"),
    ({"retry": {"first_s": -1}}, "$.retry.first_s"),
    ({"timezone": "Mars/Olympus"}, "$.timezone"),
    ({"colour": "red"}, "unknown keys"),
])
def test_a_bad_config_names_the_place_and_the_reason(raw, where):
    with pytest.raises(NotifyConfigError) as exc:
        parse_notify_config(raw, REF, "notify.json")
    assert str(exc.value).startswith("notify.json: ") and where in str(exc.value)


def test_a_missing_default_file_means_log_everything(tmp_path: Path):
    assert CONFIG.contact_for("county.huanjing") == Contact("log")
    with pytest.raises(NotifyConfigError, match="cannot read"):
        load_notify_config(tmp_path / "nope.json", REF)


def test_retry_backoff_doubles_and_is_capped():
    retry = RetryPolicy("notify-send", first_s=30, max_s=3600)
    assert [retry.delay_s(n) for n in (1, 2, 3, 4, 8, 20)] == [30, 60, 120, 240, 3600, 3600]
    assert retry.next_attempt(T0, 2) == T0 + timedelta(seconds=60)


# --- the notifier's send state (SQLite, an in-memory send method) ---------------------------


class Rec(NamedTuple):
    topic: str
    partition: int
    offset: int
    value: bytes | None


class FlakyMethod:
    """Fails the first `failures` sends of each notice, then delivers; records deliveries."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: dict[str, int] = {}
        self.delivered: list[Notice] = []

    def send(self, notice: Notice, contact: Contact) -> None:
        self.calls[notice.id] = self.calls.get(notice.id, 0) + 1
        if self.calls[notice.id] <= self.failures:
            raise SendFailed("HTTP 500: boom")
        self.delivered.append(notice)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def engine(tmp_path: Path):
    e = make_engine(f"sqlite:///{tmp_path / 'notify.db'}")
    create_notify_tables(e)
    create_notify_tables(e)  # idempotent
    return e


def records(events: list[Message], start: int = 0) -> list[Rec]:
    return [Rec("p.case-events", 0, start + i, e.encode()) for i, e in enumerate(events)]


def test_notices_are_taken_in_once_and_retried_with_backoff_until_sent(engine):
    method, clock = FlakyMethod(failures=2), Clock()
    config = NotifyConfig(contacts={VILLAGE_DEPT: Contact("webhook", "http://x/hook")},
                          retry=RetryPolicy("notify-send", first_s=10, max_s=100))
    notifier = Notifier(engine, config, REF, {"webhook": method, "log": method}, clock=clock)
    try:
        _, events = history(filing())
        recs = records(events + [Message(id="junk", type="x", case_id="", at="bad", actor="a")])
        first = notifier.take_in(recs)
        assert (first.notices, first.undecodable) == (1, 1)
        again = notifier.take_in(recs)  # a redelivery: below the stored offsets
        assert (again.stale, again.notices) == (len(recs), 0)
        assert notifier.next_offsets("p.case-events") == {0: len(recs)}

        assert notifier.deliver_due().failed == 1
        [row] = send_states(engine, task_id="AJ-N1-T01")
        assert (row["status"], row["fail_count"], row["kind"]) == (RETRYING, 1, core.NEW_TASK)
        assert row["last_failure"] == "HTTP 500: boom" and row["target"] == "http://x/hook"
        assert row["next_attempt_at"] == clock.now + timedelta(seconds=10)
        assert notifier.deliver_due().sent == 0  # not due yet: nothing is tried
        clock.now += timedelta(seconds=10)
        assert notifier.deliver_due().failed == 1
        [row] = send_states(engine, task_id="AJ-N1-T01")
        assert row["next_attempt_at"] == clock.now + timedelta(seconds=20)  # doubled
        clock.now += timedelta(seconds=20)
        assert notifier.deliver_due().sent == 1
        clock.now += timedelta(hours=1)
        assert notifier.deliver_due().sent == 0  # sent is final
        [row] = send_states(engine, case_id="AJ-N1")
        assert (row["status"], row["fail_count"], row["attempts"]) == (SENT, 2, 3)
        assert row["sent_at"] == clock.now - timedelta(hours=1) and row["next_attempt_at"] is None
        assert [n.task_id for n in method.delivered] == ["AJ-N1-T01"]
    finally:
        notifier.close()


def test_a_claimed_notice_is_not_sent_by_a_second_notifier(engine):
    clock = Clock()
    one = Notifier(engine, CONFIG, REF, {"log": FlakyMethod(0)}, clock=clock)
    two_method = FlakyMethod(0)
    two = Notifier(engine, CONFIG, REF, {"log": two_method}, clock=clock)
    try:
        _, events = history(filing())
        one.take_in(records(events))
        claimed = one._claim(clock.now)  # one took it and is sending it right now
        assert len(claimed) == 1
        assert two.deliver_due().sent == 0 and two_method.delivered == []
        clock.now += timedelta(minutes=10)  # one died mid-send: after the lease, two sends it
        assert two.deliver_due().sent == 1
    finally:
        one.close()
        two.close()
