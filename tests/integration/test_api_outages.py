"""The phone upload while the object store is down: a clear 503 in Chinese, nothing on the
log, nothing half-written; the phone's retry after the outage is accepted."""

from __future__ import annotations

from typing import Any

import pytest
from faults import FlakyProxy
from minio import Minio
from test_api_reports import build_deps, new_report, photo, sign_in, upload

from demo.live import LiveApi, read_topic
from gridflow import topics
from gridflow.settings import Settings
from producers.app import create_app
from tests.support.api import chinese, report_id_of

pytestmark = pytest.mark.integration


def test_object_store_down_answers_503_publishes_nothing_and_the_retry_succeeds(
    stack: Any, stack_settings: Settings
) -> None:
    host, port = stack.settings.s3_endpoint.split(":")
    proxy = FlakyProxy(host, int(port))
    proxy.down()
    s = stack.settings
    flaky_s3 = Minio(proxy.address, access_key=s.s3_access_key, secret_key=s.s3_secret_key,
                     secure=False, region=s.s3_region)
    report = new_report()
    jpegs = [photo(40), photo(41)]
    try:
        deps = build_deps(stack_settings, flaky_s3)
        with LiveApi(create_app(stack_settings, deps)) as api:
            sign_in(api.url, deps)
            r = upload(api.url, report, jpegs)
        assert r.status_code == 503, r.text
        assert int(r.headers["Retry-After"]) > 0
        assert chinese(r.json()["message_zh"])
        proxy.up()
        deps = build_deps(stack_settings, flaky_s3)
        with LiveApi(create_app(stack_settings, deps)) as api:
            sign_in(api.url, deps)
            again = upload(api.url, report, jpegs)
        assert again.status_code == 202, again.text
    finally:
        proxy.down()
    records = read_topic(stack_settings.kafka_bootstrap,
                         topics.REPORTS.name(stack_settings.topic_prefix),
                         lambda rs: len(rs) >= 1, timeout_s=60)
    assert [report_id_of(rec) for rec in records] == [report["report_id"]]  # exactly once
    real = stack.s3()
    assert len(list(real.list_objects(stack_settings.bucket_incoming, recursive=True))) == 2
