"""Serve the velocity service for the ingest benchmark, optionally with a pre-filled registry.

``python -m benchmarks.service_app --port P`` serves ``create_app()`` as
``uvicorn --factory otel_velocity_service:create_app`` would. With ``--routes N`` it first fills
the registry with 16 minutes of traffic on N routes (one request per second per route,
latencies as in benchmarks/memory.py) under an injected clock that then stays at the end of
that history, so every ``GET /ops/velocity`` computes the same full windows.
"""

from __future__ import annotations

import argparse

import uvicorn

from benchmarks.memory import START_S, SteppingClock, fill


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    parser.add_argument(
        "--routes", type=int, default=0, help="routes to fill with 16 minutes of history"
    )
    arguments = parser.parse_args(argv)

    from otel_velocity_service import create_app

    from otel_velocity import VelocityRegistry, VelocitySettings

    if arguments.routes:
        settings = VelocitySettings.from_env()
        clock = SteppingClock(START_S)
        registry = VelocityRegistry(
            settings.window, max_routes=max(settings.max_routes, arguments.routes), clock=clock
        )
        fill(registry, clock, arguments.routes, 1)
        app = create_app(registry, clock=clock)
    else:
        app = create_app()
    uvicorn.run(app, host="127.0.0.1", port=arguments.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
