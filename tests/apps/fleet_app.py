"""A FastAPI app for the fleet tests, run under ``opentelemetry-instrument`` in a subprocess.

Every response carries the serving process's id in the ``x-worker-pid`` header, and every
SERVER span carries it in the ``process.pid`` span attribute, so a test can tell which
gunicorn worker served a request and which worker exported a span. The resource cannot carry
it: ``opentelemetry-instrument`` builds the resource in the gunicorn master, before the fork.

Routes:

* ``GET /items/{item_id}``: 200; ids from ``CATALOG_SIZE`` up return 404.
* ``GET /users/{user_id}/orders``: 200.
* ``POST /cart/{cart_id}/checkout``: 200.
* ``GET /unavailable/{region}``: always 503, returned without raising.
* ``GET /_test/worker``: this worker's pid and the rows of its in-process registry
  (``otel_velocity.get_registry()``). The tests exclude ``/_test/`` from tracing with
  ``OTEL_PYTHON_FASTAPI_EXCLUDED_URLS``, so reading a worker's rows does not change them.

Any other path returns FastAPI's 404 without a route.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from opentelemetry import trace

CATALOG_SIZE = 1000
WORKER_PID_HEADER = "x-worker-pid"
WORKER_PID_ATTRIBUTE = "process.pid"

app = FastAPI(title="otel-velocity fleet test app")


@app.middleware("http")
async def mark_worker_pid(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    # The FastAPI instrumentation wraps the whole middleware stack, so the current span here
    # is the request's SERVER span, also for a path without a route.
    trace.get_current_span().set_attribute(WORKER_PID_ATTRIBUTE, os.getpid())
    response = await call_next(request)
    response.headers[WORKER_PID_HEADER] = str(os.getpid())
    return response


@app.get("/items/{item_id}")
async def get_item(item_id: int) -> dict[str, int]:
    if item_id >= CATALOG_SIZE:
        raise HTTPException(status_code=404, detail=f"item {item_id} not found")
    return {"item_id": item_id}


@app.get("/users/{user_id}/orders")
async def list_orders(user_id: int) -> dict[str, int]:
    return {"user_id": user_id, "orders": 3}


@app.post("/cart/{cart_id}/checkout")
async def checkout(cart_id: int) -> dict[str, Any]:
    return {"cart_id": cart_id, "status": "paid"}


@app.get("/unavailable/{region}")
async def unavailable(region: str) -> JSONResponse:
    return JSONResponse({"detail": f"region {region} is in maintenance"}, status_code=503)


@app.get("/_test/worker")
def worker_registry() -> dict[str, Any]:
    from otel_velocity import get_registry

    registry = get_registry()
    rows = [] if registry is None else registry.rows()
    return {
        "pid": os.getpid(),
        "installed": registry is not None,
        "rows": [
            {
                "service": row.service,
                "key": str(row.key),
                "count": row.window.count,
                "errors": row.window.errors,
                "count_5m": row.window.count_5m,
            }
            for row in rows
        ],
    }
