"""The read-model rows one batch touches, by primary key, in memory: what changed since they were
loaded, and an undo of everything one event touched.

Guarantee: after `undo()` every row touched since `begin()` is as it was (rows added since are
gone, and a row that was clean before is clean again), so a failing event leaves no trace.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import Column, select
from sqlalchemy.orm import Session

from sinks.bulk import bulk_write, column_default
from sinks.models import Base, table_of

IN_CHUNK = 500  # values per IN (...) list: well under every database's parameter limit


def in_chunks(values: Iterable[Any]) -> Iterator[list[Any]]:
    items = sorted(set(values), key=str)
    for i in range(0, len(items), IN_CHUNK):
        yield items[i : i + IN_CHUNK]


class Rows:
    """The rows of one table a batch touches, by primary key, with what changed since loading.

    While an event is folded every first touch of a row is journalled, so a failing event
    can be undone.
    """

    def __init__(self, model: type[Base], key: str) -> None:
        self.table = table_of(model)
        self.key = key
        self.rows: dict[Any, dict[str, Any]] = {}
        self.dirty: dict[Any, None] = {}  # ordered set
        self.journal: dict[Any, tuple[dict[str, Any] | None, bool]] | None = None
        self._blank = {c.name: column_default(c) for c in self.table.columns}

    def load(self, session: Session, column: str, values: Iterable[Any]) -> list[dict[str, Any]]:
        col: Column[Any] = self.table.c[column]
        loaded = []
        for chunk in in_chunks(values):
            result = session.execute(select(self.table).where(col.in_(chunk)))
            names = list(result.keys())
            for found in result.all():
                row = dict(zip(names, found, strict=True))
                key = row[self.key]
                if key not in self.rows:
                    self.rows[key] = row
                    loaded.append(self.rows[key])
        return loaded

    def get(self, key: Any) -> dict[str, Any] | None:
        return self.rows.get(key)

    def edit(self, key: Any) -> dict[str, Any]:
        row = self.rows[key]
        self._remember(key, row)
        self.dirty[key] = None
        return row

    def add(self, **values: Any) -> dict[str, Any]:
        key = values[self.key]
        self._remember(key, self.rows.get(key))
        row = {**self._blank, **values}
        if key in self.rows:
            self.rows[key].update(row)
            row = self.rows[key]
        else:
            self.rows[key] = row
        self.dirty[key] = None
        return row

    def _remember(self, key: Any, row: dict[str, Any] | None) -> None:
        if self.journal is not None and key not in self.journal:
            self.journal[key] = (None if row is None else dict(row), key in self.dirty)

    def begin(self) -> None:
        self.journal = {}

    def commit(self) -> None:
        self.journal = None

    def undo(self) -> list[Any]:
        """Restore every row touched since begin(); returns the keys of rows it removed."""
        removed = []
        for key, (before, was_dirty) in (self.journal or {}).items():
            if before is None:
                self.rows.pop(key, None)
                removed.append(key)
            else:
                self.rows[key].clear()
                self.rows[key].update(before)
            if not was_dirty:
                self.dirty.pop(key, None)
        self.journal = None
        return removed

    def flush(self, session: Session) -> None:
        dirty = [self.rows[k] for k in self.dirty]
        if not dirty:
            return
        bulk_write(session, self.table, "upsert", dirty)
        self.dirty.clear()
