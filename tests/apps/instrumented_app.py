"""A FastAPI app with one route per case the correlation must handle; run it under
``opentelemetry-instrument`` in a subprocess. Nothing here imports otel_velocity except the
test-only read-out endpoints, which report what the library built in this process."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import sentry_sdk
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from opentelemetry import propagate, trace
from starlette.types import ASGIApp, Receive, Scope, Send

app = FastAPI()


class MaintenanceMode:
    """Respond 503 to paths under ``/maintenance/`` before routing, so their spans have no route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/maintenance/"):
            response = JSONResponse({"detail": "maintenance"}, status_code=503)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


app.add_middleware(MaintenanceMode)


@app.get("/items/{item_id}")
async def get_item(item_id: int) -> dict[str, int]:
    return {"item_id": item_id}


@app.get("/sync/{n}")
def sync_route(n: int) -> dict[str, int]:
    time.sleep(0.001)
    return {"n": n}


@app.get("/unavailable/{shard}")
async def unavailable(shard: str) -> JSONResponse:
    return JSONResponse({"detail": "maintenance"}, status_code=503)


@app.get("/boom/{case}")
async def boom(case: str) -> None:
    raise RuntimeError(f"boom {case}")


@app.get("/sync-boom")
def sync_boom() -> None:
    raise ValueError("sync boom")


@app.get("/http-503")
async def http_503() -> None:
    raise HTTPException(status_code=503, detail="upstream down")


@app.get("/teapot")
async def teapot() -> JSONResponse:
    return JSONResponse({"detail": "short and stout"}, status_code=418)


@app.get("/message/{user_id}")
async def message(user_id: str) -> dict[str, str]:
    sentry_sdk.capture_message(f"handled message for {user_id}")
    span = trace.get_current_span().get_span_context()
    return {"trace_id": format(span.trace_id, "032x")}


@app.get("/left/{n}")
async def left(n: int) -> dict[str, str]:
    await asyncio.sleep(0.02 * (n % 3))
    sentry_sdk.capture_message(f"from left {n}")
    return {"trace_id": format(trace.get_current_span().get_span_context().trace_id, "032x")}


@app.get("/right/{n}")
def right(n: int) -> dict[str, str]:
    time.sleep(0.02 * (n % 3))
    sentry_sdk.capture_message(f"from right {n}")
    return {"trace_id": format(trace.get_current_span().get_span_context().trace_id, "032x")}


@app.get("/propagation")
async def propagation(request: Request) -> dict[str, object]:
    outgoing: dict[str, str] = {}
    propagate.inject(outgoing)
    span = trace.get_current_span().get_span_context()
    return {"trace_id": format(span.trace_id, "032x"), "outgoing": outgoing}


@app.get("/_test/velocity")
def velocity_rows() -> list[dict[str, object]]:
    from otel_velocity import get_registry

    registry = get_registry()
    if registry is None:
        return []
    return [
        {
            "service": row.service,
            "key": str(row.key),
            "count": row.window.count,
            "errors": row.window.errors,
            "p50_ms": row.window.p50_ms,
            "exemplar_trace_ids": [e.trace_id_hex for e in row.window.exemplars],
        }
        for row in registry.rows()
    ]


@app.get("/_test/setup")
def setup() -> dict[str, object]:
    from otel_velocity import VelocitySpanProcessor

    provider = trace.get_tracer_provider()
    processors = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", ())
    return {
        "provider": type(provider).__name__,
        "velocity_processors": sum(isinstance(p, VelocitySpanProcessor) for p in processors),
        "processors": [type(p).__name__ for p in processors],
        "protocol": os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL"),
        "sigterm_handler": getattr(signal.getsignal(signal.SIGTERM), "__qualname__", None),
    }
