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
