"""``create_velocity_router``: the table, the Sentry links and the page as a FastAPI router.

A single-process app mounts it to show its own in-process windows::

    from otel_velocity_service import create_velocity_router

    app.include_router(create_velocity_router(), prefix="/admin")

and the standalone service (``create_app``) mounts it over the registry that its OTLP
endpoint feeds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse

from otel_velocity import RouteKey, VelocityRegistry, get_registry
from otel_velocity_service.auth import TokenCheck
from otel_velocity_service.links import SentryNotConfigured, errors_url, traces_url
from otel_velocity_service.own_routes import OwnRoutes
from otel_velocity_service.page import page_response, static_response
from otel_velocity_service.schema import ErrorBody, SentryLinkResult, VelocityTable
from otel_velocity_service.settings import ServiceSettings
from otel_velocity_service.table import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    SortColumn,
    SortOrder,
    TableQuery,
    build_table,
)

logger = logging.getLogger(__name__)

Clock = Callable[[], float]

LINK_KINDS = ("errors", "traces")

NOT_INSTALLED_DETAIL = (
    "otel-velocity is not installed in this process, so there are no in-process windows: "
    "start the app with opentelemetry-instrument, or call otel_velocity.install() once the "
    "SDK TracerProvider exists"
)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "VELOCITY_TOKEN is set and the token is missing."},
    503: {"model": ErrorBody, "description": "No registry: otel-velocity is not installed."},
}


def create_velocity_router(
    registry: VelocityRegistry | None = None,
    *,
    settings: ServiceSettings | None = None,
    clock: Clock = time.time,
    own_routes: OwnRoutes | None = None,
) -> APIRouter:
    """Build the router with ``GET /ops/velocity``, ``GET /ops/sentry-link`` and the page.

    ``registry`` None reads ``otel_velocity.get_registry()`` on each request, so the router
    works whether ``install()`` runs before or after it is built. ``clock`` stamps
    ``generated_at_s`` and should be the registry's clock. ``own_routes`` is the service's
    self-exclusion. By default the router claims its own routes within the host app, so the
    host app's table never shows the page's own requests.
    """
    settings = settings or ServiceSettings.from_env()
    token_check = TokenCheck(settings.token)

    def current_registry() -> VelocityRegistry:
        current = registry if registry is not None else get_registry()
        if current is None:
            raise HTTPException(status_code=503, detail=NOT_INSTALLED_DETAIL)
        return current

    def velocity_table(
        service: Annotated[
            str | None, Query(description="Show only the rows of this service.name.")
        ] = None,
        sort: Annotated[
            SortColumn, Query(description="Column to sort by: a numeric column, route or key.")
        ] = SortColumn.P95_MS,
        order: Annotated[
            SortOrder | None,
            Query(description="asc or desc; by default desc for numbers and asc for text."),
        ] = None,
        limit: Annotated[
            int, Query(ge=1, le=MAX_LIMIT, description="The maximum number of rows to return.")
        ] = DEFAULT_LIMIT,
        offset: Annotated[int, Query(ge=0, description="Rows to skip after sorting.")] = 0,
    ) -> JSONResponse:
        # A plain function: FastAPI runs it in a worker thread, so computing many rows does
        # not hold up the event loop and the OTLP endpoint.
        query = TableQuery(service=service, sort=sort, order=order, limit=limit, offset=offset)
        table = build_table(
            current_registry(),
            query,
            now_s=clock(),
            sentry_links=settings.sentry_links,
            sentry_off_reason=settings.sentry_off_reason,
            is_own=own.contains,
        )
        # build_table returns plain JSON values in the VelocityTable shape (the schema tests
        # validate them); skipping pydantic's validation of the response halves the request.
        return JSONResponse(table)

    def sentry_link(
        route: Annotated[
            str | None,
            Query(description="The row key, 'METHOD /route-template', e.g. 'GET /items/{id}'."),
        ] = None,
        service: Annotated[
            str | None,
            Query(description="The row's service; needed when several services have the route."),
        ] = None,
        kind: Annotated[
            str, Query(description="'errors' for the issues stream, 'traces' for the traces.")
        ] = "errors",
    ) -> dict[str, str]:
        key = _parse_key_parameter(route)
        if kind not in LINK_KINDS:
            raise HTTPException(
                status_code=400,
                detail=f"invalid query parameter 'kind': {kind!r}; use 'errors' or 'traces'",
            )

        service = _known_service(current_registry(), key, service, own)
        if settings.sentry_links is None:
            raise HTTPException(status_code=503, detail=settings.sentry_off_reason)

        build_url = errors_url if kind == "errors" else traces_url
        try:
            url = build_url(
                settings.sentry_links, method=key.method, route=key.route, service=service
            )
        except SentryNotConfigured as error:
            raise HTTPException(status_code=503, detail=error.reason) from None
        except ValueError as error:
            raise HTTPException(
                status_code=404, detail=f"no Sentry link for {key}: {error}"
            ) from None
        return {"url": url}

    def velocity_page() -> FileResponse:
        return page_response()

    def static_file(filename: str) -> FileResponse:
        return static_response(filename)

    own = own_routes or OwnRoutes([velocity_table, sentry_link, velocity_page, static_file])

    async def learn_own_routes(request: Request) -> None:
        own.learn(request.scope)

    router = APIRouter(dependencies=[Depends(learn_own_routes)])
    router.add_api_route(
        "/ops/velocity",
        velocity_table,
        methods=["GET"],
        response_model=VelocityTable,
        dependencies=[Depends(token_check)],
        summary="The velocity table",
        description=(
            "Per-route rates (requests per second), latency percentiles (milliseconds), error "
            "rates (fractions 0..1), p95 regression against the baseline, 5-minute trends, "
            "exemplar spans and Sentry links."
        ),
        responses=_ERRORS,
        tags=["velocity"],
    )
    router.add_api_route(
        "/ops/sentry-link",
        sentry_link,
        methods=["GET"],
        response_model=SentryLinkResult,
        dependencies=[Depends(token_check)],
        summary="A Sentry URL for one route",
        responses={
            **_ERRORS,
            400: {"model": ErrorBody, "description": "A query parameter is missing or invalid."},
            404: {"model": ErrorBody, "description": "The route is not in the table."},
            503: {
                "model": ErrorBody,
                "description": "Sentry links are not configured, or no registry.",
            },
        },
        tags=["velocity"],
    )
    router.add_api_route(
        "/velocity",
        velocity_page,
        methods=["GET"],
        response_class=FileResponse,
        summary="The velocity page (HTML)",
        responses={200: {"content": {"text/html": {}}, "description": "The page."}},
        tags=["page"],
    )
    router.add_api_route(
        "/static/{filename}",
        static_file,
        methods=["GET"],
        response_class=FileResponse,
        summary="A file that the page loads",
        responses={
            200: {"content": {"text/css": {}, "text/javascript": {}}, "description": "The file."},
            404: {"model": ErrorBody, "description": "No such page file."},
        },
        tags=["page"],
    )
    return router


def _parse_key_parameter(route: str | None) -> RouteKey:
    if route is None or not route.strip():
        raise HTTPException(
            status_code=400,
            detail=(
                "missing query parameter 'route': pass a row key, e.g. route=GET%20/items/{item_id}"
            ),
        )
    try:
        return RouteKey.parse(route)
    except ValueError as error:
        raise HTTPException(
            status_code=400, detail=f"invalid query parameter 'route': {error}"
        ) from None


def _known_service(
    registry: VelocityRegistry, key: RouteKey, service: str | None, own: OwnRoutes
) -> str:
    """Return the service whose table has ``key``; raise 404 or 400 when there is no one."""
    services = sorted(
        {
            stats.service
            for stats in registry.rows(service)
            if stats.key == key and not own.contains(stats.service, stats.key.route)
        }
    )
    if not services:
        where = f"service {service!r}" if service is not None else "any service"
        raise HTTPException(
            status_code=404,
            detail=(
                f"route {str(key)!r} is not in the table of {where}; links exist only for "
                "routes with requests in the retained windows (see GET /ops/velocity)"
            ),
        )
    if len(services) > 1:
        raise HTTPException(
            status_code=400,
            detail=(
                f"route {str(key)!r} is in services {services}: pass the 'service' query parameter"
            ),
        )
    return services[0]
