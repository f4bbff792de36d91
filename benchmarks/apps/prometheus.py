"""The benchmark app with prometheus-fastapi-instrumentator's default metrics and /metrics."""

from __future__ import annotations

from prometheus_fastapi_instrumentator import Instrumentator

from benchmarks.apps.plain import create_app

app = create_app()
Instrumentator().instrument(app).expose(app)
