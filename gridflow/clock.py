"""Clocks for adapters: the wall clock, or a scaled simulated clock shared by every process.

The core never reads a clock; adapters ask one of these for `now`. A scaled
clock maps wall time onto simulated time (`sim = start + (wall - anchor) * speed`),
so the demo and tests can run weeks of deadlines in minutes, and every process
given the same spec agrees on the time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from gridflow.events import iso, parse_ts

Clock = Callable[[], datetime]


def wall_clock() -> datetime:
    return datetime.now(UTC)


def scaled_clock(start: datetime, speed: float, anchor_epoch: float | None = None) -> Clock:
    anchor = time.time() if anchor_epoch is None else anchor_epoch

    def now() -> datetime:
        return start + timedelta(seconds=(time.time() - anchor) * speed)

    return now


def scaled_spec(start: datetime, speed: float, anchor_epoch: float | None = None) -> str:
    """The text form of a scaled clock, for GRIDFLOW_CLOCK in child processes."""
    anchor = time.time() if anchor_epoch is None else anchor_epoch
    return f"scaled:{iso(start)}@{anchor:.6f}x{speed:g}"


def clock_from_spec(spec: str) -> Clock:
    """'wall' (default) or 'scaled:<sim start ISO>@<wall anchor epoch>x<speed>'."""
    if not spec or spec == "wall":
        return wall_clock
    if not spec.startswith("scaled:"):
        raise ValueError(f"unknown clock spec {spec!r}: use 'wall' or 'scaled:<start>@<anchor>x<speed>'")
    body = spec.removeprefix("scaled:")
    try:
        start_s, rest = body.rsplit("@", 1)
        anchor_s, speed_s = rest.split("x", 1)
        return scaled_clock(parse_ts(start_s), float(speed_s), float(anchor_s))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"bad clock spec {spec!r}: {exc}") from exc


def wall_epoch_of(spec: str) -> Callable[[datetime], float]:
    """The inverse of `clock_from_spec(spec)`: the wall-clock epoch (seconds) at which a clock
    of that spec read a given time (metrics compare an event's time with the log's record
    timestamps, which are wall clock)."""
    if not spec or spec == "wall":
        return lambda at: at.timestamp()
    body = spec.removeprefix("scaled:")
    start_s, rest = body.rsplit("@", 1)
    anchor_s, speed_s = rest.split("x", 1)
    start, anchor, speed = parse_ts(start_s), float(anchor_s), float(speed_s)
    return lambda at: anchor + (at - start).total_seconds() / speed
