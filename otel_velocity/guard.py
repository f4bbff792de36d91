"""The one guard that keeps otel-velocity's faults out of the host app.

Every hook that runs on the app's threads (span processor callbacks, Sentry event processors,
signal handlers) wraps its body in ``contain_faults``. A fault is counted in ``FAULTS`` and
logged with the span or event it concerns, at most once per minute per place, with the number
of faults that were not logged in between.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

LOG_INTERVAL_S = 60.0


class FaultCounter:
    """Self-metric: internal faults per place, readable by the service and by tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._suppressed: dict[str, int] = {}
        self._last_logged_s: dict[str, float] = {}

    def add(self, place: str, now_s: float) -> tuple[bool, int]:
        """Count a fault; return whether to log it and how many were suppressed before it."""
        with self._lock:
            self._counts[place] = self._counts.get(place, 0) + 1
            last_s = self._last_logged_s.get(place)
            if last_s is not None and now_s - last_s < LOG_INTERVAL_S:
                self._suppressed[place] = self._suppressed.get(place, 0) + 1
                return False, 0
            self._last_logged_s[place] = now_s
            return True, self._suppressed.pop(place, 0)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())


FAULTS = FaultCounter()


@contextmanager
def contain_faults(logger: logging.Logger, place: str, subject: object) -> Iterator[None]:
    """Run the block; on any exception, count and log it instead of raising.

    ``subject`` names what was being handled (a span name, an event id) for the log line.
    """
    try:
        yield
    except Exception:  # The contract: nothing reaches the host app.
        should_log, suppressed = FAULTS.add(place, time.monotonic())
        if should_log:
            logger.exception(
                "otel-velocity: %s failed on %r (%d similar faults not logged in the last %.0f s)",
                place,
                subject,
                suppressed,
                LOG_INTERVAL_S,
            )
