"""The benchmark app without instrumentation of its own: one JSON route with a path parameter.

Configurations (a) to (c) serve this module; ``opentelemetry-instrument`` adds OpenTelemetry
to it from outside.
"""

from __future__ import annotations

from fastapi import FastAPI


def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def get_item(item_id: int) -> dict[str, object]:
        return {"item_id": item_id, "name": "widget", "price_cents": 1299}

    return app


app = create_app()
