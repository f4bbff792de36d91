"""otel-velocity: per-route velocity windows and Sentry correlation from OpenTelemetry spans.

Start an app with ``opentelemetry-instrument`` and nothing else is needed; an app that sets up
OpenTelemetry itself calls ``install()`` once its SDK ``TracerProvider`` exists.
"""

from otel_velocity.config import SentrySettings, VelocitySettings
from otel_velocity.guard import FAULTS
from otel_velocity.install import get_registry, install
from otel_velocity.processor import VelocitySpanProcessor
from otel_velocity.registry import RouteStats, VelocityRegistry
from otel_velocity.routes import RouteKey
from otel_velocity.windows import WindowSettings, WindowStats

__all__ = [
    "FAULTS",
    "RouteKey",
    "RouteStats",
    "SentrySettings",
    "VelocityRegistry",
    "VelocitySettings",
    "VelocitySpanProcessor",
    "WindowSettings",
    "WindowStats",
    "get_registry",
    "install",
]
