"""``install()``: the one call that enables otel-velocity on an SDK tracer provider."""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from otel_velocity.config import VelocitySettings
from otel_velocity.guard import contain_faults
from otel_velocity.processor import VelocitySpanProcessor
from otel_velocity.registry import VelocityRegistry
from otel_velocity.sentry import SentryCorrelation
from otel_velocity.shutdown import flush_on_sigterm

logger = logging.getLogger(__name__)

# The attribute that marks a provider as done, so that every path installs exactly once.
_PROCESSOR_ATTRIBUTE = "_otel_velocity_processor"
# The provider's SIGTERM flush, kept so that a later call can arm it in a forked process.
_FLUSH_ATTRIBUTE = "_otel_velocity_flush"

# The longest a SIGTERM flush holds up the exit; Kubernetes waits 30 s before SIGKILL by default.
FLUSH_TIMEOUT_S = 5.0

_lock = threading.Lock()
_registry: VelocityRegistry | None = None


def get_registry() -> VelocityRegistry | None:
    """Return the registry that ``install`` fed from this process's spans, if it ran."""
    return _registry


def install(
    tracer_provider: TracerProvider | None = None,
    *,
    settings: VelocitySettings | None = None,
    registry: VelocityRegistry | None = None,
) -> VelocitySpanProcessor:
    """Add the velocity processor to the tracer provider, and start Sentry when a DSN is set.

    Call it once the SDK ``TracerProvider`` exists (``opentelemetry-instrument`` calls it for
    you). Later calls on the same provider return the processor already installed, so a process
    never counts a span twice. They also arm the SIGTERM flush again where SIGTERM is back at its
    default action, as in a forked gunicorn worker (see ``_arm_flush_again``). Raises
    ``TypeError`` when the provider is not the SDK's, because a no-op or proxy provider never
    ends real spans.
    """
    global _registry

    provider = tracer_provider or trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        raise TypeError(
            "otel-velocity needs an opentelemetry-sdk TracerProvider, "
            f"got {type(provider).__name__}; "
            "call opentelemetry.trace.set_tracer_provider(TracerProvider(...)) before install(), "
            "or start the app with opentelemetry-instrument"
        )

    with _lock:
        existing = getattr(provider, _PROCESSOR_ATTRIBUTE, None)
        if isinstance(existing, VelocitySpanProcessor):
            _arm_flush_again(provider)
            return existing

        settings = settings or VelocitySettings.from_env()
        registry = registry or VelocityRegistry(
            settings.window, max_routes=settings.max_routes, max_services=settings.max_services
        )
        correlation = SentryCorrelation(settings.sentry) if settings.sentry.enabled else None
        processor = VelocitySpanProcessor(
            registry,
            on_server_span_start=correlation.on_server_span_start if correlation else None,
            on_server_span_end=correlation.on_server_span_end if correlation else None,
        )
        provider.add_span_processor(processor)
        flush = functools.partial(_flush, provider, correlation is not None)
        setattr(provider, _PROCESSOR_ATTRIBUTE, processor)
        setattr(provider, _FLUSH_ATTRIBUTE, flush)
        _registry = registry

    if correlation is not None:
        from otel_velocity.sentry.client import start_sentry

        start_sentry(correlation)

    flush_on_sigterm(flush)
    logger.info(
        "otel-velocity: installed on %s (max_routes=%d, sentry=%s)",
        type(provider).__name__,
        settings.max_routes,
        "on" if correlation else "off",
    )
    return processor


def _arm_flush_again(provider: TracerProvider) -> None:
    """Arm the SIGTERM flush in this process if SIGTERM has its default action again.

    A gunicorn worker is forked after ``opentelemetry-instrument`` ran ``install`` in the
    master, and resets SIGTERM to its default action, so the flush armed in the master is gone.
    ``UvicornWorker`` then exits by raising SIGTERM again, which skips ``atexit`` and the
    spans still queued in the ``BatchSpanProcessor``. Calling ``install()`` from gunicorn's
    ``post_worker_init`` hook arms the flush in the worker.
    """
    flush = getattr(provider, _FLUSH_ATTRIBUTE, None)
    if flush is not None and flush_on_sigterm(flush):
        logger.info("otel-velocity: SIGTERM flush armed in process %d", os.getpid())


def _flush(
    provider: TracerProvider, sentry_enabled: bool, timeout_s: float = FLUSH_TIMEOUT_S
) -> bool:
    """Flush spans and Sentry events side by side; return within ``timeout_s``, True if done.

    ``BatchSpanProcessor.force_flush`` ignores its timeout (opentelemetry-sdk 1.45) and sends
    every queued batch, each of which may wait the OTLP exporter's timeout (10 s by default) on
    an endpoint that does not respond. Each flush therefore runs in a daemon thread, and a flush
    still running at the deadline is abandoned, because the process exits next.
    """
    flushes: list[tuple[str, Callable[[], object]]] = [
        ("spans", lambda: provider.force_flush(int(timeout_s * 1000)))
    ]
    if sentry_enabled:
        import sentry_sdk

        flushes.append(("sentry", lambda: sentry_sdk.flush(timeout=timeout_s)))

    deadline_s = time.monotonic() + timeout_s
    threads = []
    for name, flush in flushes:
        thread = threading.Thread(
            target=_run_contained, args=(name, flush), name=f"otel-velocity-flush-{name}"
        )
        thread.daemon = True
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(max(deadline_s - time.monotonic(), 0.0))

    unfinished = [thread.name for thread in threads if thread.is_alive()]
    if unfinished:
        logger.warning(
            "otel-velocity: flush timed out after %.1f s in %s; exiting without waiting for it",
            timeout_s,
            ", ".join(unfinished),
        )
    return not unfinished


def _run_contained(name: str, flush: Callable[[], object]) -> None:
    with contain_faults(logger, "sigterm_flush", name):
        flush()
