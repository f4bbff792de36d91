"""The demo shop: a FastAPI app with path parameters, client and server errors, and a slowdown.

``otel-velocity demo`` runs it under ``opentelemetry-instrument``. Routes and what they do:

* ``GET /items/{item_id}``: 5 to 15 ms; ids from ``CATALOG_SIZE`` up return 404.
* ``GET /users/{user_id}/orders``: 20 to 40 ms until ``DEMO_SLOW_AT_UNIX_S``; from then on 4
  times slower, doubling every ``DEMO_SLOW_DOUBLING_S`` seconds, up to ``MAX_SLOW_LATENCY_S``.
* ``POST /cart/{cart_id}/checkout``: 30 to 80 ms; 5% raise an exception, which returns 500.
* ``GET /search``: 10 to 50 ms; 5% answer 503 without raising.
* ``GET /health``: immediate.

Every request, also one to a path without a route, first spends 2 to 4 ms in a session lookup.
Without it the fastest routes take about 1 ms, where scheduling noise alone moves p95 by more
than the 20% regression threshold.

Environment: ``DEMO_SLOW_AT_UNIX_S`` (Unix time in seconds; unset means never slow) and
``DEMO_SLOW_DOUBLING_S`` (seconds, default 30).
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse

CATALOG_SIZE = 900
FAILURE_FRACTION = 0.05
SLOWDOWN_FACTOR = 4.0
MAX_SLOW_LATENCY_S = 1.5
DEFAULT_SLOW_DOUBLING_S = 30.0

app = FastAPI(title="otel-velocity demo shop")


@app.middleware("http")
async def look_up_session(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    await asyncio.sleep(random.uniform(0.002, 0.004))
    return await call_next(request)


class CheckoutFailed(RuntimeError):
    """The error that ``POST /cart/{cart_id}/checkout`` raises now and then."""


def orders_latency_s(now_s: float) -> float:
    """Return the latency of one orders request at ``now_s``, in seconds."""
    latency_s = random.uniform(0.020, 0.040)
    slow_at_s = _env_float("DEMO_SLOW_AT_UNIX_S", None)
    if slow_at_s is None or now_s < slow_at_s:
        return latency_s

    doubling_s = _env_float("DEMO_SLOW_DOUBLING_S", DEFAULT_SLOW_DOUBLING_S) or 1.0
    factor = SLOWDOWN_FACTOR * math.pow(2.0, (now_s - slow_at_s) / doubling_s)
    return min(latency_s * factor, MAX_SLOW_LATENCY_S)


@app.get("/items/{item_id}")
async def get_item(item_id: int) -> dict[str, Any]:
    await asyncio.sleep(random.uniform(0.005, 0.015))
    if item_id >= CATALOG_SIZE:
        raise HTTPException(status_code=404, detail=f"item {item_id} not found")
    return {"id": item_id, "name": f"item {item_id}", "price_cents": 100 + item_id}


@app.get("/users/{user_id}/orders")
async def list_orders(user_id: int) -> dict[str, Any]:
    await asyncio.sleep(orders_latency_s(time.time()))
    return {"user_id": user_id, "orders": [{"id": user_id * 10 + n} for n in range(3)]}


@app.post("/cart/{cart_id}/checkout")
async def checkout(cart_id: int) -> dict[str, Any]:
    await asyncio.sleep(random.uniform(0.030, 0.080))
    if random.random() < FAILURE_FRACTION:
        raise CheckoutFailed(f"payment provider timed out for cart {cart_id}")
    return {"cart_id": cart_id, "status": "paid"}


@app.get("/search", response_model=None)
async def search(q: str = "") -> dict[str, Any] | JSONResponse:
    await asyncio.sleep(random.uniform(0.010, 0.050))
    if random.random() < FAILURE_FRACTION:
        return JSONResponse({"detail": "search index unavailable, retry later"}, status_code=503)
    return {"query": q, "results": [f"{q}-{n}" for n in range(5)]}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


def _env_float(name: str, default: float | None) -> float | None:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default
