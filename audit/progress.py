"""A progress bar for long replays: events done of the total, events per second, time left.

Guarantee: writes only to the given stream, redraws in place on a terminal (at most 5 times a
second) and prints a plain line every few seconds otherwise, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    def __init__(self, total: int, label: str = "回放 replay", stream: TextIO | None = None,
                 width: int = 28) -> None:
        self.total = max(0, total)
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.monotonic()
        self.last_draw = 0.0
        self.done = 0

    def update(self, done: int, force: bool = False) -> None:
        self.done = done
        now = time.monotonic()
        interval = 0.2 if self.tty else 5.0
        if not force and now - self.last_draw < interval:
            return
        self.last_draw = now
        line = self.render(now)
        if self.tty:
            self.stream.write("\r" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def render(self, now: float | None = None) -> str:
        elapsed = (now or time.monotonic()) - self.t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        frac = min(1.0, self.done / self.total) if self.total else 1.0
        filled = int(frac * self.width)
        bar = "█" * filled + "░" * (self.width - filled)
        left = (self.total - self.done) / rate if rate > 0 and self.total > self.done else 0.0
        return (f"{self.label} [{bar}] {self.done:,}/{self.total:,} events ({frac:.1%}) "
                f"{rate:,.0f} events/s, {elapsed:.1f}s" + (f", ~{left:.0f}s left" if left else ""))

    def finish(self) -> None:
        self.update(self.done, force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
