"""Shared fixtures: the real local stack (Kafka, MinIO, PostgreSQL) and per-test isolation on it.

Guarantee: the stack is started at most once per session (or an already running one is
reused and left running); each test gets its own topics, buckets and databases.
"""

from __future__ import annotations

import contextlib
import re
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gridflow.settings import Settings, load_settings
from gridflow.topics import delete_topics
from infra import stack as infra_stack
from infra.kafka import ensure_catalogue
from infra.minio import client as minio_client
from infra.postgres import drop_database
from tests.support.tenant import admin_connection, remove_bucket

_install_error: list[str] = []


# --- live progress output (pytest captures output by default) -------------------------


@contextlib.contextmanager
def _live(config: pytest.Config) -> Iterator[None]:
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        yield
        return
    with capman.global_and_fixture_disabled():
        yield


def _say(message: str) -> None:
    print(f"[stack] {message}", file=sys.stderr, flush=True)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Download/build the servers before any test runs, so a first-time build (minutes)
    is not charged to the first test's timeout."""
    if session.config.option.collectonly:
        return
    if not any("stack" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    with _live(session.config):
        try:
            infra_stack.install(load_settings(), echo=_say)
        except Exception as exc:  # reported by the `stack` fixture, in the tests that need it
            _install_error.append(f"installing the local stack failed: {exc}")


# --- the stack --------------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    """The running local stack and how to reach it."""

    settings: Settings
    started: list[str]  # servers this session started and will stop at its end

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka_bootstrap

    def s3(self):  # type: ignore[no-untyped-def]
        return minio_client(self.settings, timeout_s=30, retries=2)

    @property
    def postgres_admin_url(self) -> str:
        return self.settings.postgres_url


@pytest.fixture(scope="session")
def stack(pytestconfig: pytest.Config) -> Iterator[Stack]:
    """Kafka, MinIO and PostgreSQL up for the whole session; reuses servers already running."""
    if _install_error:
        pytest.fail(_install_error[0], pytrace=False)
    settings = load_settings()
    with _live(pytestconfig):
        try:
            started = infra_stack.join_test_session(settings, echo=_say)
        except (infra_stack.StackError, infra_stack.ServerError, TimeoutError) as exc:
            pytest.fail(f"the local stack did not come up:\n{exc}", pytrace=False)
        if infra_stack.only_test_session(settings):
            _sweep_test_topics(settings.kafka_bootstrap)
    try:
        yield Stack(settings, started)
    finally:
        with _live(pytestconfig):
            infra_stack.leave_test_session(settings, echo=_say)


def _unique(tag: str = "t") -> str:
    return f"{tag}{uuid.uuid4().hex[:12]}"


# The topic prefixes tests make: _unique() ("t" + 12 hex digits) and the module fixtures'
# "b", "e", "w" + 11. Nothing else names a topic so (the demo's are "demo<time>", a run's
# "bench…", "chaos-…", a deployment's "gridflow" or its own).
TEST_TOPIC = re.compile(r"^(t[0-9a-f]{12}|[bew][0-9a-f]{11})[.-]")


def _sweep_test_topics(bootstrap: str) -> None:
    """Delete the topics earlier test sessions left behind (a session killed before its
    teardown). Only called when no other test session is running, so none is in use; they
    would otherwise pile up run after run, and a broker loads every one of them on start."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=60000)
    try:
        left = sorted(t for t in admin.list_topics() if TEST_TOPIC.match(t))
        for i in range(0, len(left), 200):
            admin.delete_topics(left[i:i + 200], timeout_ms=60000)
    finally:
        admin.close()
    if left:
        _say(f"deleted {len(left)} topics left behind by earlier test sessions")


# --- Kafka --------------------------------------------------------------------------------


@pytest.fixture
def topic_prefix(stack: Stack) -> Iterator[str]:
    """A fresh topic prefix with every catalogue topic created under it; deleted afterwards
    together with any topic whose name starts with it (e.g. faust changelogs of app id
    f"{prefix}-...")."""
    prefix = _unique()
    ensure_catalogue(stack.bootstrap, prefix)
    yield prefix
    delete_topics(stack.bootstrap, prefix)


# --- MinIO --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Buckets:
    incoming: str
    archive: str  # created with object lock, like the real archive bucket


@pytest.fixture
def bucket_prefix() -> str:
    """A unique, S3-valid prefix for bucket names."""
    return _unique()


@pytest.fixture
def buckets(stack: Stack, bucket_prefix: str) -> Iterator[Buckets]:
    """Fresh incoming and archive (object lock) buckets; emptied and removed afterwards.
    Objects under an unexpired COMPLIANCE retention cannot be removed and are left."""
    s3 = stack.s3()
    made = Buckets(f"{bucket_prefix}-incoming", f"{bucket_prefix}-archive")
    s3.make_bucket(made.incoming)
    s3.make_bucket(made.archive, object_lock=True)
    yield made
    for name in (made.incoming, made.archive):
        remove_bucket(s3, name)


@pytest.fixture
def stack_settings(stack: Stack, topic_prefix: str, buckets: Buckets, sqlite_url: str) -> Settings:
    """Settings pointing a component at this test's own topics, buckets and SQLite file."""
    return stack.settings.with_(
        topic_prefix=topic_prefix, bucket_incoming=buckets.incoming,
        bucket_archive=buckets.archive, database_url=sqlite_url,
    )


# --- databases ----------------------------------------------------------------------------


@pytest.fixture
def pg_url(stack: Stack) -> Iterator[str]:
    """SQLAlchemy URL of a fresh PostgreSQL database (owner `gridflow`), dropped afterwards."""
    import psycopg

    settings = stack.settings
    name = _unique("t_")
    admin = admin_connection(settings)
    with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
        conn.execute(f'CREATE DATABASE "{name}"')
    yield (f"postgresql+psycopg://{settings.postgres_user}@127.0.0.1:{settings.postgres_port}/"
           f"{name}")
    drop_database(admin, name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """SQLAlchemy URL of a fresh SQLite file in the test's tmp_path."""
    return f"sqlite:///{tmp_path / 'gridflow.db'}"
