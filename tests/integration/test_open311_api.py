"""Residents' complaints over Open311 GeoReport v2 on the real stack.

What a GeoReport v2 client would check: services.json and requests.json have the spec's
shapes; a POST answers [{service_request_id, service_notice, account_id}] only once the
report is on the log; a retried POST gets the same ticket and publishes nothing new; errors
are [{code, description}]; the ticket can be looked up, before and after the pipeline filed it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from accounts.sample import SampleSessions
from accounts.store import AccountStore
from demo.live import InProcessPipeline, LiveApi, free_port, real_deps
from gridflow import topics
from gridflow.core import intake
from gridflow.core.refdata import load_reference_data
from gridflow.events import decode_message
from gridflow.settings import Settings
from producers.app import create_app
from tests.support.api import ApiEnv, chinese

pytestmark = pytest.mark.integration

REF = load_reference_data()
SERVICE_KEYS = {
    "service_code",
    "service_name",
    "description",
    "metadata",
    "type",
    "keywords",
    "group",
}
REQUEST_KEYS = {
    "service_request_id",
    "status",
    "status_notes",
    "service_name",
    "service_code",
    "description",
    "agency_responsible",
    "service_notice",
    "requested_datetime",
    "updated_datetime",
    "expected_datetime",
    "address",
    "address_id",
    "zipcode",
    "lat",
    "long",
    "media_url",
}
TICKET = re.compile(r"^AJ\d{8}-[A-Z2-7]{8}$")


@pytest.fixture
def env(stack: Any, stack_settings: Settings) -> Iterator[ApiEnv]:
    s3 = stack.s3()
    deps = real_deps(stack_settings, s3, REF)
    with LiveApi(create_app(stack_settings, deps)) as api:
        yield ApiEnv(stack_settings, s3, deps, api.url)


def complaint(**overrides: str) -> dict[str, str]:
    form = {
        "service_code": "illegal-parking",
        "lat": "32.160000",
        "long": "109.960000",
        "description": "消防通道被私家车堵塞",
        "address_string": "石门村卫生室门口",
        "device_id": f"android-{uuid.uuid4().hex[:12]}",
        "first_name": "三",
        "last_name": "张",
        "phone": "13900001234",
        "media_url": "https://example.org/photos/1.jpg",
    }
    form.update(overrides)
    return form


def post(env: ApiEnv, form: dict[str, str], **kw: Any) -> httpx.Response:
    return httpx.post(f"{env.url}/open311/v2/requests.json", data=form, timeout=60, **kw)


def published(env: ApiEnv, until_description: str) -> list[Any]:
    """ReportSubmitted messages on the reports topic, read until one with this description."""
    records = env.read(
        topics.REPORTS,
        lambda rs: any(
            decode_message(r.value).data.get("description") == until_description for r in rs
        ),
    )
    return [decode_message(r.value) for r in records]


def sentinel(env: ApiEnv) -> str:
    """File one more complaint: reading up to it shows everything published before it."""
    text = f"sentinel {uuid.uuid4().hex}"
    assert post(env, complaint(description=text)).status_code == 201
    return text


def assert_spec_error(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    [err] = r.json()
    assert set(err) == {"code", "description"} and err["code"] == status
    assert chinese(err["description"])


def test_services_list_has_the_spec_shape(env: ApiEnv) -> None:
    r = httpx.get(f"{env.url}/open311/v2/services.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    services = r.json()
    assert len(services) == len(REF.services) > 0
    for s in services:
        assert set(s) == SERVICE_KEYS
        assert s["metadata"] is False and s["type"] == "realtime"
        assert isinstance(s["keywords"], str) and chinese(s["service_name"]) and s["group"]
    assert {s["service_code"] for s in services} == set(REF.services)


def test_a_complaint_is_published_and_answered_with_its_ticket(env: ApiEnv) -> None:
    form = complaint(account_id="resident-42")
    r = post(env, form)

    assert r.status_code == 201, r.text
    [answer] = r.json()
    assert set(answer) == {"service_request_id", "service_notice", "account_id"}
    ticket = answer["service_request_id"]
    assert TICKET.match(ticket) and ticket in answer["service_notice"]
    assert answer["account_id"] == "resident-42"

    [record] = env.read(topics.REPORTS, lambda rs: len(rs) >= 1)
    msg = decode_message(record.value)
    d = msg.data
    # keyed by the township it is in (issue 16), so the worker files it in one step
    assert record.key == intake.report_key(REF, d["report_id"], d["lat"], d["lon"]).encode()
    assert record.key != d["report_id"].encode() and msg.type == "ReportSubmitted"
    assert msg.actor == d["reporter"] == "resident:resident-42"
    assert (d["source"], d["channel"], d["photos"]) == ("resident", "open311", [])
    assert d["category_code"] == REF.services["illegal-parking"].category_code
    assert d["media_url"] == form["media_url"] and d["address"] == form["address_string"]
    assert (d["lat"], d["lon"]) == (32.16, 109.96)


def test_a_retried_complaint_gets_the_same_ticket_and_publishes_once(env: ApiEnv) -> None:
    form = complaint()
    first = post(env, form)
    again = post(env, form)
    other = post(env, complaint(description="另一件事", device_id=form["device_id"]))

    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 201)
    assert again.json() == first.json()
    assert other.json()[0]["service_request_id"] != first.json()[0]["service_request_id"]
    messages = published(env, sentinel(env))
    assert len(messages) == 3, "the retry published nothing"


def test_an_idempotency_key_names_the_request(env: ApiEnv) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = post(env, complaint(device_id="dev-1"), headers=key)
    retry = post(env, complaint(device_id="dev-1"), headers=key)
    reused = post(env, complaint(device_id="dev-1", description="变了"), headers=key)

    assert (first.status_code, retry.status_code) == (201, 200)
    assert retry.json() == first.json()
    assert_spec_error(reused, 409)


@pytest.mark.parametrize(
    ("form", "status"),
    [
        ({"service_code": "no-such-service"}, 404),
        ({"service_code": ""}, 400),
        ({"lat": ""}, 400),
        ({"long": "东经110度"}, 400),
        ({"lat": "95"}, 400),
    ],
)
def test_bad_complaints_get_spec_errors_and_publish_nothing(
    env: ApiEnv, form: dict[str, str], status: int
) -> None:
    assert_spec_error(post(env, complaint(**form)), status)
    assert len(published(env, sentinel(env))) == 1, "only the sentinel was published"


def test_kafka_down_is_a_503_spec_error_with_retry_after(
    stack: Any, stack_settings: Settings
) -> None:
    deps = real_deps(stack_settings, stack.s3(), REF, f"127.0.0.1:{free_port()}", timeout_s=2)
    with LiveApi(create_app(stack_settings, deps)) as api:
        r = httpx.post(f"{api.url}/open311/v2/requests.json", data=complaint(), timeout=60)
    assert_spec_error(r, 503)
    assert int(r.headers["Retry-After"]) > 0


def test_a_ticket_can_be_looked_up_before_and_after_filing(env: ApiEnv) -> None:
    ticket = post(env, complaint()).json()[0]["service_request_id"]

    before = httpx.get(f"{env.url}/open311/v2/requests/{ticket}.json")
    assert before.status_code == 200, before.text
    [pending] = before.json()
    assert set(pending) == REQUEST_KEYS
    assert pending["service_request_id"] == ticket and pending["status"] == "open"

    [record] = env.read(topics.REPORTS, lambda rs: len(rs) >= 1)
    InProcessPipeline(env.deps.engine, REF).report(record.value, datetime.now(UTC))

    [filed] = httpx.get(f"{env.url}/open311/v2/requests/{ticket}.json").json()
    assert set(filed) == REQUEST_KEYS
    assert filed["status"] == "open" and filed["service_code"] == "illegal-parking"
    assert filed["agency_responsible"] and chinese(filed["status_notes"])
    assert filed["description"] == "消防通道被私家车堵塞"
    assert (filed["lat"], filed["long"]) == (32.16, 109.96)
    assert filed["address"] == "石门村卫生室门口"
    assert filed["requested_datetime"] and filed["expected_datetime"]

    # browsing the list is for signed-in staff, each seeing their own scope
    assert_spec_error(httpx.get(f"{env.url}/open311/v2/requests.json"), 401)
    county = SampleSessions(AccountStore(env.deps.engine, REF), "test").bearer("sv0001")
    listed = httpx.get(
        f"{env.url}/open311/v2/requests.json",
        params={"service_code": "illegal-parking", "status": "open"},
        headers=county,
    ).json()
    assert [x["service_request_id"] for x in listed] == [ticket]
    assert set(listed[0]) == REQUEST_KEYS
    closed = httpx.get(f"{env.url}/open311/v2/requests.json", params={"status": "closed"},
                       headers=county).json()
    assert closed == []
    by_id = httpx.get(
        f"{env.url}/open311/v2/requests.json",
        params={"service_request_id": f"{ticket},AJ20000101-AAAAAAAA"},
    ).json()
    assert [x["service_request_id"] for x in by_id] == [ticket]


def test_unknown_ticket_and_bad_filters_are_spec_errors(env: ApiEnv) -> None:
    assert_spec_error(httpx.get(f"{env.url}/open311/v2/requests/AJ20000101-AAAAAAAA.json"), 404)
    assert_spec_error(
        httpx.get(f"{env.url}/open311/v2/requests.json", params={"status": "pending"}), 400
    )
    assert_spec_error(
        httpx.get(f"{env.url}/open311/v2/requests.json", params={"service_code": "nope"}), 404
    )
    assert_spec_error(
        httpx.get(f"{env.url}/open311/v2/requests.json", params={"start_date": "yesterday"}), 400
    )


def test_a_request_merged_into_another_case_is_listed_under_its_own_ticket(env: ApiEnv) -> None:
    first = post(env, complaint(description="消防通道被私家车堵塞")).json()[0]
    second = post(env, complaint(description="又有车堵住了消防通道", lat="32.160100")).json()[0]
    a, b = first["service_request_id"], second["service_request_id"]
    records = env.read(topics.REPORTS, lambda rs: len(rs) >= 2)
    pipeline = InProcessPipeline(env.deps.engine, REF, merge_duplicates=True)
    for record in records:
        pipeline.report(record.value, datetime.now(UTC))
    assert [e.type for e in pipeline.events].count("ReportMerged") == 1, "b joined a's case"

    [own] = httpx.get(f"{env.url}/open311/v2/requests/{b}.json").json()
    listed = httpx.get(
        f"{env.url}/open311/v2/requests.json", params={"service_request_id": f"{a},{b}"}
    )
    assert listed.status_code == 200, listed.text
    by_ticket = {x["service_request_id"]: x for x in listed.json()}
    assert list(by_ticket) == [a, b]
    assert by_ticket[b] == own
    assert set(by_ticket[b]) == REQUEST_KEYS
    assert by_ticket[b]["description"] == "又有车堵住了消防通道"
    for key in ("status", "status_notes", "agency_responsible", "expected_datetime"):
        assert by_ticket[b][key] == by_ticket[a][key], key
    assert by_ticket[b]["status"] == "open"
    # The spec: service_request_id overrides every other argument.
    closed = httpx.get(
        f"{env.url}/open311/v2/requests.json",
        params={"service_request_id": b, "status": "closed"},
    ).json()
    assert [x["service_request_id"] for x in closed] == [b]


def test_unknown_paths_and_methods_under_open311_are_spec_errors(env: ApiEnv) -> None:
    assert_spec_error(httpx.get(f"{env.url}/open311/v2/services/no-such-service.json"), 404)
    assert_spec_error(httpx.get(f"{env.url}/open311/v2/whatever"), 404)
    assert_spec_error(httpx.put(f"{env.url}/open311/v2/requests.json"), 405)


def test_a_raw_utf8_form_body_is_stored_as_sent(env: ApiEnv) -> None:
    """`curl -d description=测试垃圾 ...`: raw UTF-8, no charset in the Content-Type."""
    body = "service_code=litter&lat=32.16&long=109.96&device_id=curl-1&description=测试垃圾"
    r = httpx.post(
        f"{env.url}/open311/v2/requests.json",
        content=body.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 201, r.text
    assert "测试垃圾" in [m.data["description"] for m in published(env, "测试垃圾")]
    bad = httpx.post(
        f"{env.url}/open311/v2/requests.json",
        content=body.replace("测试垃圾", "另一件").encode("gb18030"),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_spec_error(bad, 400)
