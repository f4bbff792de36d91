"""Overload control for ``POST /v1/traces``, and a rate limit for repeated log lines.

``IngestLimiter`` keeps the service's memory and queue bounded when exporters send more than it
can count. The OTLP specification (opentelemetry-proto, docs/specification.md, "OTLP/HTTP
Throttling") says that an overloaded server SHOULD respond with 429 or 503, both retryable, and
MAY add ``Retry-After`` in seconds, which clients SHOULD honour.
"""

from __future__ import annotations

import math
import threading
import time

import anyio

LOG_INTERVAL_S = 60.0

# Requests decoded at once. Decoding is Python code that keeps the GIL, so a second worker adds
# no speed on any number of cores. It only lets gzip decompression, which releases the GIL,
# overlap with decoding. Each worker keeps up to one decompressed body in memory.
INGEST_WORKERS = 2

# Retry-After never exceeds this: the OpenTelemetry Python exporter (1.45) gives up on a batch
# when Retry-After is longer than what is left of its 10 s export timeout.
MAX_RETRY_AFTER_S = 5

# Weight of the newest decode in the running average of the decode rate.
_RATE_SMOOTHING = 0.2


class IngestLimiter:
    """Bounds the request bytes in the service's memory and the requests that it decodes at once.

    * Every request reserves its body's bytes before they are read: its Content-Length, or the
      bytes received so far when it has none. The reservation lasts until the request has
      its response. When ``max_pending_bytes`` are reserved, ``reserve`` and ``grow`` fail and the
      request gets 429, so bodies waiting for a worker never take more memory than that.
    * ``workers`` requests decode at once. The others wait up to ``max_wait_s`` for a worker and
      then get 503, so no request is counted after its exporter's timeout made it send the
      batch again.

    ``retry_after_s`` is the time to decode the bytes already reserved at the measured rate.

    Threading: every method runs on the event loop, so the counters need no lock.
    """

    def __init__(
        self,
        max_pending_bytes: int,
        max_wait_s: float,
        workers: int = INGEST_WORKERS,
    ) -> None:
        if max_pending_bytes < 1:
            raise ValueError(f"max_pending_bytes must be at least 1, got {max_pending_bytes!r}")
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers!r}")
        self.max_pending_bytes = max_pending_bytes
        self.max_wait_s = max_wait_s
        self.workers = workers
        self.pending_bytes = 0
        self._worker_slots = anyio.Semaphore(workers)
        # Threads for decoding, apart from the thread pool that the sync endpoints share, so
        # those endpoints can never make a request wait longer than max_wait_s.
        self.thread_limiter = anyio.CapacityLimiter(workers)
        self._decode_bytes_per_s: float | None = None

    def reserve(self, nbytes: int) -> Reservation | None:
        """Reserve ``nbytes`` for one request, or return None when they do not fit now."""
        if self.pending_bytes + nbytes > self.max_pending_bytes:
            return None
        self.pending_bytes += nbytes
        return Reservation(self, nbytes)

    async def acquire_worker(self) -> bool:
        """Wait up to ``max_wait_s`` for a worker; return whether one was acquired."""
        with anyio.move_on_after(self.max_wait_s):
            await self._worker_slots.acquire()
            return True
        return False

    def release_worker(self, decoded_bytes: int, decode_s: float) -> None:
        """Free a worker and add its decode to the measured rate."""
        self._worker_slots.release()
        if decoded_bytes > 0 and decode_s > 0:
            rate = decoded_bytes / decode_s
            previous = self._decode_bytes_per_s
            self._decode_bytes_per_s = (
                rate if previous is None else previous + _RATE_SMOOTHING * (rate - previous)
            )

    def retry_after_s(self) -> int:
        """Return the whole seconds to decode the reserved bytes, from 1 to MAX_RETRY_AFTER_S."""
        rate = self._decode_bytes_per_s
        if rate is None:
            return 1
        seconds = math.ceil(self.pending_bytes / (rate * self.workers))
        return min(max(seconds, 1), MAX_RETRY_AFTER_S)


class Reservation:
    """The bytes reserved for one request in an ``IngestLimiter``; ``release`` frees them."""

    def __init__(self, limiter: IngestLimiter, nbytes: int) -> None:
        self.limiter = limiter
        self.nbytes = nbytes

    def grow_to(self, nbytes: int) -> bool:
        """Grow the reservation to ``nbytes``; return False, keeping its size, if they don't fit."""
        extra = nbytes - self.nbytes
        if extra <= 0:
            return True
        limiter = self.limiter
        if limiter.pending_bytes + extra > limiter.max_pending_bytes:
            return False
        limiter.pending_bytes += extra
        self.nbytes = nbytes
        return True

    def release(self) -> None:
        self.limiter.pending_bytes -= self.nbytes
        self.nbytes = 0


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
