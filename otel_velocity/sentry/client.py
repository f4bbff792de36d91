"""Start sentry-sdk for the correlation: OTLP traces on, Sentry's own tracing off."""

from __future__ import annotations

import logging

from opentelemetry.propagate import get_global_textmap, set_global_textmap
from opentelemetry.propagators.composite import CompositePropagator

from otel_velocity.sentry.correlation import SentryCorrelation

logger = logging.getLogger(__name__)


def start_sentry(correlation: SentryCorrelation) -> None:
    """Initialize sentry-sdk from ``correlation.settings`` and register the correlation hooks.

    Call it after the SDK ``TracerProvider`` is the global one: sentry-sdk's OTLP integration
    adds its span exporter to that provider instead of creating a second one. The integration
    would also replace the global propagator with a Sentry-only one, which breaks W3C
    ``traceparent``; the Sentry propagator is added beside the existing ones instead, before
    them, so that ``traceparent`` wins when a request carries both headers.
    """
    import sentry_sdk
    from sentry_sdk.integrations.otlp import OTLPIntegration, SentryOTLPPropagator
    from sentry_sdk.scope import add_global_event_processor, register_external_propagation_context

    settings = correlation.settings
    sentry_sdk.init(
        dsn=settings.dsn,
        release=settings.release,
        environment=settings.environment,
        send_default_pii=False,
        integrations=[
            OTLPIntegration(
                setup_otlp_traces_exporter=settings.otlp_traces,
                setup_propagator=False,
            )
        ],
    )
    register_external_propagation_context(correlation.trace_context)
    add_global_event_processor(correlation.process_event)  # type: ignore[arg-type]
    set_global_textmap(CompositePropagator([SentryOTLPPropagator(), get_global_textmap()]))
    logger.info(
        "otel-velocity: Sentry correlation started (release=%s, environment=%s, otlp_traces=%s)",
        settings.release,
        settings.environment,
        settings.otlp_traces,
    )
