"""Rate limit for log lines that a client can repeat on every request."""

from __future__ import annotations

import threading
import time

LOG_INTERVAL_S = 60.0


class LogThrottle:
    """Allows one log line per place and interval, and counts the ones it held back.

    Thread-safe: the OTLP route logs from worker threads and the others from the event loop.
    """

    def __init__(self, interval_s: float = LOG_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._last_logged_s: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def allow(self, place: str) -> tuple[bool, int]:
        """Return whether to log now and how many lines of ``place`` were held back before."""
        now_s = time.monotonic()
        with self._lock:
            last_s = self._last_logged_s.get(place)
            if last_s is not None and now_s - last_s < self.interval_s:
                self._suppressed[place] = self._suppressed.get(place, 0) + 1
                return False, 0
            self._last_logged_s[place] = now_s
            return True, self._suppressed.pop(place, 0)
