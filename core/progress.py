"""Progress reporting and cancellation shared by every slow engine call.

Every slow function in `core` takes ``progress: ProgressFn | None`` and
``cancel: threading.Event | None``. It reports through a `Reporter`, which throttles
calls to about four a second (never one per item) and raises `Cancelled` between
batches once the event is set.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from core.errors import Cancelled


@dataclass(frozen=True)
class Progress:
    """A snapshot of one stage of long work."""

    stage: str
    done: int
    total: int | None = None
    unit: str = "items"
    message: str = ""
    elapsed_s: float = 0.0

    @property
    def rate(self) -> float | None:
        """Items per second so far, or None before any time has passed."""
        return self.done / self.elapsed_s if self.elapsed_s > 0 else None

    @property
    def eta_s(self) -> float | None:
        rate = self.rate
        if self.total is None or not rate:
            return None
        return max(self.total - self.done, 0) / rate


ProgressFn = Callable[[Progress], None]


class Reporter:
    """Throttled progress for one stage, plus the cancel check."""

    def __init__(
        self,
        stage: str,
        total: int | None,
        progress: ProgressFn | None,
        cancel: threading.Event | None,
        unit: str = "items",
        interval_s: float = 0.25,
    ) -> None:
        self.stage = stage
        self.total = total
        self.unit = unit
        self.done = 0
        self._progress = progress
        self._cancel = cancel
        self._interval_s = interval_s
        self._start = time.monotonic()
        self._last_sent = float("-inf")

    def check(self) -> None:
        """Raise `Cancelled` if the caller asked to stop."""
        if self._cancel is not None and self._cancel.is_set():
            raise Cancelled(f"{self.stage}: cancelled after {self.done} {self.unit}")

    def advance(self, n: int = 1, message: str = "") -> None:
        """Count `n` more items; report if the last report is old enough; check cancel."""
        self.done += n
        self.check()
        now = time.monotonic()
        if now - self._last_sent >= self._interval_s:
            self._emit(now, message)

    def finish(self, message: str = "") -> None:
        """Always report the final state, whatever the throttle says."""
        self._emit(time.monotonic(), message)

    def _emit(self, now: float, message: str) -> None:
        self._last_sent = now
        if self._progress is not None:
            self._progress(Progress(self.stage, self.done, self.total, self.unit, message, now - self._start))
