"""Read models side by side: a live database against a replayed one, table by table, row by row.

Adapter over two SQLAlchemy connections, streaming (rows ordered by primary key in byte order
on both databases, merged, never all held in memory). Guarantee: every column derived from
events is compared, normalised (UTC instants, canonical JSON), so SQLite and PostgreSQL
compare equal when they hold the same facts; only bookkeeping is left out, and it is named:
the sink's positions and the schema stamp (wall-clock times), and where a ledger row was read
from (topic, partition, offset — the hash chain check covers the ledger itself).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, String, Table, func, inspect, select

from gridflow.events import canonical_json, iso
from sinks.models import Base

SKIP_TABLES = {
    "sink_offsets": "the sink's own positions; updated_at is wall-clock time",
    "schema_version": "when the schema was created (wall-clock time)",
}
IGNORED_COLUMNS = {
    "case_events": {
        "topic": "where the sink read the event (the hash chain check covers the ledger)",
        "partition": "where the sink read the event",
        "offset": "where the sink read the event",
    },
}

ONLY_LIVE, ONLY_REPLAY, CHANGED = "only_in_live", "only_in_replay", "changed"
KIND_ZH = {ONLY_LIVE: "仅在线上库中", ONLY_REPLAY: "线上库缺少此行", CHANGED: "内容不一致"}


class NotEmpty(RuntimeError):
    """A replay target that already holds data."""


@dataclass
class RowDiff:
    table: str
    key: dict[str, Any]
    case_id: str
    kind: str
    columns: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # name -> (live, replay)

    def render(self) -> str:
        key = ", ".join(f"{k}={v}" for k, v in self.key.items())
        head = f"{self.table} [{key}] 案件 case {self.case_id or '?'}: {KIND_ZH[self.kind]} / {self.kind}"
        cols = "; ".join(f"{c}: live={_short(a)} replay={_short(b)}"
                         for c, (a, b) in self.columns.items())
        return head + (f" — {cols}" if cols else "")


@dataclass
class TableResult:
    table: str
    live_rows: int = 0
    replay_rows: int = 0
    differences: int = 0


@dataclass
class CompareReport:
    tables: list[TableResult] = field(default_factory=list)
    diffs: list[RowDiff] = field(default_factory=list)  # the first `max_diffs`
    total_differences: int = 0

    @property
    def clean(self) -> bool:
        return self.total_differences == 0


def compared_tables() -> list[Table]:
    return [t for t in Base.metadata.sorted_tables if t.name not in SKIP_TABLES]


def compare(live: Connection, replay: Connection, max_diffs: int = 50) -> CompareReport:
    report = CompareReport()
    for table in compared_tables():
        result = TableResult(table.name)
        cols = [c.name for c in table.columns if c.name not in IGNORED_COLUMNS.get(table.name, {})]
        pk = [c.name for c in table.primary_key.columns]
        left, right = _rows(live, table, cols, pk), _rows(replay, table, cols, pk)
        a, b = next(left, None), next(right, None)
        while a is not None or b is not None:
            if b is None or (a is not None and a[0] < b[0]):
                result.live_rows += 1
                _note(report, result, table, pk, a[1], ONLY_LIVE, max_diffs)  # type: ignore[index]
                a = next(left, None)
            elif a is None or b[0] < a[0]:
                result.replay_rows += 1
                _note(report, result, table, pk, b[1], ONLY_REPLAY, max_diffs)
                b = next(right, None)
            else:
                result.live_rows += 1
                result.replay_rows += 1
                changed = {c: (a[1][c], b[1][c]) for c in cols
                           if _norm(a[1][c]) != _norm(b[1][c])}
                if changed:
                    _note(report, result, table, pk, a[1], CHANGED, max_diffs, changed)
                a, b = next(left, None), next(right, None)
        report.tables.append(result)
    return report


def _note(report: CompareReport, result: TableResult, table: Table, pk: list[str],
          row: dict[str, Any], kind: str, max_diffs: int,
          columns: dict[str, tuple[Any, Any]] | None = None) -> None:
    result.differences += 1
    report.total_differences += 1
    if len(report.diffs) < max_diffs:
        report.diffs.append(RowDiff(table.name, {k: row[k] for k in pk},
                                    str(row.get("case_id") or ""), kind, columns or {}))


def _rows(conn: Connection, table: Table, cols: list[str],
          pk: list[str]) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    """(normalised key, row) in primary-key byte order; byte order on PostgreSQL too."""
    pg = conn.dialect.name == "postgresql"
    order = [table.c[k].collate("C") if pg and isinstance(table.c[k].type, String) else table.c[k]
             for k in pk]
    query = select(*[table.c[c] for c in cols]).order_by(*order)
    result = conn.execution_options(stream_results=True, yield_per=2000).execute(query)
    for row in result.mappings():
        d = dict(row)
        yield tuple(_key(d[k]) for k in pk), d


def _key(value: Any) -> Any:
    return value if isinstance(value, (int, str)) else str(value)


def _norm(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, (dict, list)):
        return canonical_json(value)
    return value


def _short(value: Any, width: int = 60) -> str:
    text = iso(value) if isinstance(value, datetime) else repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


# --- the replay target --------------------------------------------------------------------


def table_counts(conn: Connection) -> dict[str, int]:
    return {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar() or 0)
            for t in compared_tables()}


def assert_empty(engine: Engine) -> None:
    """Refuse a database that has any table with rows, or tables that are not read models."""
    url = engine.url.render_as_string(hide_password=True)
    with engine.connect() as conn:
        names = set(inspect(conn).get_table_names())
        ours = {t.name for t in Base.metadata.sorted_tables}
        foreign = sorted(names - ours)
        if foreign:
            raise NotEmpty(f"{url} is not empty: it has other tables ({', '.join(foreign[:8])}); "
                           "replay needs an empty database / 目标库非空, 请指定空数据库")
        filled = []
        for table in Base.metadata.sorted_tables:
            if table.name in names and table.name != "schema_version":
                n = int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)
                if n:
                    filled.append(f"{table.name} {n}")
        if filled:
            raise NotEmpty(f"{url} is not empty ({', '.join(filled)} rows); replay needs an empty "
                           "database: create a new one or drop these tables / 目标库非空")
