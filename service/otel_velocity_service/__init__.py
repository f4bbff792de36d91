"""otel-velocity service: an OTLP/HTTP trace receiver and the per-route velocity page.

``create_app`` builds the standalone service; ``create_velocity_router`` gives a single-process
FastAPI app the same table and page over its in-process windows. The ``otel-velocity`` command
runs the service (``serve``) or a self-contained demo (``demo``).
"""

from otel_velocity_service.api import create_velocity_router
from otel_velocity_service.app import create_app
from otel_velocity_service.settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app", "create_velocity_router"]
