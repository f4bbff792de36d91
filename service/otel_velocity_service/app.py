"""``create_app``: the standalone velocity service.

It receives spans from any number of apps over OTLP/HTTP at ``POST /v1/traces``, counts their
SERVER spans in one registry, and serves the table (``/ops/velocity``), Sentry links
(``/ops/sentry-link``), the page (``/velocity``) and ``/healthz``. Run it with
``otel-velocity serve`` or any ASGI server: ``uvicorn --factory otel_velocity_service:create_app``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from otel_velocity import VelocityRegistry
from otel_velocity_service.api import Clock, create_velocity_router
from otel_velocity_service.auth import TokenCheck
from otel_velocity_service.own_routes import OwnRoutes
from otel_velocity_service.routes_otlp import IngestTotals, create_otlp_router
from otel_velocity_service.schema import Health
from otel_velocity_service.settings import ServiceSettings
from otel_velocity_service.throttle import IngestLimiter

logger = logging.getLogger(__name__)

try:
    VERSION = version("otel-velocity-service")
except PackageNotFoundError:  # Imported from a source tree that was never installed.
    VERSION = "0+unknown"


def create_app(
    registry: VelocityRegistry | None = None,
    settings: ServiceSettings | None = None,
    *,
    clock: Clock = time.time,
) -> FastAPI:
    """Build the service app.

    ``settings`` None reads the environment (``ServiceSettings.from_env``) and raises
    ``ValueError`` naming an invalid variable. ``registry`` None creates one with those
    settings and ``clock``; a registry passed in should use ``clock`` too, because ``clock``
    stamps ``generated_at_s``. Every route of this app, and requests to paths it does not
    serve, count as the service's own and never show in its table (see ``own_routes``).
    """
    settings = settings or ServiceSettings.from_env()
    if registry is None:
        registry = VelocityRegistry(
            settings.velocity.window,
            max_routes=settings.velocity.max_routes,
            max_services=settings.velocity.max_services,
            clock=clock,
        )
    own_routes = OwnRoutes(include_unmatched=True)
    totals = IngestTotals()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_routes.learn_app(app)
        own_routes.learn_from_tracer_provider()
        logger.info(
            "otel-velocity service: started (window %.0f s, baseline %.0f s, min samples %d, "
            "max routes %d, body limit %d bytes, pending limit %d bytes, queue wait %g s, "
            "token %s, CORS origins %s, Sentry links %s)",
            registry.settings.short_window_s,
            registry.settings.baseline_window_s,
            registry.settings.min_samples,
            registry.max_routes,
            settings.max_body_bytes,
            settings.pending_bytes_limit,
            settings.max_queue_wait_s,
            "required" if settings.token else "off",
            list(settings.cors_origins) or "off",
            "on" if settings.sentry_links else f"off ({settings.sentry_off_reason})",
        )
        try:
            yield
        finally:
            logger.info(
                "otel-velocity service: stopped after %d export requests "
                "(%d SERVER spans counted, %d rejected, %d of its own left out; "
                "%d requests answered 429 or 503 because it was overloaded)",
                totals.requests,
                totals.server_spans,
                totals.rejected_spans,
                totals.own_spans,
                totals.overloaded_requests,
            )

    app = FastAPI(
        title="otel-velocity service",
        version=VERSION,
        summary="Per-route velocity from OpenTelemetry SERVER spans, with links to Sentry.",
        lifespan=lifespan,
    )
    # Readable by operators and tests: spans counted, rejected and left out since startup.
    app.state.ingest_totals = totals
    token_check = TokenCheck(settings.token)
    app.include_router(
        create_otlp_router(
            registry,
            max_body_bytes=settings.max_body_bytes,
            limiter=IngestLimiter(settings.pending_bytes_limit, settings.max_queue_wait_s),
            body_timeout_s=settings.body_timeout_s,
            token_check=token_check,
            own_routes=own_routes,
            totals=totals,
        )
    )
    app.include_router(
        create_velocity_router(registry, settings=settings, clock=clock, own_routes=own_routes)
    )

    @app.get("/healthz", response_model=Health, summary="Liveness", tags=["service"])
    async def healthz() -> Health:
        return Health()

    app.add_middleware(OwnRoutesMiddleware, own_routes=own_routes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Content-Encoding"],
        )
    return app


class OwnRoutesMiddleware:
    """Teaches ``OwnRoutes`` the service name of every request's SERVER span.

    It runs inside the OpenTelemetry ASGI middleware when the app is instrumented, so the
    current span is the request's SERVER span, also for paths that match no route.
    """

    def __init__(self, app: ASGIApp, own_routes: OwnRoutes) -> None:
        self.app = app
        self.own_routes = own_routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.own_routes.learn(scope)
        await self.app(scope, receive, send)
