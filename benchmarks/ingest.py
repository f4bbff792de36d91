"""OTLP ingest of the velocity service, and the latency of ``GET /ops/velocity``.

* In-process, on protobuf batches of 512 SERVER spans (benchmarks/spans.py, encoded with the
  OTLP exporter's own encoder): ``ingest_body`` of ``otel_velocity_service.otlp``, which
  ``POST /v1/traces`` runs for each request, and ``parse_request`` (protobuf's own parser)
  followed by ``ingest``. Each repeat times one batch; the figure is 512 divided by the median.
* Over HTTP: the same batches posted by ``wrk -t1 -c4`` (a Lua script sets the binary body) to
  the service under uvicorn with one worker (benchmarks/service_app.py), three runs of 4 s. The
  figure is the median run.
* ``GET /ops/velocity`` with the default query (sorted by p95, 100 rows) and with
  ``limit=1000``, sequentially over one keep-alive connection, on a service whose registry
  contains 16 minutes of history for 10, 100 or 1,000 routes. ``VelocityRegistry.rows()`` alone
  is timed in-process on the same kind of registry, since it computes every row.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from benchmarks.common import Section, Table, Target, median
from benchmarks.memory import START_S, SteppingClock, fill
from benchmarks.spans import server_spans
from benchmarks.throughput import free_port, parse_wrk
from otel_velocity.registry import VelocityRegistry

TARGET_SPANS_PER_S = 50_000
TARGET_TABLE_MS = 50.0
SPANS_PER_BATCH = 512

POST_SCRIPT = """
local file = io.open("{body}", "rb")
wrk.method = "POST"
wrk.body = file:read("*all")
file:close()
wrk.headers["Content-Type"] = "application/x-protobuf"
"""


def batches(count: int) -> list[bytes]:
    """Serialize ``count`` ExportTraceServiceRequests of 512 SERVER spans each."""
    spans = server_spans(SPANS_PER_BATCH * count, seed=3)
    return [
        encode_spans(
            spans[number * SPANS_PER_BATCH : (number + 1) * SPANS_PER_BATCH]
        ).SerializeToString()
        for number in range(count)
    ]


def measure_in_process(repeats: int) -> dict[str, list[float]]:
    """Time the decode and record steps per batch, in seconds.

    ``endpoint`` times ``ingest_body``, which ``POST /v1/traces`` runs for a protobuf body; it is
    left out when the service has no such function. ``decode``, ``record`` and
    ``decode_and_record`` time protobuf's own parser (``parse_request``) followed by ``ingest``.
    """
    from otel_velocity_service import otlp
    from otel_velocity_service.own_routes import OwnRoutes

    ingest_body = getattr(otlp, "ingest_body", None)
    bodies = batches(8)
    registry = VelocityRegistry()
    own_templates = OwnRoutes(include_unmatched=True).templates_for
    for body in bodies:  # Warm up: create every route's window.
        otlp.ingest(otlp.parse_request(body, otlp.Encoding.PROTOBUF), registry, own_templates)

    times: dict[str, list[float]] = {"decode": [], "record": [], "decode_and_record": []}
    if ingest_body is not None:
        times["endpoint"] = []
    for repeat in range(repeats):
        body = bodies[repeat % len(bodies)]
        start = time.perf_counter()
        request = otlp.parse_request(body, otlp.Encoding.PROTOBUF)
        decoded = time.perf_counter()
        otlp.ingest(request, registry, own_templates)
        done = time.perf_counter()
        times["decode"].append(decoded - start)
        times["record"].append(done - decoded)
        times["decode_and_record"].append(done - start)
        if ingest_body is not None:
            start = time.perf_counter()
            ingest_body(body, otlp.Encoding.PROTOBUF, registry, own_templates)
            times["endpoint"].append(time.perf_counter() - start)
    return times


class ServiceProcess:
    """benchmarks/service_app.py in a subprocess on a free loopback port."""

    def __init__(self, routes: int = 0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("OTEL_", "SENTRY_", "VELOCITY_"))
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "benchmarks.service_app",
                "--port",
                str(self.port),
                "--routes",
                str(routes),
            ],
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited early:\n{self.process.communicate()[0]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError(f"service on port {self.port} not ready within {timeout_s} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()


def measure_http_ingest(duration_s: int, warm_up_s: int, rounds: int) -> dict[str, float]:
    """Post batches with wrk for ``rounds`` runs of ``duration_s``; return the median run."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk not found: install Debian's package with `apt-get install wrk`")
    service = ServiceProcess()
    runs = []
    with tempfile.TemporaryDirectory() as directory:
        body_path = Path(directory) / "batch.bin"
        body_path.write_bytes(batches(1)[0])
        script_path = Path(directory) / "post.lua"
        script_path.write_text(POST_SCRIPT.format(body=body_path))
        try:
            service.wait_ready()
            command = [wrk, "-t1", "-c4", "--latency", "-s", str(script_path)]
            url = service.url + "/v1/traces"
            subprocess.run(
                [*command, f"-d{warm_up_s}s", url], capture_output=True, check=True, timeout=60
            )
            for _ in range(rounds):
                result = subprocess.run(
                    [*command, f"-d{duration_s}s", url],
                    capture_output=True,
                    text=True,
                    check=True,
                    timeout=duration_s + 60,
                )
                runs.append(parse_wrk(result.stdout))
        finally:
            service.stop()
    runs.sort(key=lambda run: run.requests_per_s)
    figures = runs[len(runs) // 2]
    return {
        "requests_per_s": figures.requests_per_s,
        "spans_per_s": figures.requests_per_s * SPANS_PER_BATCH,
        "spans_per_s_range": (
            runs[0].requests_per_s * SPANS_PER_BATCH,
            runs[-1].requests_per_s * SPANS_PER_BATCH,
        ),
        "p50_ms": figures.p50_ms,
        "p99_ms": figures.p99_ms,
        "errors": sum(run.errors for run in runs),
    }


def measure_table(routes: int, requests: int) -> dict[str, float]:
    service = ServiceProcess(routes)
    try:
        service.wait_ready()
        figures: dict[str, float] = {"routes": routes}
        with httpx.Client(base_url=service.url, timeout=30.0) as client:
            for label, path in (("default", "/ops/velocity"), ("all", "/ops/velocity?limit=1000")):
                timings_ms = []
                for number in range(requests + 3):
                    start = time.perf_counter()
                    response = client.get(path)
                    elapsed_ms = (time.perf_counter() - start) * 1000
                    response.raise_for_status()
                    if number >= 3:  # The first requests warm up caches and the thread pool.
                        timings_ms.append(elapsed_ms)
                total = response.json()["total"]
                if total != routes:
                    raise RuntimeError(f"/ops/velocity shows {total} rows, expected {routes}")
                timings_ms.sort()
                figures[f"{label}_median_ms"] = median(timings_ms)
                figures[f"{label}_p95_ms"] = timings_ms[int(0.95 * (len(timings_ms) - 1))]
        return figures
    finally:
        service.stop()


def measure_rows(routes: int, repeats: int) -> float:
    """Return the median time of ``VelocityRegistry.rows()`` in ms, in-process."""
    clock = SteppingClock(START_S)
    registry = VelocityRegistry(clock=clock, max_routes=max(routes, 1000))
    fill(registry, clock, routes, 1)
    timings_ms = []
    for _ in range(repeats):
        start = time.perf_counter()
        registry.rows()
        timings_ms.append((time.perf_counter() - start) * 1000)
    return median(timings_ms)


def run(quick: bool) -> Section:
    in_process = measure_in_process(repeats=20 if quick else 100)
    http = measure_http_ingest(
        duration_s=2 if quick else 4, warm_up_s=1 if quick else 2, rounds=1 if quick else 3
    )
    route_counts = (10, 1000) if quick else (10, 100, 1000)
    tables = [measure_table(routes, requests=3 if quick else 20) for routes in route_counts]
    rows_ms = {} if quick else {routes: measure_rows(routes, 5) for routes in route_counts}

    per_batch = {name: median(values) for name, values in in_process.items()}
    ingest_table = Table(
        f"OTLP ingest, protobuf batches of {SPANS_PER_BATCH} SERVER spans",
        ["path", "spans/s", "per batch", "notes"],
    )
    if "endpoint" in per_batch:
        ingest_table.add(
            "ingest_body (what POST /v1/traces runs), in-process",
            f"{SPANS_PER_BATCH / per_batch['endpoint']:,.0f}",
            f"{per_batch['endpoint'] * 1000:.1f} ms",
            "median",
        )
    ingest_table.add(
        "parse_request + ingest, in-process",
        f"{SPANS_PER_BATCH / per_batch['decode_and_record']:,.0f}",
        f"{per_batch['decode_and_record'] * 1000:.1f} ms",
        f"decode {per_batch['decode'] * 1000:.1f} ms, "
        f"record {per_batch['record'] * 1000:.1f} ms (medians)",
    )
    ingest_table.add(
        "POST /v1/traces, uvicorn, 1 worker, wrk -c4 (median run)",
        f"{http['spans_per_s']:,.0f} (runs: "
        + " - ".join(f"{rate:,.0f}" for rate in http["spans_per_s_range"])
        + ")",
        f"p50 {http['p50_ms']:.1f} ms, p99 {http['p99_ms']:.1f} ms",
        f"{http['requests_per_s']:.0f} requests/s, {http['errors']:.0f} errors",
    )

    table_latency = Table(
        "GET /ops/velocity with 16 minutes of history per route",
        [
            "routes",
            "default query, median",
            "default, p95",
            "limit=1000, median",
            "limit=1000, p95",
            "rows() alone, in-process",
        ],
    )
    for figures in tables:
        routes = int(figures["routes"])
        table_latency.add(
            routes,
            f"{figures['default_median_ms']:.1f} ms",
            f"{figures['default_p95_ms']:.1f} ms",
            f"{figures['all_median_ms']:.1f} ms",
            f"{figures['all_p95_ms']:.1f} ms",
            f"{rows_ms[routes]:.1f} ms" if routes in rows_ms else "(full run only)",
        )

    http_rate = http["spans_per_s"]
    in_process_rate = SPANS_PER_BATCH / per_batch.get("endpoint", per_batch["decode_and_record"])
    at_1000 = tables[-1]["default_median_ms"]
    targets = [
        Target(
            f"ingest ≥ {TARGET_SPANS_PER_S:,} spans/s (service over HTTP)",
            f"{http_rate:,.0f} spans/s (in-process {in_process_rate:,.0f})",
            http_rate >= TARGET_SPANS_PER_S,
        ),
        Target(
            f"GET /ops/velocity ≤ {TARGET_TABLE_MS:.0f} ms at 1,000 routes (median, default query)",
            f"{at_1000:.1f} ms",
            at_1000 <= TARGET_TABLE_MS,
        ),
    ]
    raw = {"in_process_s": in_process, "http": http, "table": tables, "rows_ms": rows_ms}
    return Section("ingest", tables=[ingest_table, table_latency], raw=raw, targets=targets)
