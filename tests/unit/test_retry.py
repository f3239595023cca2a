"""The one retry policy (gridflow.core.retry) and its waiting sides (gridflow.retry)."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime, timedelta

import pytest

from gridflow.core.retry import RetryPolicy
from gridflow.retry import OUTAGE_MAX_S, Backoff, outage_policy, retry_async, retry_blocking
from gridflow.telemetry import RETRIES
from tests.support.stop import RecordingStop


def retries(name: str) -> float:
    return RETRIES.labels(name)._value.get()


def test_the_delay_doubles_from_first_and_is_capped():
    policy = RetryPolicy("p", first_s=0.5, max_s=5.0)
    assert [policy.delay_s(n) for n in range(0, 8)] == [0, 0.5, 1, 2, 4, 5, 5, 5]
    assert policy.delay_s(10_000) == 5.0  # a long outage does not overflow


def test_another_factor_and_the_next_attempt():
    policy = RetryPolicy("notify-send", first_s=30, max_s=3600, factor=3)
    assert [policy.delay_s(n) for n in (1, 2, 3, 4, 5)] == [30, 90, 270, 810, 2430]
    t = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    assert policy.next_attempt(t, 2) == t + timedelta(seconds=90)


@pytest.mark.parametrize("args", [("", 1, 2), ("p", 0, 2), ("p", 3, 2), ("p", 1, 2, 0.5)])
def test_a_policy_that_cannot_work_is_refused(args):
    with pytest.raises(ValueError):
        RetryPolicy(*args)


def test_capping_lowers_the_first_delay_too():
    assert outage_policy("sink").max_s == OUTAGE_MAX_S
    capped = outage_policy("sink", 0.2)
    assert (capped.first_s, capped.max_s, capped.name) == (0.2, 0.2, "sink")


def test_backoff_waits_by_the_policy_logs_its_name_counts_and_resets(caplog):
    stop = RecordingStop()
    backoff = Backoff(RetryPolicy("unit-backoff", 1, 3), stop, logging.getLogger("t.backoff"),
                      "nothing is lost")
    before = retries("unit-backoff")
    with caplog.at_level(logging.WARNING, logger="t.backoff"):
        for _ in range(4):
            backoff.wait("Kafka is unreachable", ConnectionError("refused"))
        backoff.reset()
        backoff.wait("again", ConnectionError("refused"))
    assert stop.waited == [1, 2, 3, 3, 1]
    assert retries("unit-backoff") - before == 5
    first = caplog.records[0].getMessage()
    assert first == ("Kafka is unreachable (ConnectionError: refused); retrying in 1.0s "
                     "[unit-backoff], nothing is lost")


def test_retry_blocking_returns_after_failures_and_raises_the_last_with_attempts():
    calls: list[int] = []

    def flaky(n: int) -> str:
        calls.append(n)
        if len(calls) < 3:
            raise OSError("down")
        return "ok"

    fast = RetryPolicy("unit-blocking", 0.001, 0.001)
    assert retry_blocking(fast, "flaky", flaky, 7) == "ok" and calls == [7, 7, 7]
    with pytest.raises(OSError, match="always"):
        retry_blocking(fast, "never", lambda: (_ for _ in ()).throw(OSError("always")),
                       attempts=2)


def test_retry_async_runs_in_a_thread_until_it_succeeds(caplog):
    calls: list[str] = []

    def flaky() -> str:
        calls.append(threading.current_thread().name)
        if len(calls) < 3:
            raise ConnectionError("minio down")
        return "archived"

    before = retries("unit-async")
    with caplog.at_level(logging.WARNING, logger="t.async"):
        got = asyncio.run(retry_async(RetryPolicy("unit-async", 0.001, 0.002), "archive x",
                                      flaky, logger=logging.getLogger("t.async")))
    assert got == "archived" and len(calls) == 3
    assert threading.main_thread().name not in calls  # blocking I/O stays off the event loop
    assert retries("unit-async") - before == 2
    assert "archive x failed (ConnectionError: minio down); retrying in" in caplog.text
