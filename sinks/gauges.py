"""Gauges read from the read models' and the notifier's tables when metrics are scraped.

Each gauge reader is given a connection and the tables present and returns its gauges (none
while its tables are missing); `DatabaseReader` runs them, and reads database consumers'
offsets, for gridflow.telemetry.PipelineCollector(database=...). The composition root
(bootstrap.commands) wires them into the sink's and the notifier's collectors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import Connection, Engine, and_, create_engine, func, inspect, or_, select, text

from gridflow.clock import Clock
from gridflow.core.case import OPEN_TASK_STATES
from sinks.models import Photo, Task, table_of
from sinks.notify_models import NOTIFICATIONS, RETRYING, SENT
from sinks.queries import _current_due


def read_model_gauges(clock: Clock) -> Callable[[Connection, set[str]], list[Metric]]:
    """Open and overdue tasks (overdue as of `clock`, domain time) and the archive backlog."""

    def read(conn: Connection, present: set[str]) -> list[Metric]:
        if not {"tasks", "photos"} <= present:
            return []
        tasks, photos = table_of(Task).c, table_of(Photo).c
        now = clock()
        is_open = tasks.state.in_(sorted(OPEN_TASK_STATES))
        due = _current_due()
        overdue = or_(and_(due.is_not(None), due < now),
                      tasks.deadline_state.in_(("overdue", "escalated")))
        n_open = conn.execute(select(func.count()).where(is_open)).scalar_one()
        n_overdue = conn.execute(select(func.count()).where(and_(is_open, overdue))).scalar_one()
        backlog = conn.execute(select(func.count()).where(
            photos.archive_status.is_(None))).scalar_one()
        return [
            GaugeMetricFamily("gridflow_tasks_open", "Tasks not closed, sent back or "
                              "cancelled (read models)", value=n_open),
            GaugeMetricFamily("gridflow_tasks_overdue", "Open tasks past the deadline "
                              "of their current stage (read models)", value=n_overdue),
            GaugeMetricFamily("gridflow_archive_backlog", "Photos in the read models "
                              "not archived yet", value=backlog),
        ]

    return read


def notification_gauges(conn: Connection, present: set[str]) -> list[Metric]:
    """Notices not delivered yet, and those whose last attempt failed."""
    if "notifications" not in present:
        return []
    c = NOTIFICATIONS.c
    pending = conn.execute(select(func.count()).where(c.status != SENT)).scalar_one()
    failing = conn.execute(select(func.count()).where(c.status == RETRYING)).scalar_one()
    return [
        GaugeMetricFamily("gridflow_notifications_pending", "Notices not delivered yet",
                          value=pending),
        GaugeMetricFamily("gridflow_notifications_failing",
                          "Notices whose last attempt failed (retrying)", value=failing),
    ]


@dataclass
class DatabaseReader:
    """gridflow.telemetry's database source: the offsets a database consumer stored and the
    gauges of `readers`, over one small engine of `url` (a dead server fails fast)."""

    url: str
    readers: tuple[Callable[[Connection, set[str]], list[Metric]], ...] = ()
    timeout_s: float = 5.0
    _engine: Engine | None = field(default=None, repr=False)

    def engine(self) -> Engine:
        if self._engine is None:
            if self.url.startswith("postgresql"):
                self._engine = create_engine(
                    self.url, pool_size=1, max_overflow=1, pool_pre_ping=True,
                    connect_args={"connect_timeout": max(1, int(self.timeout_s))})
            else:
                self._engine = create_engine(self.url)
        return self._engine

    def offsets(self, table: str, consumer: str) -> dict[tuple[str, int], int]:
        with self.engine().connect() as conn:
            if not inspect(conn).has_table(table):
                return {}
            rows = conn.execute(text(f"SELECT topic, partition, next_offset FROM {table} "
                                     "WHERE consumer = :c"), {"c": consumer}).all()
        return {(r[0], int(r[1])): int(r[2]) for r in rows}

    def gauges(self) -> list[Metric]:
        out: list[Metric] = []
        with self.engine().connect() as conn:
            present = set(inspect(conn).get_table_names())
            for read in self.readers:
                out += read(conn, present)
        return out
