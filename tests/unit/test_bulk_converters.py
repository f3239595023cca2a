"""sinks.bulk.converters: a timestamp column's conversion is remembered per value, and gives
what the column type's own conversion gives for every value, in any order."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from sinks.bulk import converters
from sinks.models import CaseEvent, table_of, utc_datetime, utc_text


@pytest.mark.parametrize("dialect, plain", [(sqlite.dialect(), utc_text),
                                            (postgresql.dialect(), utc_datetime)])
def test_a_remembered_timestamp_conversion_equals_the_plain_one(dialect, plain) -> None:
    fn = {name: f for name, _, f in converters(table_of(CaseEvent), dialect)}["at"]
    base = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
    values: list = [None]
    for k in range(50):
        t = base + timedelta(minutes=k, microseconds=k)
        values += [t, t.astimezone(timezone(timedelta(hours=8))),  # the same instant
                   t.isoformat().replace("+00:00", "Z"), t.astimezone(
                       timezone(timedelta(hours=-5))).isoformat()]
    rnd = random.Random(5)
    for _ in range(3):
        rnd.shuffle(values)
        for v in values:
            got, want = fn(v), plain(v)
            assert got == want and repr(got) == repr(want), v
    naive = datetime(2026, 11, 2, 1, 0)
    for _ in range(2):  # refused each time, never remembered
        with pytest.raises(ValueError, match="naive"):
            fn(naive)
    with pytest.raises(Exception):  # noqa: B017 - what the plain one raises
        plain("not a time")
    with pytest.raises(Exception):  # noqa: B017
        fn("not a time")


@pytest.mark.parametrize("as_dict", [False, True])
def test_a_row_maker_gives_what_the_per_column_loop_gives(as_dict: bool) -> None:
    from sqlalchemy import JSON

    from sinks.bulk import row_maker
    from sinks.models import Base, UTCDateTime

    rnd = random.Random(11)
    for model in Base.__subclasses__():
        table = table_of(model)
        convert = converters(table, sqlite.dialect())
        make = row_maker(convert, table.name, as_dict=as_dict)
        for _ in range(40):
            full = {c.name: (datetime(2026, 11, 2, tzinfo=UTC) + timedelta(seconds=rnd.random())
                             if isinstance(c.type, UTCDateTime)
                             else {"k": [rnd.random()]} if isinstance(c.type, JSON)
                             else f"{c.name}-{rnd.random()}") for c in table.columns}
            row = {k: v for k, v in full.items() if rnd.random() < 0.8}  # some missing
            if rnd.random() < 0.5:
                row["not_a_column"] = 1  # and keys that are not columns
            want = ({c: fn(row.get(c, d)) for c, d, fn in convert} if as_dict
                    else tuple(fn(row.get(c, d)) for c, d, fn in convert))
            assert make(row) == want, (table.name, row)


def test_every_column_converted_alike_shares_one_memory() -> None:
    from sinks.models import Task, TaskHistory

    dialect = sqlite.dialect()
    at = datetime(2026, 11, 2, 1, 0, 0, 7, tzinfo=UTC)
    ledger = {n: f for n, _, f in converters(table_of(CaseEvent), dialect)}["at"]
    history = {n: f for n, _, f in converters(table_of(TaskHistory), dialect)}["at"]
    task = {n: f for n, _, f in converters(table_of(Task), dialect)}["updated_at"]
    first = ledger(at)
    assert first == utc_text(at)
    assert history(at) is first and task(at) is first  # converted once, not per column
    assert utc_text(at) is not first  # (a conversion makes a new string each time)
