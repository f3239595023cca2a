"""Scenario: the API fuzzed from its own OpenAPI document (schemathesis), with valid tokens.

The real API (`producers.app.create_app`) runs over HTTP on the real stack — Kafka, MinIO and
the read models, on a prefix, buckets and a database of its own — with the sample county's
people signed in through the account store and machine API keys for the partner and monitor
routes. Every operation of `/openapi.json` gets requests generated from its schema (valid and,
with `negative`, invalid ones), sent as a caller whose role the route's access rule admits
(`accounts.access.rule_of`), and each response is checked: no 5xx, a documented status code,
a documented content type and headers, a body matching the documented schema.

Deterministic: hypothesis is derandomised and keyed by `seed`, so a run is repeatable.
tests/integration/test_api_fuzz.py runs the short form (5 examples an operation);
`gridflow chaos --scenario fuzz` the longer one (25, `--full` 100; `--seed N` another run).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accounts.roles import (
    ACTIONS,
    ADMIN,
    AUDITOR,
    COUNTY_LEADER,
    COUNTY_SUPERVISOR,
    DEPT_STAFF,
    GRID_WORKER,
    MONITOR,
    OPEN311_PARTNER,
    TOWNSHIP_SUPERVISOR,
    Grant,
)
from gridflow.settings import Settings

Echo = Callable[[str], None]

# Who calls a route: a person of the first role its action admits, in this order, or a key.
LOGIN_OF_ROLE = {
    GRID_WORKER: "gw0001", DEPT_STAFF: "ds0019", TOWNSHIP_SUPERVISOR: "sv0102",
    COUNTY_SUPERVISOR: "sv0001", COUNTY_LEADER: "ld0001", AUDITOR: "au0001", ADMIN: "ad0001",
}
KEY_ROLES = (OPEN311_PARTNER, MONITOR)
# Routes that end every session of the caller's account get a person of their own (signing
# out ends all of an account's sessions) and a fresh session for every request.
ENDS_SESSION = {("POST", "/api/v1/auth/sign-out"), ("POST", "/m/sign-out")}
SIGNS_OUT = "gw0002"
# Public routes whose answer depends on who asks: called signed in (a listing needs it).
PUBLIC_SIGNED_IN = {("GET", "/open311/v2/requests.json"): "au0001"}


@dataclass
class Finding:
    operation: str  # "POST /api/v1/reports"
    caller: str
    checks: list[str]  # the failed checks' titles
    message: str  # schemathesis' report, with a curl line reproducing it

    def lines(self) -> list[str]:
        return [f"  ✗ {self.operation} as {self.caller}: {', '.join(self.checks)}",
                *("      " + line for line in self.message.strip().splitlines()[:40])]


@dataclass
class FuzzReport:
    prefix: str
    examples: int
    negative: bool
    operations: int = 0
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    # what each operation answered: (status, media type) -> how often
    seen: dict[str, dict[tuple[int, str], int]] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return self.operations > 0 and not self.findings

    def lines(self) -> list[str]:
        spread = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        out = [f"fuzz: {self.operations} operations of /openapi.json, {self.examples} examples "
               f"each ({'valid and invalid' if self.negative else 'valid'} data), "
               f"{self.requests} requests in {self.seconds:.0f} s; prefix {self.prefix}",
               f"  statuses: {spread}"]
        for f in self.findings:
            out += f.lines()
        out.append("  verdict: " + ("no 5xx, every response as documented / 无 5xx, 响应均符合文档"
                                    if self.clean else f"{len(self.findings)} operation(s) failed"))
        return out


class Callers:
    """Headers per route: a signed-in person of a role the route admits, or an API key."""

    def __init__(self, app: Any) -> None:
        from accounts.access import rule_of, served_routes
        from accounts.sample import SampleSessions

        self.store = app.state.accounts
        self.sessions = SampleSessions(self.store, "fuzz")
        self.keys = {role: self.store.add_key(f"fuzz-{role.replace('_', '-')}",
                                              Grant(role), "fuzz")[1] for role in KEY_ROLES}
        self.rules = {(method, path): rule_of(route) for method, path, route in served_routes(app)}

    def caller(self, method: str, path: str) -> str:
        """The login or key role that calls the route; "" for a public route."""
        rules = self.rules.get((method.upper(), path), [])
        action = next((r.action for r in rules if r.action), None)
        if action is None:
            return PUBLIC_SIGNED_IN.get((method.upper(), path), "")
        if (method.upper(), path) in ENDS_SESSION:
            return SIGNS_OUT
        roles = ACTIONS[action].roles
        for role, login in LOGIN_OF_ROLE.items():
            if role in roles:
                return login
        return next(f"key:{r}" for r in KEY_ROLES if r in roles)

    def headers(self, method: str, path: str) -> dict[str, str]:
        who = self.caller(method, path)
        if not who:
            return {}
        if who.startswith("key:"):
            return {"Authorization": f"Bearer {self.keys[who[4:]]}"}
        if (method.upper(), path) in ENDS_SESSION:
            token = self.store.open_session(who, "fuzz", "fuzz").token
            return {"Authorization": f"Bearer {token}"}
        return self.sessions.bearer(who)


GRID = "421099101201001"  # 石门村一组网格: gw0001's grid; its E0102 task goes to ds0019's
DEPT = "421099101201.cwh"  # 石门村村委会


@dataclass(frozen=True)
class Known:
    """Ids of one real case in the callers' scopes, put into generated paths half the time, so
    requests reach the routes' work and not only their 404."""

    values: dict[str, str]

    def for_path(self, path: str) -> dict[str, str]:
        ids = dict(self.values)
        ids["code"] = GRID if path.startswith("/r/") else DEPT
        return ids


