"""Sentry correlation: request tags, OTel trace context and 5xx events; active only with a DSN."""

from otel_velocity.sentry.correlation import SentryCorrelation

__all__ = ["SentryCorrelation"]
