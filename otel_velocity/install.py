"""``install()``: the one call that enables otel-velocity on an SDK tracer provider."""

from __future__ import annotations

import logging
import threading

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from otel_velocity.config import VelocitySettings
from otel_velocity.processor import VelocitySpanProcessor
from otel_velocity.registry import VelocityRegistry
from otel_velocity.sentry import SentryCorrelation
from otel_velocity.shutdown import flush_on_sigterm

logger = logging.getLogger(__name__)

# The attribute that marks a provider as done, so that every path installs exactly once.
_PROCESSOR_ATTRIBUTE = "_otel_velocity_processor"

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
    never counts a span twice. Raises ``TypeError`` when the provider is not the SDK's, because
    a no-op or proxy provider never ends real spans.
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
        setattr(provider, _PROCESSOR_ATTRIBUTE, processor)
        _registry = registry

    if correlation is not None:
        from otel_velocity.sentry.client import start_sentry

        start_sentry(correlation)

    flush_on_sigterm(lambda: _flush(provider, correlation is not None))
    logger.info(
        "otel-velocity: installed on %s (max_routes=%d, sentry=%s)",
        type(provider).__name__,
        settings.max_routes,
        "on" if correlation else "off",
    )
    return processor


def _flush(provider: TracerProvider, sentry_enabled: bool, timeout_s: float = 5.0) -> None:
    provider.force_flush(int(timeout_s * 1000))
    if sentry_enabled:
        import sentry_sdk

        sentry_sdk.flush(timeout=timeout_s)
