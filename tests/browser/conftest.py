"""Browser tests: Debian's Chromium driven by Playwright, at phone size, against the real API on
the real stack (Kafka, MinIO, PostgreSQL). Reusable by every page of gridflow.

Fixtures:
- `browser` (session): one headless Chromium, /usr/bin/chromium launched with `executable_path`
  (Playwright's own browser download cannot reach its servers here); Playwright gives every
  launch a fresh temporary user-data-dir and removes it on close.
- `new_phone` / `phone`: a fresh browser context (its own cookies, IndexedDB, cache and service
  workers) the size of a phone (390×844, touch, zh-CN, Beijing time).
- `site` (module): the ingest API (`producers.app.create_app` with the real adapters) served over
  HTTP by uvicorn in this process, on this module's own topics, buckets and PostgreSQL
  database, with the pipeline behind it (`Pump`: the processors' steps and the real SQL sink,
  fed from Kafka in a thread), so a report filed in the browser becomes a dispatched case.
- `shoot(page, name)`: a screenshot at phone size; into docs/screenshots/ when
  GRIDFLOW_SCREENSHOTS=1 (`make screenshots`), else the test's tmp dir.

Every test here is marked `browser` and `integration`.

The pages' CSP allows no eval(): `page.wait_for_function("...")` fails as soon as it has to
poll; poll `page.evaluate("...")` from the test instead (`wait_for`), or wait on a locator.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.support.tenant import tenant

HERE = Path(__file__).parent
REPO = HERE.parent.parent
SCREENSHOTS = REPO / "docs" / "screenshots"
CHROMIUM = os.environ.get("GRIDFLOW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
PHONE = {"width": 390, "height": 844}
log = logging.getLogger(__name__)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.integration)


# --- the browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Module scope, not session: Playwright's sync API keeps an asyncio loop running in the
    # main thread while it is open, and every later test that calls asyncio.run() (the unit
    # tests, the benchmarks' smoke test) would fail with "cannot be called from a running
    # event loop". A browser per module is started in about a second.
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run tests/browser/install_chromium.sh "
                    "(make test does)", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def phone_options(**overrides: Any) -> dict[str, Any]:
    """Browser-context options of a phone: size, touch, language and time zone."""
    return {"viewport": PHONE, "screen": PHONE, "device_scale_factor": 2, "is_mobile": True,
            "has_touch": True, "locale": "zh-CN", "timezone_id": "Asia/Shanghai",
            "user_agent": ("Mozilla/5.0 (Linux; Android 13; gridflow-test) AppleWebKit/537.36 "
                           "(KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36"),
            **overrides}


@pytest.fixture
def new_phone(browser: Any) -> Iterator[Callable[..., Any]]:
    """`new_phone(geolocation=..., permissions=[...])` → a fresh context, closed afterwards."""
    made: list[Any] = []

    def make(**overrides: Any) -> Any:
        context = browser.new_context(**phone_options(**overrides))
        context.set_default_timeout(20_000)
        made.append(context)
        return context

    yield make
    for context in made:
        with contextlib.suppress(Exception):
            context.close()


@pytest.fixture
def phone(new_phone: Callable[..., Any]) -> Any:
    return new_phone()


@pytest.fixture
def shoot(tmp_path: Path) -> Callable[[Any, str], Path]:
    """Save a screenshot of the page's viewport (phone size) as <name>.png."""
    keep = os.environ.get("GRIDFLOW_SCREENSHOTS") == "1"

    def take(page: Any, name: str) -> Path:
        target = (SCREENSHOTS if keep else tmp_path) / f"{name}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target), animations="disabled", caret="hide")
        return target

    return take


# --- gridflow behind the browser ---------------------------------------------------------------