def seed_case(base_url: str, app: Any, callers: Callers) -> Known:
    """A report with a photo by gw0001 through the API, filed by the pipeline's own steps into
    the read models (demo.live.InProcessPipeline), and one command outcome."""
    import json
    from datetime import UTC, datetime, timedelta

    import httpx
    from sqlalchemy import select

    from demo import images
    from demo.live import InProcessPipeline, read_topic
    from gridflow import topics
    from sinks.models import Photo, table_of

    c = app.state.ctx
    report: dict[str, Any] = {"report_id": f"fuzz-{uuid.uuid4().hex[:16]}", "category_code": "E0102",
              "description": "村口垃圾堆积(模糊测试)", "lat": 32.16, "lon": 109.96,
              "captured_at": (datetime.now(UTC) - timedelta(minutes=3)).isoformat()}
    photo = images.make_jpeg(320, 240, seed=5, gps=(32.16, 109.96))
    files = [("report", (None, json.dumps(report, ensure_ascii=False).encode(),
                         "application/json")), ("photos", ("a.jpg", photo, "image/jpeg"))]
    answer = httpx.post(f"{base_url}/api/v1/reports", files=files, timeout=60,
                        headers=callers.headers("POST", "/api/v1/reports"))
    answer.raise_for_status()
    rid = str(report["report_id"])
    [record] = [r for r in read_topic(
        c.settings.kafka_bootstrap, topics.REPORTS.name(c.settings.topic_prefix),
        lambda rs: any(topics.report_id_of(r.value) == rid for r in rs))
        if topics.report_id_of(r.value) == rid]
    pipeline = InProcessPipeline(c.engine, c.ref)
    pipeline.report(record.value, datetime.now(UTC))
    case_id = str(answer.json()["case_id"])
    signed = httpx.post(f"{base_url}/api/v1/tasks/{case_id}-T01/sign", json={}, timeout=60,
                        headers=callers.headers("POST", "/api/v1/tasks/{task_id}/sign"))
    t = table_of(Photo)
    with c.engine.connect() as conn:
        photo_id = conn.execute(select(t.c.id).where(t.c.case_id == case_id)).scalar()
    return Known({"report_id": rid, "case_id": case_id, "task_id": f"{case_id}-T01",
                  "ticket": case_id, "service_request_id": case_id,
                  "photo_id": str(photo_id or ""),
                  "command_id": str(signed.json().get("command_id", ""))})


@contextmanager
def live_api(settings: Settings, log_dir: Path) -> Iterator[tuple[str, Any, Settings]]:
    """The real API over HTTP on its own prefix, buckets and SQLite database; yields (base
    URL, app, settings). Its topics and buckets are removed afterwards."""
    from demo.live import LiveApi, real_deps
    from gridflow import topics
    from gridflow.core.refdata import load_reference_data
    from objectstore import make_client
    from producers.app import create_app

    prefix = f"fuzz-{uuid.uuid4().hex[:8]}"
    log_dir.mkdir(parents=True, exist_ok=True)
    settings = settings.with_(topic_prefix=prefix, bucket_incoming=f"{prefix}-incoming",
                              bucket_archive=f"{prefix}-archive",
                              database_url=f"sqlite:///{log_dir / (prefix + '.db')}")
    s3 = make_client(settings)
    topics.ensure_topics(settings.kafka_bootstrap, prefix)
    s3.make_bucket(settings.bucket_incoming)
    s3.make_bucket(settings.bucket_archive, object_lock=True)
    deps = real_deps(settings, s3, load_reference_data(settings.refdata_dir))
    try:
        app = create_app(settings, deps)
        with LiveApi(app) as api:
            yield api.url, app, settings
    finally:
        deps.engine.dispose()
        from chaos.tamper import _remove_buckets

        _remove_buckets(s3, settings)
        topics.delete_topics(settings.kafka_bootstrap, prefix)


