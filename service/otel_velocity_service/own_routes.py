"""Self-exclusion: the service's own endpoints never take a row in its velocity table.

When the service's process is instrumented (``opentelemetry-instrument otel-velocity serve``, or
an app that mounts the velocity router), each request to a service endpoint creates a SERVER
span. Those spans reach a registry in two ways: the in-process processor of
``otel_velocity.install`` counts them in ``get_registry()``, and an OTLP exporter that points at
the service itself sends them to ``POST /v1/traces``. There each export makes one more span, so
such a service exports to itself once per batch delay for as long as it runs, and a
``force_flush`` that waits for an empty queue does not return before its timeout.

Both are removed by matching (service, route template). A span or row is the service's own when
its ``service.name`` is a name that the service's own spans carry and its route template is one
of the service's own routes. ``OwnRoutes`` learns the names at runtime: from the resource of
the global SDK tracer provider at startup, and from the resource of the current SERVER span on
each request to a service endpoint. The current span is also the only way to know the name
when the app was instrumented with a provider of its own (``instrument_app(app,
tracer_provider=...)``). The templates are read from the app's routes, so a prefix given to
``include_router`` is part of them.

Spans from the OTLP endpoint are dropped before they are counted, so they never use up a row
under ``max_routes``. The in-process processor has no way to skip spans, so the rows that
it made are dropped when the table is read.

Why not ``OTEL_PYTHON_FASTAPI_EXCLUDED_URLS``: opentelemetry-instrumentation-fastapi (0.66b2)
reads it when its module is imported, which ``opentelemetry-instrument`` does before the
service's code runs, so a default set by the service would come too late. It would also not
cover an app that calls ``instrument_app`` with its own ``excluded_urls``, nor spans that
another instance of the service exports over OTLP.

NOTE: an app that sends spans with the same ``service.name`` as the service is treated as the
service on the service's own route templates. Give the service its own ``OTEL_SERVICE_NAME``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Container, Iterable
from typing import Any

from fastapi.routing import iter_route_contexts
from opentelemetry import trace
from starlette.types import Scope

from otel_velocity.registry import UNKNOWN_SERVICE
from otel_velocity.routes import UNMATCHED_ROUTE

logger = logging.getLogger(__name__)

_EMPTY: frozenset[str] = frozenset()


class OwnRoutes:
    """The route templates and service names of the service's own SERVER spans.

    ``endpoints`` limits the own routes to those endpoint functions, for a router mounted in a
    host app; ``None`` claims every route of the app. ``include_unmatched`` also claims the
    ``(unmatched)`` row of the service's names, which a standalone service needs for requests
    to paths it does not serve.

    Threading: ``learn`` runs on the event loop and the other methods on any thread. The sets
    are replaced, never changed in place, so readers need no lock.
    """

    def __init__(
        self,
        endpoints: Iterable[Callable[..., Any]] | None = None,
        *,
        include_unmatched: bool = False,
    ) -> None:
        self._endpoints = frozenset(endpoints) if endpoints is not None else None
        self._include_unmatched = include_unmatched
        self._templates: frozenset[str] = _EMPTY
        self._services: frozenset[str] = _EMPTY
        self._app_routes_version: tuple[int, int] | None = None
        self._lock = threading.Lock()

    @property
    def services(self) -> frozenset[str]:
        return self._services

    @property
    def templates(self) -> frozenset[str]:
        return self._templates

    def learn(self, scope: Scope) -> None:
        """Record the service name of the current span and the templates of the scope's app."""
        app = scope.get("app")
        if app is not None:
            self.learn_app(app)
        self.learn_service(_current_service_name())

    def learn_service(self, service: str | None) -> None:
        if service is None or service in self._services:
            return
        with self._lock:
            self._services = self._services | {service}
        if service.startswith(UNKNOWN_SERVICE):
            logger.warning(
                "otel-velocity service: its own spans carry the default service.name %r, so "
                "other apps without a service.name look like the service on its own routes; "
                "set OTEL_SERVICE_NAME=otel-velocity for the service",
                service,
            )
        logger.info(
            "otel-velocity service: spans of service %r on routes %s are the service's own "
            "and are left out of the table",
            service,
            sorted(self._templates),
        )

    def learn_from_tracer_provider(self) -> None:
        """Record the service name of the global SDK tracer provider, if one is set."""
        resource = getattr(trace.get_tracer_provider(), "resource", None)
        self.learn_service(_service_name_of(resource))

    def templates_for(self, service: str) -> Container[str]:
        """Return the own route templates of ``service``: empty unless it is the service's."""
        return self._templates if service in self._services else _EMPTY

    def contains(self, service: str, route: str) -> bool:
        return service in self._services and route in self._templates

    def learn_app(self, app: Any) -> None:
        """Read the own route templates from a Starlette or FastAPI app's routes."""
        routes = getattr(app, "routes", None)
        if routes is None:
            return
        # Routes are rarely added after startup; the app's id and route count detect it.
        version = (id(app), len(routes))
        if version == self._app_routes_version:
            return

        templates = set()
        for context in iter_route_contexts(routes):
            path = context.path
            if path is None:
                continue
            if self._endpoints is None or context.endpoint in self._endpoints:
                templates.add(path)
        if self._include_unmatched:
            templates.add(UNMATCHED_ROUTE)

        with self._lock:
            self._templates = frozenset(templates)
            self._app_routes_version = version


def _current_service_name() -> str | None:
    span = trace.get_current_span()
    return _service_name_of(getattr(span, "resource", None))


def _service_name_of(resource: Any) -> str | None:
    attributes = getattr(resource, "attributes", None)
    if attributes is None:
        return None
    name = attributes.get("service.name")
    return name if isinstance(name, str) and name else None