class Pump:
    """The pipeline behind the API for browser tests: reads the reports and case-commands topics
    (what the API publishes) and runs them through demo.live.InProcessPipeline (the
    processors' pure steps and the real SQL sink) in one thread, in the order they arrive."""

    def __init__(self, bootstrap: str, prefix: str, engine: Any, ref: Any) -> None:
        from demo.live import InProcessPipeline
        from gridflow import topics

        self.pipeline = InProcessPipeline(engine, ref)
        self.bootstrap = bootstrap
        self.reports = topics.REPORTS.name(prefix)
        self.commands = topics.CASE_COMMANDS.name(prefix)
        self.errors: list[str] = []
        self.seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pump", daemon=True)

    def __enter__(self) -> Pump:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(self.reports, self.commands, bootstrap_servers=self.bootstrap,
                                 group_id=None, auto_offset_reset="earliest",
                                 enable_auto_commit=False)
        try:
            while not self._stop.is_set():
                for batch in consumer.poll(timeout_ms=200).values():
                    for record in batch:
                        self._one(record)
        finally:
            consumer.close()

    def _one(self, record: Any) -> None:
        now = datetime.now(UTC)
        try:
            if record.topic == self.reports:
                self.pipeline.report(record.value, now)
            else:
                self.pipeline.command(record.value, record.key.decode(), now)
        except Exception as exc:  # noqa: BLE001 - a test asserts `errors` is empty
            log.exception("pump: %s@%s", record.topic, record.offset)
            self.errors.append(f"{record.topic}@{record.offset}: {exc!r}")
        self.seen += 1


@dataclass
class Site:
    """The API a browser test talks to, and what lies behind it."""

    url: str
    settings: Any
    deps: Any
    app: Any
    pump: Pump
    passwords: dict[str, str] = field(default_factory=dict)
    imported: bool = False

    @property
    def engine(self) -> Any:
        return self.deps.engine

    @property
    def accounts(self) -> Any:
        return self.app.state.accounts

    def password(self, login: str) -> str:
        """A password for a sample-county person (set once through a one-time code)."""
        login = login.lower()
        if login not in self.passwords:
            store = self.people()
            code = store.reset_password(login, "browser-tests")
            password = f"青山-巡检-{uuid.uuid4().hex[:10]}"
            store.set_password(login, code, password, "127.0.0.1")
            self.passwords[login] = password
        return self.passwords[login]

    def people(self) -> Any:
        """The account store, with the sample county's people in it (imported once)."""
        from accounts.people import county_people, import_people

        store = self.accounts
        if not self.imported:
            import_people(store, county_people(store.ref), "browser-tests")
            self.imported = True
        return store

    def bearer(self, login: str) -> dict[str, str]:
        """Headers of a session of the person, for setting the scene over HTTP."""
        token = self.people().open_session(login.lower(), "browser-tests", "browser-tests").token
        return {"Authorization": f"Bearer {token}"}

    def rows(self, model: Any, *where: Any) -> list[Any]:
        from sqlalchemy import select
        from sqlalchemy.orm import Session

        with Session(self.engine) as session:
            return list(session.execute(select(model).where(*where)).scalars())


@pytest.fixture(scope="module")
def site(stack: Any) -> Iterator[Site]:
    """The API on this module's own topics, buckets and PostgreSQL database, the pipeline
    behind it; all removed afterwards, pass or fail."""
    from demo.live import LiveApi, real_deps
    from gridflow.core.refdata import load_reference_data
    from producers.app import create_app

    with tenant(stack, f"b{uuid.uuid4().hex[:11]}") as own:
        settings = own.settings(stack.settings)
        ref = load_reference_data(settings.refdata_dir)
        deps = real_deps(settings, own.s3, ref)
        try:
            app = create_app(settings, deps)
            with LiveApi(app) as api, Pump(stack.bootstrap, own.tag, deps.engine, ref) as pump:
                yield Site(api.url, settings, deps, app, pump)
        finally:
            deps.engine.dispose()


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    from tests.waiting import wait_until

    return wait_until(what, probe, timeout_s)

