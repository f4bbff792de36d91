"""Run the demo: the service in this process, the shop as a child process, and traffic.

Everything listens on 127.0.0.1 and all traffic goes there. The service gets demo window
settings so that the orders slowdown shows as a p95 regression within minutes:

* ``VELOCITY_MIN_SAMPLES=20`` (library default 50): the baseline counts only requests older
  than the short window, so at the default rate it reaches 20 orders requests about 5 s
  after it starts filling, where 50 would take about 10 s more.
* ``VELOCITY_BASELINE_S=300`` (default 900): a shorter baseline, so a restarted demo's
  baseline describes the current run sooner.
* ``VELOCITY_REGRESS_THRESHOLD_PCT=50`` (default 20): the slowdown is 4x, and with 20 samples a
  healthy route's p95 moves by more than 20 % when the machine is busy.

Variables already set in the environment win over these defaults, and the ``--min-samples``,
``--baseline-s`` and ``--bucket-s`` options win over both.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import httpx
import uvicorn
from fastapi import FastAPI

from otel_velocity import VelocityRegistry, VelocitySettings, WindowSettings
from otel_velocity_service.app import create_app
from otel_velocity_service.demo.shop import DEFAULT_SLOW_DOUBLING_S, MAX_SLOW_LATENCY_S
from otel_velocity_service.demo.traffic import (
    MAX_IN_FLIGHT,
    REQUEST_MIX,
    TrafficStats,
    generate_traffic,
)
from otel_velocity_service.settings import ServiceSettings

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
SLOW_ROUTE = "GET /users/{user_id}/orders"
DEMO_WINDOW_DEFAULTS = {
    "VELOCITY_MIN_SAMPLES": "20",
    "VELOCITY_BASELINE_S": "300",
    "VELOCITY_REGRESS_THRESHOLD_PCT": "50",
}

SERVICE_START_TIMEOUT_S = 15.0
SHOP_START_TIMEOUT_S = 60.0
SHOP_STOP_TIMEOUT_S = 10.0
STATUS_INTERVAL_S = 10.0
REGRESSION_CHECK_INTERVAL_S = 1.0
# How often the shop's batch span processor exports, in milliseconds.
BSP_SCHEDULE_DELAY_MS = 500


class DemoError(RuntimeError):
    """Raised when the demo cannot start. The message names the next step."""


@dataclass(frozen=True)
class DemoOptions:
    """Command-line options of ``otel-velocity demo``; None means the demo default."""

    port: int = 0
    duration_s: float | None = None
    slow_after_s: float = 60.0
    rate_per_s: float = 30.0
    bucket_s: float | None = None
    min_samples: int | None = None
    baseline_s: float | None = None


def run_demo(options: DemoOptions, output: TextIO = sys.stdout) -> int:
    """Run the demo until ``duration_s`` passes or SIGINT/SIGTERM; return the exit status."""
    start_s = time.time()
    bin_dir = Path(sys.executable).parent
    try:
        instrument, uvicorn_binary = _find_binaries(bin_dir)
        window = demo_window_settings(options, os.environ)
        settings = ServiceSettings.from_env()
    except (DemoError, ValueError) as error:
        print(f"otel-velocity demo: {error}", file=sys.stderr)
        return 2

    settings = dataclasses.replace(
        settings, velocity=dataclasses.replace(settings.velocity, window=window)
    )
    registry = VelocityRegistry(
        window,
        max_routes=settings.velocity.max_routes,
        max_services=settings.velocity.max_services,
    )
    log_dir = Path(tempfile.mkdtemp(prefix="otel-velocity-demo-"))
    # Until the traffic loop takes over the signals, SIGTERM stops the demo like Ctrl-C does,
    # so the shop is terminated in every case.
    previous_sigterm = signal.signal(signal.SIGTERM, signal.default_int_handler)
    service: _ServiceThread | None = None
    shop: subprocess.Popen[bytes] | None = None
    try:
        service = _ServiceThread(create_app(registry, settings), options.port)
        service.start()
        shop_port = _free_port()
        shop_log = log_dir / "shop.log"
        shop = _start_shop(
            instrument,
            uvicorn_binary,
            shop_port,
            service.port,
            shop_log,
            slow_at_s=start_s + options.slow_after_s,
            slow_doubling_s=_slow_doubling_s(window),
        )
        _wait_for_shop(shop, shop_port, shop_log)

        _print_banner(output, options, window, service.port, shop_port, settings, log_dir)
        stats = asyncio.run(
            _drive(f"http://{HOST}:{shop_port}", options, registry, start_s, output)
        )
        _print_summary(output, stats, registry, start_s)
        return 0
    except DemoError as error:
        print(f"otel-velocity demo: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("otel-velocity demo: interrupted while starting; stopping", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        if shop is not None:
            _stop_process(shop)
        if service is not None:
            service.stop()
        signal.signal(signal.SIGTERM, previous_sigterm)
        logger.info("otel-velocity demo: stopped; shop log in %s", log_dir)


def demo_window_settings(options: DemoOptions, environ: Mapping[str, str]) -> WindowSettings:
    """Return the service's windows: library settings, demo defaults, then options."""
    env = {**DEMO_WINDOW_DEFAULTS, **environ}
    window = VelocitySettings.from_env(env).window
    bucket_s = options.bucket_s if options.bucket_s is not None else window.bucket_s
    baseline_s = options.baseline_s if options.baseline_s is not None else window.baseline_window_s
    return WindowSettings(
        bucket_s=bucket_s,
        short_buckets=window.short_buckets,
        long_buckets=window.long_buckets,
        baseline_buckets=max(round(baseline_s / bucket_s), 1),
        regress_threshold_pct=window.regress_threshold_pct,
        regress_min_delta_ms=window.regress_min_delta_ms,
        min_samples=options.min_samples if options.min_samples is not None else window.min_samples,
        exemplars_per_kind=window.exemplars_per_kind,
    )


