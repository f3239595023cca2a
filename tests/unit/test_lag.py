"""Consumer lag arithmetic for `gridflow status` (infra.lag.lag_of)."""

from __future__ import annotations

from infra.lag import lag_of

NAMES = {"p.reports": "reports", "p.case-events": "case-events"}


def test_lag_is_end_minus_next_offset_summed_per_topic():
    ends = {("p.reports", 0): 10, ("p.reports", 1): 4, ("p.case-events", 0): 7,
            ("p.reports", -1): 0, ("p.reports", -2): 0, ("p.case-events", -1): 0}
    offsets = {("p.reports", 0): 8, ("p.reports", 1): 4, ("p.case-events", 0): 2}
    assert lag_of(offsets, ends, NAMES) == {"reports": 2, "case-events": 5}


def test_a_partition_never_read_counts_from_its_start_not_from_zero():
    ends = {("p.reports", 0): 10, ("p.reports", -1): 6}  # records 0..5 removed by retention
    assert lag_of(None, ends, NAMES) == {"reports": 4}
    assert lag_of({("p.reports", 0): 3}, ends, NAMES) == {"reports": 4}


def test_topics_the_consumer_does_not_read_are_left_out():
    ends = {("p.reports", 0): 10, ("p.reports", -1): 0, ("p.other", 0): 99}
    assert lag_of({}, ends, {"p.reports": "reports"}) == {"reports": 10}
