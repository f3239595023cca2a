"""A stop event for code that waits on one (gridflow.retry.Backoff): records each delay and
returns at once, so a test of backoff never sleeps."""

from __future__ import annotations

import threading


class RecordingStop(threading.Event):
    """A stop event whose wait records the delay instead of sleeping."""

    def __init__(self) -> None:
        super().__init__()
        self.waited: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waited.append(float(timeout or 0))
        return self.is_set()