def checks() -> list[Any]:
    from schemathesis import checks as st_checks

    return [st_checks.not_a_server_error, st_checks.status_code_conformance,
            st_checks.content_type_conformance, st_checks.response_headers_conformance,
            st_checks.response_schema_conformance,
            st_checks.negative_data_rejection]  # invalid data (negative mode) refused


def fuzz(base_url: str, callers: Callers, *, examples: int, seed: int, negative: bool = False,
         only: Callable[[str], bool] | None = None, echo: Echo = print,
         report: FuzzReport | None = None, server_errors_only: bool = False,
         known: Known | None = None) -> FuzzReport:
    """Every operation of the API's OpenAPI document, `examples` generated requests each."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given
    from hypothesis import seed as hseed
    from hypothesis import settings as hsettings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    report = report or FuzzReport("", examples, negative)
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if negative else [
        GenerationMode.POSITIVE]
    wanted = checks()[:1] if server_errors_only else checks()
    def test_for(op: Any, strategy: Any) -> Callable[[], None]:
        ids = known.for_path(op.path) if known is not None else {}

        @hsettings(max_examples=examples, derandomize=True, database=None, deadline=None,
                   suppress_health_check=list(HealthCheck),
                   phases=[Phase.explicit, Phase.generate, Phase.shrink])
        @hseed(seed)
        @given(case=strategy, real_ids=st.booleans())
        def one(case: Any, real_ids: bool) -> None:
            if real_ids and case.path_parameters:
                for name in list(case.path_parameters):
                    if ids.get(name):
                        case.path_parameters[name] = ids[name]
            # the answer itself, not where a redirect leads (a 303 is documented as such)
            response = case.call(base_url, headers=callers.headers(op.method, op.path),
                                 timeout=60, allow_redirects=False)
            report.requests += 1
            report.statuses[response.status_code] = report.statuses.get(
                response.status_code, 0) + 1
            ctype = response.headers.get("content-type") or ""
            ctype = ctype[0] if isinstance(ctype, list) else ctype
            kind = (response.status_code, ctype.split(";")[0].strip())
            seen = report.seen.setdefault(f"{op.method.upper()} {op.path}", {})
            seen[kind] = seen.get(kind, 0) + 1
            case.validate_response(response, checks=wanted)

        return one  # type: ignore[no-any-return]

    for result in schema.get_all_operations():
        op = result.ok()  # type: ignore[union-attr]  # an invalid operation raises here
        label = f"{op.method.upper()} {op.path}"
        if only is not None and not only(label):
            continue
        report.operations += 1
        who = callers.caller(op.method, op.path) or "anonymous"
        for mode in modes:
            try:
                test_for(op, op.as_strategy(generation_mode=mode))()
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # noqa: BLE001 - schemathesis' FailureGroup is a
                # BaseExceptionGroup: every failure is a finding, reported
                if type(exc).__name__ == "Unsatisfiable" and mode != GenerationMode.POSITIVE:
                    continue  # nothing to make invalid (no parameters, no body)
                failed = [str(getattr(f, "title", type(f).__name__))
                          for f in getattr(exc, "exceptions", [exc])]
                report.findings.append(Finding(label, who, failed, str(exc)))
                echo(f"  ✗ {label} ({mode.value}): {', '.join(failed)}")
                break
    return report


def run(settings: Settings, log_dir: Path, *, examples: int = 3, seed: int = 1,
        negative: bool = False, only: Callable[[str], bool] | None = None,
        echo: Echo = print, server_errors_only: bool = False) -> FuzzReport:
    import logging

    t0 = time.monotonic()
    # python-multipart logs every malformed header it skips: fuzzing sends thousands
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    with live_api(settings, log_dir) as (url, app, api_settings):
        report = FuzzReport(api_settings.topic_prefix, examples, negative)
        callers = Callers(app)
        known = seed_case(url, app, callers)
        echo(f"  seeded case {known.values['case_id']} (its ids go into half the paths)")
        fuzz(url, callers, examples=examples, seed=seed, negative=negative, only=only,
             echo=echo, report=report, server_errors_only=server_errors_only, known=known)
    report.seconds = time.monotonic() - t0
    return report


def cli(settings: Settings, log_dir: Path, options: dict[str, Any],
        echo: Echo) -> tuple[bool, list[str]]:
    """`gridflow chaos --scenario fuzz`: 25 examples per operation, valid and invalid data
    (`--full`: 100); `--seed` picks another deterministic run."""
    result = run(settings, log_dir, examples=100 if options.get("full") else 25,
                 seed=options.get("seed") or 1, negative=True, echo=echo)
    return result.clean, result.lines()