async def _drive(
    base_url: str,
    options: DemoOptions,
    registry: VelocityRegistry,
    start_s: float,
    output: TextIO,
) -> TrafficStats:
    """Send traffic and report the table until the deadline or a stop signal."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    elapsed_s = time.time() - start_s
    remaining_s = None
    if options.duration_s is not None:
        remaining_s = max(options.duration_s - elapsed_s, 0.0)

    reporter = asyncio.create_task(_report(registry, start_s, stop, output))
    try:
        return await generate_traffic(base_url, options.rate_per_s, stop, remaining_s)
    finally:
        stop.set()
        await reporter
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _report(
    registry: VelocityRegistry, start_s: float, stop: asyncio.Event, output: TextIO
) -> None:
    """Print each new regression at once, and a status line every ``STATUS_INTERVAL_S``."""
    regressed: set[tuple[str, str]] = set()
    next_status_s = time.monotonic() + STATUS_INTERVAL_S
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=REGRESSION_CHECK_INTERVAL_S)

        rows = registry.rows()
        elapsed_s = time.time() - start_s
        for stats in rows:
            row_id = (stats.service, str(stats.key))
            window = stats.window
            if window.is_regress and row_id not in regressed:
                regressed.add(row_id)
                print(
                    f"+{elapsed_s:.0f} s  regression: {stats.service} {stats.key}: p95 "
                    f"{window.p95_ms or 0:.0f} ms against a baseline of "
                    f"{window.baseline_p95_ms or 0:.0f} ms (+{window.regress_pct or 0:.0f}%)",
                    file=output,
                    flush=True,
                )
            elif not window.is_regress:
                regressed.discard(row_id)

        if time.monotonic() >= next_status_s:
            next_status_s += STATUS_INTERVAL_S
            total_rps = sum(stats.window.rps for stats in rows)
            print(
                f"+{elapsed_s:.0f} s  {len(rows)} routes, {total_rps:.1f} requests/s, "
                f"regressing: {', '.join(sorted(key for _, key in regressed)) or 'none'}",
                file=output,
                flush=True,
            )


class _ServiceThread:
    """The velocity service on ``HOST``, served by uvicorn on a background thread."""

    def __init__(self, app: FastAPI, port: int) -> None:
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._listener.bind((HOST, port))
        except OSError as error:
            self._listener.close()
            raise DemoError(
                f"cannot listen on {HOST}:{port} ({error}): pass a free --port, or 0 for any"
            ) from None
        self.port: int = self._listener.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._listener]},
            name="velocity-service",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + SERVICE_START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise DemoError(f"the velocity service did not start on {HOST}:{self.port}")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(SERVICE_START_TIMEOUT_S)
        self._listener.close()


def _find_binaries(bin_dir: Path) -> tuple[Path, Path]:
    found = []
    for name in ("opentelemetry-instrument", "uvicorn"):
        path = bin_dir / name
        if not path.exists():
            raise DemoError(
                f"{path} not found: install the service in this environment with "
                "'pip install otel-velocity-service' (it brings opentelemetry-instrumentation "
                "and uvicorn)"
            )
        found.append(path)
    return found[0], found[1]


def _start_shop(
    instrument: Path,
    uvicorn_binary: Path,
    port: int,
    service_port: int,
    log_path: Path,
    *,
    slow_at_s: float,
    slow_doubling_s: float,
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "OTEL_SERVICE_NAME": "shop",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{HOST}:{service_port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": str(BSP_SCHEDULE_DELAY_MS),
        "DEMO_SLOW_AT_UNIX_S": f"{slow_at_s:.3f}",
        "DEMO_SLOW_DOUBLING_S": f"{slow_doubling_s:g}",
        "PYTHONUNBUFFERED": "1",
    }
    token = os.environ.get("VELOCITY_TOKEN", "").strip()
    if token:
        env["OTEL_EXPORTER_OTLP_HEADERS"] = f"Authorization=Bearer%20{token}"

    command = [
        str(instrument),
        str(uvicorn_binary),
        "otel_velocity_service.demo.shop:app",
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
        )


def _wait_for_shop(shop: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + SHOP_START_TIMEOUT_S
    url = f"http://{HOST}:{port}/health"
    while time.monotonic() < deadline:
        if shop.poll() is not None:
            raise DemoError(
                f"the shop exited with status {shop.returncode} while starting; its log "
                f"({log_path}) ends with:\n{_tail(log_path)}"
            )
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise DemoError(
        f"the shop did not respond to {url} within {SHOP_START_TIMEOUT_S:.0f} s; its log "
        f"({log_path}) ends with:\n{_tail(log_path)}"
    )


def _stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(SHOP_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        logger.warning(
            "otel-velocity demo: the shop (pid %d) ignored SIGTERM for %.0f s; killing it",
            process.pid,
            SHOP_STOP_TIMEOUT_S,
        )
        process.kill()
        process.wait()


def _slow_doubling_s(window: WindowSettings) -> float:
    """Double the orders latency every half short window, so p95 keeps rising past the baseline.

    At that pace the short window's p95 is about 4 times the p95 of the window before it,
    far above the 20% threshold, until the latency reaches the shop's cap.
    """
    if window.short_window_s >= 2 * DEFAULT_SLOW_DOUBLING_S:
        return DEFAULT_SLOW_DOUBLING_S
    return window.short_window_s / 2


def _print_banner(
    output: TextIO,
    options: DemoOptions,
    window: WindowSettings,
    service_port: int,
    shop_port: int,
    settings: ServiceSettings,
    log_dir: Path,
) -> None:
    base_url = f"http://{HOST}:{service_port}"
    routes = ", ".join(f"{kind.method} {kind.route}" for kind in REQUEST_MIX)
    sentry_dsn = os.environ.get("SENTRY_DSN", "").strip()
    # The baseline holds only requests older than the short window, so the earliest regression
    # is one short window after the slowdown starts, plus a bucket for it to be sealed.
    expected_s = max(options.slow_after_s, window.short_window_s) + window.bucket_s
    lines = [
        "otel-velocity demo",
        f"  page:        {base_url}/velocity",
        f"  table JSON:  {base_url}/ops/velocity",
        f"  shop:        http://{HOST}:{shop_port} (service.name 'shop', spans exported "
        f"every {BSP_SCHEDULE_DELAY_MS} ms to {base_url}/v1/traces)",
        f"  traffic:     {options.rate_per_s:g} requests/s to {routes}",
        f"  slowdown:    {SLOW_ROUTE} gets 4x slower {options.slow_after_s:g} s after start, "
        f"then doubles every {_slow_doubling_s(window):g} s up to "
        f"{MAX_SLOW_LATENCY_S * 1000:.0f} ms",
        f"  regression:  {window.bucket_s:g} s buckets, short window {window.short_window_s:g} s, "
        f"baseline {window.baseline_window_s:g} s, at least {window.min_samples} requests in "
        f"each (demo defaults VELOCITY_BASELINE_S=300, VELOCITY_MIN_SAMPLES=20, "
        f"VELOCITY_REGRESS_THRESHOLD_PCT=50); expect "
        f"is_regress for {SLOW_ROUTE} from about {expected_s:.0f} s after start",
        "  Sentry:      "
        + (
            "on: the shop sends errors and traces to SENTRY_DSN"
            if sentry_dsn
            else "off: set SENTRY_DSN to send the shop's errors to Sentry"
        )
        + (
            "; page links on"
            if settings.sentry_links
            else f"; page links off ({settings.sentry_off_reason})"
        ),
        f"  logs:        {log_dir}",
        "  "
        + (
            f"Runs for {options.duration_s:g} s."
            if options.duration_s is not None
            else "Runs until Ctrl-C."
        ),
    ]
    print("\n".join(lines), file=output, flush=True)


def _print_summary(
    output: TextIO, stats: TrafficStats, registry: VelocityRegistry, start_s: float
) -> None:
    statuses = ", ".join(f"{code}: {count}" for code, count in sorted(stats.statuses.items()))
    failures = ", ".join(f"{name}: {count}" for name, count in sorted(stats.failures.items()))
    print(
        f"+{time.time() - start_s:.0f} s  sent {stats.sent} requests ({statuses}"
        + (f"; failed {failures}" if failures else "")
        + (f"; {stats.skipped} skipped while {MAX_IN_FLIGHT} were open" if stats.skipped else "")
        + f"); {len(registry.rows())} routes in the table",
        file=output,
        flush=True,
    )


def _free_port() -> int:
    """Return a port that was free on ``HOST`` a moment ago.

    NOTE: another process can take it before the shop binds it; the shop then fails to start
    and the demo prints its log.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(cannot read the log: {error})"
