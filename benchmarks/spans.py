"""Pre-built finished SERVER spans with the HTTP attributes a FastAPI app produces.

The attribute names and value types are those that opentelemetry-instrumentation-fastapi 0.66b2
sets on a SERVER span by default (the older HTTP semantic conventions, ``http.method``,
``http.status_code`` and so on), as captured from a real request. Spans are spread over
``ROUTES``; 2 % of them are 404s and 1 % are 500s, and durations follow a lognormal
distribution with a 20 ms median.
"""

from __future__ import annotations

import random
import time

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

ROUTES = (
    ("GET", "/items/{item_id}"),
    ("GET", "/users/{user_id}/orders"),
    ("POST", "/orders"),
    ("GET", "/search"),
    ("PUT", "/items/{item_id}"),
    ("DELETE", "/sessions/{session_id}"),
    ("GET", "/products/{sku}/reviews"),
    ("GET", "/health"),
)

RESOURCE = Resource.create({"service.name": "shop", "service.version": "1.4.2"})
MEDIAN_DURATION_MS = 20.0


def _attributes(method: str, route: str, path: str, status: int) -> dict[str, object]:
    return {
        "http.scheme": "http",
        "http.host": "127.0.0.1:8000",
        "net.host.port": 8000,
        "http.flavor": "1.1",
        "http.target": path,
        "http.url": f"http://127.0.0.1:8000{path}",
        "http.method": method,
        "http.server_name": "127.0.0.1:8000",
        "http.user_agent": "python-httpx/0.28.1",
        "net.peer.ip": "127.0.0.1",
        "net.peer.port": 51234,
        "http.route": route,
        "http.status_code": status,
    }


def server_spans(count: int, seed: int = 1, routes: int = len(ROUTES)) -> list[ReadableSpan]:
    """Build ``count`` finished SERVER spans over the first ``routes`` entries of ``ROUTES``."""
    rng = random.Random(seed)
    start_ns = time.time_ns()
    spans = []
    for number in range(count):
        method, route = ROUTES[number % routes]
        path = route.replace("{", "").replace("}", "") + f"/{number}"
        draw = rng.random()
        status = 500 if draw < 0.01 else 404 if draw < 0.03 else 200
        duration_ns = int(rng.lognormvariate(0.0, 0.9) * MEDIAN_DURATION_MS * 1e6)
        context = SpanContext(
            trace_id=rng.getrandbits(128),
            span_id=rng.getrandbits(64),
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
        spans.append(
            ReadableSpan(
                name=f"{method} {route}",
                context=context,
                resource=RESOURCE,
                attributes=_attributes(method, route, path, status),
                kind=SpanKind.SERVER,
                status=Status(StatusCode.ERROR if status >= 500 else StatusCode.UNSET),
                start_time=start_ns,
                end_time=start_ns + duration_ns,
            )
        )
    return spans
