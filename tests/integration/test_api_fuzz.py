"""The API fuzzed from its own OpenAPI document (schemathesis, chaos/fuzz.py) on the real stack:
the real API over HTTP, Kafka, MinIO, the read models, signed-in callers of the roles each
route admits, one real case whose ids go into half the paths. No 5xx; every answer a
documented status, media type and body; invalid input refused. Short and deterministic here
(5 examples an operation, valid and invalid data, seed 1); `gridflow chaos --scenario fuzz`
is the longer run.

What fuzzing found, each with its regression test here or in tests/unit/test_fuzz_regressions.py:
a 500 for a multipart part named beyond latin-1 (POST /api/v1/reports); FastAPI's own
refusals answered {"detail": ...} instead of the API's error body; the document listed
neither the refusals (401/403/404/409/413/415/429/503), nor the pages and redirects of the
phone and QR routes, nor the form bodies they read.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from chaos import fuzz
from producers.openapi import OPERATIONS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(stack, tmp_path_factory) -> Any:  # type: ignore[no-untyped-def]
    with fuzz.live_api(stack.settings, tmp_path_factory.mktemp("fuzz")) as (url, app, settings):
        yield url, app, settings


@pytest.fixture(scope="module")
def document(api) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    url, _, _ = api
    doc: dict[str, Any] = httpx.get(f"{url}/openapi.json", timeout=30).json()
    return doc


def _ops(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f"{m.upper()} {p}": op for p, item in doc["paths"].items() for m, op in item.items()}


def test_every_operation_says_what_it_answers(document) -> None:  # type: ignore[no-untyped-def]
    """A new route fails here until producers/openapi.py lists what it answers."""
    ops = _ops(document)
    assert sorted(set(ops) - set(OPERATIONS)) == []
    assert sorted(set(OPERATIONS) - set(ops)) == []
    for label, op in ops.items():
        responses = op["responses"]
        assert "401" in responses and "503" in responses, label  # every credential check
        for status, entry in responses.items():
            if int(status) >= 400:
                assert entry.get("content"), (label, status)
                if "application/json" in entry["content"]:
                    ref = entry["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith("Open311Errors" if "/open311/" in label
                                        else "ApiError"), (label, status)


def test_pages_redirects_and_form_bodies_are_documented(document) -> None:  # type: ignore[no-untyped-def]
    ops = _ops(document)
    assert set(ops["GET /m/"]["responses"]["200"]["content"]) == {"text/html"}
    assert set(ops["GET /metrics"]["responses"]["200"]["content"]) == {"text/plain"}
    assert "303" in ops["POST /m/sign-out"]["responses"]
    assert "200" not in ops["POST /m/sign-out"]["responses"]
    assert set(ops["POST /r/{code}"]["responses"]["400"]["content"]) == {
        "application/json", "text/html"}
    assert "multipart/form-data" in ops["POST /r/{code}"]["requestBody"]["content"]
    form = ops["POST /m/sign-in"]["requestBody"]["content"]
    assert set(form["application/x-www-form-urlencoded"]["schema"]["properties"]) == {
        "csrf", "login", "password"}
    assert "Retry-After" in ops["POST /api/v1/auth/sign-in"]["responses"]["429"]["headers"]
    assert set(ops["GET /m/api/photos/{photo_id}"]["responses"]["200"]["content"]) == {
        "image/jpeg", "image/png"}


def test_the_frameworks_own_refusals_have_the_apis_error_body(api) -> None:  # type: ignore[no-untyped-def]
    """FastAPI answered {"detail": ...} for a body it could not parse, an unknown path and a
    method not allowed; every refusal now has {code, field, message_zh, message_en}."""
    url, _, _ = api
    with httpx.Client(base_url=url, timeout=30) as c:
        bad_json = c.post("/api/v1/auth/sign-in", content=b"\xff",
                          headers={"Content-Type": "application/json"})
        unknown = c.get("/api/v1/no-such-route")
        method = c.put("/api/v1/health")
        open311 = c.get("/open311/v2/no-such-route.json")
    for answer, status, code in ((bad_json, 400, "bad_request"), (unknown, 404, "not_found"),
                                 (method, 405, "method_not_allowed")):
        body = answer.json()
        assert answer.status_code == status and body["code"] == code, answer.text
        assert body["message_zh"] and body["message_en"] and "detail" not in body
    assert open311.status_code == 404 and open311.json()[0]["code"] == 404  # GeoReport's shape


def test_fuzzing_the_api_finds_nothing(api) -> None:  # type: ignore[no-untyped-def]
    url, app, settings = api
    report = fuzz.FuzzReport(settings.topic_prefix, 5, True)
    callers = fuzz.Callers(app)
    known = fuzz.seed_case(url, app, callers)
    fuzz.fuzz(url, callers, examples=5, seed=1, negative=True, known=known,
              echo=lambda _: None, report=report)
    assert report.operations == len(OPERATIONS)
    assert report.clean, "\n".join(report.lines())
    assert report.statuses.get(202), report.statuses  # the seeded ids reached real work
