"""Waiting out failures by a RetryPolicy (gridflow.core.retry): in a thread, interruptibly, or
in a coroutine; every failure is logged with the policy's name and counted in
`gridflow_retries_total{policy}`.

Guarantee: nothing is given up: the caller retries until it succeeds or is stopped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from gridflow.core.retry import RetryPolicy
from gridflow.telemetry import RETRIES

T = TypeVar("T")

# A server that comes back is noticed within OUTAGE_MAX_S (chaos storage-outage: with a cap of
# 30 s the sink, the notifier and the archive found PostgreSQL and MinIO up to 30 s late).
OUTAGE_FIRST_S = 0.5
OUTAGE_MAX_S = 5.0


def outage_policy(name: str, max_s: float = OUTAGE_MAX_S) -> RetryPolicy:
    """The policy of a process waiting for Kafka, the database or the object store."""
    return RetryPolicy(name, OUTAGE_FIRST_S, OUTAGE_MAX_S).capped_at(max_s)


class Backoff:
    """One loop's failures in a row under a policy: `wait` logs the failure, counts it and
    sleeps the policy's delay (returning early once `stop` is set); `reset` after a success."""

    def __init__(self, policy: RetryPolicy, stop: threading.Event | None = None,
                 logger: logging.Logger | None = None, consequence: str = "") -> None:
        self.policy = policy
        self.stop = stop or threading.Event()
        self.log = logger or logging.getLogger("gridflow.retry")
        self.consequence = consequence  # what the log line adds, e.g. why nothing is lost
        self.failures = 0

    @property
    def delay_s(self) -> float:
        """What the next `wait` sleeps."""
        return self.policy.delay_s(self.failures + 1)

    def wait(self, what: str, exc: BaseException) -> None:
        delay = self.delay_s
        self.failures += 1
        RETRIES.labels(self.policy.name).inc()
        self.log.warning("%s (%s: %s); retrying in %.1fs [%s]%s", what, type(exc).__name__, exc,
                         delay, self.policy.name,
                         f", {self.consequence}" if self.consequence else "")
        self.stop.wait(delay)

    def reset(self) -> None:
        self.failures = 0


def retry_blocking(policy: RetryPolicy, what: str, fn: Callable[..., T], *args: Any,
                   logger: logging.Logger | None = None, attempts: int | None = None,
                   retry_on: tuple[type[BaseException], ...] = (Exception,)) -> T:
    """`fn(*args)` until it returns, waiting by `policy` after each failure; with `attempts`,
    the last failure is raised."""
    backoff = Backoff(policy, logger=logger)
    while True:
        try:
            return fn(*args)
        except retry_on as exc:
            if attempts is not None and backoff.failures + 1 >= attempts:
                raise
            backoff.wait(f"{what} failed", exc)


async def retry_async(policy: RetryPolicy, what: str, fn: Callable[..., T], *args: Any,
                      logger: logging.Logger | None = None) -> T:
    """Run blocking `fn(*args)` in a thread until it returns, waiting by `policy` (without
    blocking the event loop) after each failure; forever."""
    log = logger or logging.getLogger("gridflow.retry")
    loop = asyncio.get_running_loop()
    failures = 0
    while True:
        try:
            return await loop.run_in_executor(None, fn, *args)
        except Exception as exc:  # transient I/O: a server or the network is down
            failures += 1
            delay = policy.delay_s(failures)
            RETRIES.labels(policy.name).inc()
            log.warning("%s failed (%s: %s); retrying in %.1fs [%s]", what, type(exc).__name__,
                        exc, delay, policy.name)
            await asyncio.sleep(delay)
