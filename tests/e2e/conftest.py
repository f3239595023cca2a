"""End-to-end fixtures: the real worker, SQL sink, ingest API and notifier as child processes on
the real stack, shared by every test of a module (see e2e_pipeline for the client).

Guarantee: each module gets its own topics, buckets, PostgreSQL database, webhook server and
children (on a scaled clock: 120 simulated seconds per real second, from a Monday morning);
all of it is stopped and removed afterwards, pass or fail. Every test here is marked `e2e`
and `integration`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_pipeline import REF, SIM_START, SPEED, Pipeline, free_port, healthy, webhook_server

from gridflow.clock import scaled_spec
from infra import services
from tests.support.tenant import tenant

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def pipeline(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """Worker, sink, API and notifier on this module's own topics, buckets and database."""
    tag = f"e{uuid.uuid4().hex[:11]}"
    run_dir = tmp_path_factory.mktemp("e2e")
    spec = scaled_spec(SIM_START, SPEED)
    procs: list[services.Service] = []
    with tenant(stack, tag) as own, webhook_server() as inbox:
        settings = own.settings(stack.settings, api_port=free_port(), clock=spec,
                                faust_data_dir=run_dir / "faust", archive_retention_days=1)
        config = run_dir / "notify.json"
        config.write_text(json.dumps({
            "retry": {"first_s": 0.5, "max_s": 5},
            "departments": {code: {"method": "webhook", "url": f"{inbox.url}/{code}"}
                            for code in REF.departments},
        }), encoding="utf-8")
        try:
            procs = [
                services.start("worker", ["worker", "--loglevel", "info"], settings, run_dir),
                services.start("sink", ["sink"], settings, run_dir),
                services.start("api", ["api"], settings, run_dir),
                services.start("notify", ["notify", "--config", str(config)], settings, run_dir),
            ]
            p = Pipeline(settings, procs, inbox, spec)
            p.wait("the API to answer", lambda: healthy(p), timeout_s=60)
            yield p
        finally:
            for proc in procs:
                proc.stop()
