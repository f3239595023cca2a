"""End-to-end fixtures: the real worker, SQL sink, ingest API and notifier as child processes on
the real stack, shared by every test of a module (see e2e_pipeline for the client).

Guarantee: each module gets its own topics, buckets, PostgreSQL database, webhook server and
children (on a scaled clock: 120 simulated seconds per real second, from a Monday morning);
all of it is stopped and removed afterwards, pass or fail. Every test here is marked `e2e`
and `integration`.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_pipeline import REF, SIM_START, SPEED, Pipeline, free_port, healthy, webhook_server

from gridflow.clock import scaled_spec
from gridflow.topics import delete_topics
from infra import services
from infra.kafka import ensure_catalogue
from infra.postgres import drop_database

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.e2e)
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def pipeline(stack: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """Worker, sink, API and notifier on this module's own topics, buckets and database."""
    import psycopg

    tag = f"e{uuid.uuid4().hex[:11]}"
    run_dir = tmp_path_factory.mktemp("e2e")
    base = stack.settings
    ensure_catalogue(stack.bootstrap, tag)
    s3 = stack.s3()
    incoming, archive = f"{tag}-incoming", f"{tag}-archive"
    s3.make_bucket(incoming)
    s3.make_bucket(archive, object_lock=True)
    admin = dict(host="127.0.0.1", port=base.postgres_port, user=base.postgres_user,
                 dbname=base.postgres_db, autocommit=True, connect_timeout=10)
    with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
        conn.execute(f'CREATE DATABASE "{tag}"')
    db_url = (f"postgresql+psycopg://{base.postgres_user}@127.0.0.1:{base.postgres_port}/"
              f"{tag}")
    spec = scaled_spec(SIM_START, SPEED)
    settings = base.with_(topic_prefix=tag, bucket_incoming=incoming, bucket_archive=archive,
                          database_url=db_url, api_port=free_port(), clock=spec,
                          faust_data_dir=run_dir / "faust", archive_retention_days=1)
    procs: list[services.Service] = []
    with webhook_server() as inbox:
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
            delete_topics(stack.bootstrap, tag)
            for bucket in (incoming, archive):
                _remove_bucket(s3, bucket)
            drop_database(admin, tag)


def _remove_bucket(s3: Any, name: str) -> None:
    """Empty and remove a bucket; objects under COMPLIANCE retention keep it (left behind)."""
    from minio.deleteobjects import DeleteObject

    versions = [DeleteObject(o.object_name, o.version_id)
                for o in s3.list_objects(name, recursive=True, include_version=True)]
    if versions and list(s3.remove_objects(name, versions, bypass_governance_mode=True)):
        return
    with contextlib.suppress(Exception):
        s3.remove_bucket(name)
