"""Waiting for a condition with a deadline, instead of sleeping and hoping it came true."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(what: str, probe: Callable[[], T], timeout_s: float = 60.0,
               check: Callable[[], None] | None = None, interval_s: float = 0.2) -> T:
    """Poll `probe` until it returns something truthy and return that. `check` runs before
    every try (e.g. a child service's check(), so a dead worker fails at once, with its log);
    at the deadline fail naming `what` and the last value seen."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while True:
        if check is not None:
            check()
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}; "
                                 f"last: {last!r}")
        time.sleep(interval_s)
