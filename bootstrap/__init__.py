"""The composition root: `bootstrap(settings)` builds what a gridflow process runs on.

Every entry point (the `gridflow` commands in bootstrap.commands and their siblings in
audit/, dashboard/, producers/, accounts/, mobile/, demo/) calls it once and hands the pieces
to the code it runs; tests that need a planner, a calendar or a client take them from here too.
The cheap pieces (settings, clock) are made at once; the rest on first use, then kept:
a worker that archives no photo never opens a MinIO client, a CLI that reads no database
never makes an engine. Adapters never import this package (import-linter says so).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from gridflow.clock import Clock, clock_from_spec
from gridflow.core.calendar import UNKNOWN_YEARS_WEEKDAYS, WorkingCalendar, load_bundled_calendar
from gridflow.core.refdata import ReferenceData, load_reference_data
from gridflow.core.sla import SlaPlanner, load_bundled_policy
from gridflow.settings import Settings, load_settings

if TYPE_CHECKING:
    from minio import Minio
    from sqlalchemy import Engine

    from producers.publisher import KafkaPublisher


def working_calendar(settings: Settings | None = None) -> WorkingCalendar:
    """The calendar of `settings` (its calendar directory, read now: a year added there is
    picked up by restarting the process), or the bundled one; past its last configured year,
    plain Monday-Friday.

    Refusing every deadline that reaches into a year whose holiday notice is not yet
    configured would stop dispatch at year end; the worker's log, `gridflow status` and the
    supervisors' board warn 60 days ahead instead (gridflow.calendars).
    """
    from gridflow.calendars import load_working_calendar

    cal = load_working_calendar(settings) if settings is not None else load_bundled_calendar()
    return replace(cal, unknown_years=UNKNOWN_YEARS_WEEKDAYS)


def bundled_planner() -> SlaPlanner:
    """The bundled deadline policy over the bundled calendar (what a test without settings
    plans with)."""
    return SlaPlanner(load_bundled_policy(), working_calendar())


@dataclass(frozen=True)
class Bundle:
    """One process's world. Frozen: a piece is made once (first use) and never replaced."""

    settings: Settings
    clock: Clock
    _engines: dict[tuple[str, tuple[tuple[str, Any], ...]], Engine] = field(
        default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @cached_property
    def ref(self) -> ReferenceData:
        """The reference data (departments, grids, categories) of settings.refdata_dir."""
        return load_reference_data(self.settings.refdata_dir)

    @cached_property
    def calendar(self) -> WorkingCalendar:
        """The working calendar with its fallback (`working_calendar`); a bad calendar file
        raises CalendarError naming the file and the date."""
        return working_calendar(self.settings)

    @cached_property
    def planner(self) -> SlaPlanner:
        """The bundled deadline policy over this deployment's working calendar."""
        return SlaPlanner(load_bundled_policy(), self.calendar)

    @cached_property
    def object_store(self) -> Minio:
        """A MinIO client for settings' server (the SDK's own connection pool)."""
        from objectstore import make_client

        return make_client(self.settings)

    def engine(self, url: str | None = None, **pool: Any) -> Engine:
        """The engine of `url` (default settings.database_url) with `pool` arguments, one per
        distinct (url, pool) in this process. A SQLite file's directory is created."""
        from sinks.models import make_engine

        url = url or self.settings.database_url
        key = (url, tuple(sorted(pool.items())))
        with self._lock:
            if key not in self._engines:
                if url.startswith("sqlite:///"):
                    self.settings.state_dir.mkdir(parents=True, exist_ok=True)
                self._engines[key] = make_engine(url, **pool)
            return self._engines[key]

    @cached_property
    def publisher(self) -> KafkaPublisher:
        """The idempotent Kafka publisher (acks=all) of settings' brokers."""
        from producers.publisher import KafkaPublisher

        return KafkaPublisher(self.settings.kafka_bootstrap)


def bootstrap(settings: Settings | None = None, clock: Clock | None = None) -> Bundle:
    """The bundle of `settings` (default: from the environment, GRIDFLOW_*) on `clock`
    (default: settings.clock, the wall clock or a simulated one)."""
    settings = settings if settings is not None else load_settings()
    return Bundle(settings=settings, clock=clock or clock_from_spec(settings.clock))


__all__ = ["Bundle", "bootstrap", "bundled_planner", "working_calendar"]
