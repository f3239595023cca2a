"""Residents' personal data on the real stack: a resident's name and phone number reach the case
through Open311; supervisors who call back (回访) see them in full and every such read is a
record on the access-log topic, which auditors list per case and per person; everyone else in
scope sees 139****1234; with the log down nobody sees them unmasked."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from accounts.access_log import AccessLog
from accounts.people import county_people
from accounts.roles import DEPT_STAFF
from accounts.sample import SampleSessions
from dashboard.app import create_dashboard
from demo.live import InProcessPipeline, LiveApi, free_port, real_deps
from gridflow import topics
from gridflow.core.refdata import load_reference_data
from gridflow.settings import Settings
from producers.app import create_app
from producers.publisher import KafkaPublisher
from tests.support.api import ApiEnv

pytestmark = pytest.mark.integration

REF = load_reference_data()
PHONE, NAME = "13900001234", "张 三"  # Open311: last_name first_name


@pytest.fixture
def env(stack: Any, stack_settings: Settings) -> Iterator[ApiEnv]:
    s3 = stack.s3()
    deps = real_deps(stack_settings, s3, REF)
    with LiveApi(create_app(stack_settings, deps)) as api:
        yield ApiEnv(stack_settings, s3, deps, api.url)


def resident_case(env: ApiEnv) -> tuple[str, str]:
    """A resident's complaint with name and phone, filed: (case id, its task's department)."""
    form = {"service_code": "illegal-parking", "lat": "32.160000", "long": "109.960000",
            "description": "消防通道被私家车堵塞", "device_id": "pii-device-1",
            "first_name": "三", "last_name": "张", "phone": PHONE}
    r = httpx.post(f"{env.url}/open311/v2/requests.json", data=form, timeout=30)
    assert r.status_code == 201, r.text
    [record] = env.read(topics.REPORTS, lambda rs: len(rs) >= 1)
    pipeline = InProcessPipeline(env.deps.engine, REF)
    pipeline.report(record.value, datetime.now(UTC))
    [dispatched] = [e for e in pipeline.events if e.type == "TaskDispatched"]
    return dispatched.case_id, dispatched.data["department"]


def staff_of(department: str) -> str:
    return next(p.login for p in sorted(county_people(REF), key=lambda p: p.login)
                if p.active and any(g.role == DEPT_STAFF and g.scope == department
                                    for g in p.grants))


def test_callers_see_what_their_role_may_and_unmasked_reads_are_logged(env: ApiEnv) -> None:
    case_id, department = resident_case(env)
    people = SampleSessions(env.deps.accounts or env_accounts(env), "test")
    url = f"{env.url}/api/v1/cases/{case_id}/contacts"

    county = httpx.get(url, headers=people.bearer("sv0001")).json()
    assert county["masked"] is False
    assert county["contacts"][0]["phone"] == PHONE and county["contacts"][0]["name"] == NAME

    staff = httpx.get(url, headers=people.bearer(staff_of(department))).json()
    assert staff["masked"] is True and staff["contacts"][0]["phone"] == "139****1234"
    assert staff["contacts"][0]["name"] == "张**"
    assert httpx.get(url, headers=people.bearer("sv0101")).status_code == 404  # 城关: not theirs
    assert httpx.get(url, headers=people.bearer("ad0001")).status_code == 403

    audit = f"{env.url}/api/v1/audit/access-log"
    assert httpx.get(audit, headers=people.bearer("sv0001")).status_code == 403
    per_case = httpx.get(audit, params={"case_id": case_id}, headers=people.bearer("au0001"),
                         timeout=60).json()
    [entry] = per_case["entries"]  # the county supervisor's read; the masked one is no record
    assert entry["account_id"] == "SV0001" and entry["case_id"] == case_id
    assert entry["fields"] == ["name", "phone"] and entry["route"].endswith("/contacts")
    assert datetime.fromisoformat(entry["at"].replace("Z", "+00:00")).year >= 2025
    per_person = httpx.get(audit, params={"account_id": "SV0001"},
                           headers=people.bearer("au0001"), timeout=60).json()
    assert [e["id"] for e in per_person["entries"]] == [entry["id"]]
    auditor_view = httpx.get(url, headers=people.bearer("au0001")).json()
    assert auditor_view["masked"] is True  # auditors audit; they do not call residents


def env_accounts(env: ApiEnv) -> Any:
    from accounts.store import AccountStore

    return AccountStore(env.deps.engine, REF)


def test_the_case_page_shows_the_call_back_details_to_supervisors_only(
    env: ApiEnv, stack: Any
) -> None:
    case_id, department = resident_case(env)
    settings = env.settings
    log = AccessLog(KafkaPublisher(settings.kafka_bootstrap), settings.kafka_bootstrap,
                    settings.topic_prefix)
    app = create_dashboard(settings, env.deps.engine, REF, lambda: datetime.now(UTC), None,
                           access_log=log)
    people = SampleSessions(app.state.accounts, "test")
    board = TestClient(app)
    township = board.get(f"/cases/{case_id}", headers=people.bearer("sv0102")).text
    assert "回访信息" in township and PHONE in township and "已记录" in township
    staff = board.get(f"/cases/{case_id}", headers=people.bearer(staff_of(department))).text
    assert PHONE not in staff and "139****1234" in staff and "张**" in staff
    [entry] = log.entries(case_id=case_id)
    assert entry["account_id"] == "SV0102" and entry["route"] == "GET /cases/{case_id}"


def test_with_the_access_log_down_nobody_sees_personal_data(env: ApiEnv) -> None:
    case_id, _ = resident_case(env)
    dead = AccessLog(KafkaPublisher(f"127.0.0.1:{free_port()}", timeout_s=2),
                     env.settings.kafka_bootstrap, env.settings.topic_prefix)
    app = create_dashboard(env.settings, env.deps.engine, REF, lambda: datetime.now(UTC), None,
                           access_log=dead)
    people = SampleSessions(app.state.accounts, "test")
    page = TestClient(app).get(f"/cases/{case_id}", headers=people.bearer("sv0001")).text
    assert PHONE not in page and "139****1234" in page and "访问记录暂不可用" in page
    assert not re.search(r"1390000\d{4}", page)
