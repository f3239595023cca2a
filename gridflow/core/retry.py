"""The one retry policy: capped exponential backoff with a name (what logs and metrics say).

Pure arithmetic: how long to wait after the n-th failure in a row. Who waits, and how (a
thread on an event, a coroutine, a row's next_attempt_at), is the caller's business
(gridflow.retry for processes; the notifier keeps a notice's next attempt in its row).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RetryPolicy:
    """Wait `first_s` after the first failure, `factor` times longer after each further one,
    never more than `max_s`. `name` labels the policy's log lines and retry metrics."""

    name: str
    first_s: float
    max_s: float
    factor: float = 2.0

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a retry policy needs a name")
        if self.first_s <= 0 or self.max_s < self.first_s or self.factor < 1:
            raise ValueError(f"retry policy {self.name!r}: needs 0 < first_s <= max_s and "
                             f"factor >= 1, got {self.first_s}, {self.max_s}, {self.factor}")

    def delay_s(self, fail_count: int) -> float:
        """Seconds to wait after the `fail_count`-th failure in a row (1, 2, ...); 0 before any."""
        if fail_count < 1:
            return 0.0
        # the exponent is capped so a long outage never overflows a float
        return float(min(self.max_s, self.first_s * self.factor ** min(fail_count - 1, 64)))

    def next_attempt(self, failed_at: datetime, fail_count: int) -> datetime:
        """When to try again after the `fail_count`-th failure in a row, at `failed_at`."""
        return failed_at + timedelta(seconds=self.delay_s(fail_count))

    def capped_at(self, max_s: float) -> RetryPolicy:
        """The same policy waiting at most `max_s` (and starting no later than that)."""
        return replace(self, first_s=min(self.first_s, max_s), max_s=max_s)
