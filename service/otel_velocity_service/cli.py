"""The ``otel-velocity`` command: ``serve`` runs the service, ``demo`` runs the demo."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run the subcommand and return its exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    if args.command == "serve":
        return serve(args)
    return demo(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-velocity",
        description="Per-route velocity of OpenTelemetry-instrumented services, with Sentry links.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve_parser = commands.add_parser(
        "serve",
        help="run the velocity service",
        description=(
            "Run the velocity service: OTLP/HTTP traces at POST /v1/traces, the page at "
            "/velocity. Settings come from the environment (VELOCITY_*, SENTRY_*)."
        ),
    )
    serve_parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; 0.0.0.0 accepts other hosts)",
    )
    serve_parser.add_argument(
        "--port", type=_port, default=8000, help="TCP port to listen on (default 8000)"
    )
    serve_parser.add_argument(
        "--access-log", action="store_true", help="log every HTTP request (default off)"
    )
    _add_log_level(serve_parser)

    demo_parser = commands.add_parser(
        "demo",
        help="run the service with an instrumented example shop and traffic",
        description=(
            "Start the service, an example FastAPI shop under opentelemetry-instrument and a "
            "traffic generator, all on 127.0.0.1. One route slows down after --slow-after "
            "seconds so that the page shows a p95 regression."
        ),
    )
    demo_parser.add_argument(
        "--port", type=_port, default=0, help="port of the service (default: any free port)"
    )
    demo_parser.add_argument(
        "--duration",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    demo_parser.add_argument(
        "--slow-after",
        type=_non_negative_float,
        default=60.0,
        metavar="SECONDS",
        help="seconds after start when GET /users/{user_id}/orders slows down (default 60)",
    )
    demo_parser.add_argument(
        "--rate",
        type=_rate,
        default=30.0,
        metavar="REQUESTS_PER_S",
        help="requests per second to the shop, 1 to 50 (default 30)",
    )
    demo_parser.add_argument(
        "--bucket-s",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help=(
            "window bucket length in seconds (default 10); the short window is 6 buckets, the "
            "long one 30, so 1 makes the regression show within seconds"
        ),
    )
    demo_parser.add_argument(
        "--min-samples",
        type=_positive_int,
        default=None,
        help="requests each window needs before a regression counts (demo default 20)",
    )
    demo_parser.add_argument(
        "--baseline-s",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="length of the p95 baseline in seconds (demo default 300)",
    )
    _add_log_level(demo_parser, default="warning")
    return parser


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from otel_velocity_service.app import create_app
    from otel_velocity_service.settings import ServiceSettings

    try:
        settings = ServiceSettings.from_env()
    except ValueError as error:
        print(f"otel-velocity serve: {error}", file=sys.stderr)
        return 2

    uvicorn.run(
        create_app(settings=settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=args.access_log,
    )
    return 0


def demo(args: argparse.Namespace) -> int:
    from otel_velocity_service.demo.runner import DemoOptions, run_demo

    options = DemoOptions(
        port=args.port,
        duration_s=args.duration,
        slow_after_s=args.slow_after,
        rate_per_s=args.rate,
        bucket_s=args.bucket_s,
        min_samples=args.min_samples,
        baseline_s=args.baseline_s,
    )
    return run_demo(options)


def _add_log_level(parser: argparse.ArgumentParser, default: str = "info") -> None:
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default=default,
        help=f"log level of the service (default {default})",
    )


def _port(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: use 0 to 65535")
    return value


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: use 1 or more")
    return value


def _positive_float(text: str) -> float:
    value = _float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: use a positive number")
    return value


def _non_negative_float(text: str) -> float:
    value = _float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: use 0 or more")
    return value


def _rate(text: str) -> float:
    value = _float(text)
    if not 1 <= value <= 50:
        raise argparse.ArgumentTypeError(f"invalid rate {text!r}: use 1 to 50 requests/s")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        message = f"invalid value {text!r}: expected a whole number"
        raise argparse.ArgumentTypeError(message) from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a number") from None


if __name__ == "__main__":
    sys.exit(main())
