"""Requests per second of one FastAPI app under ``wrk`` on loopback, in several configurations.

Every configuration serves the same route (benchmarks/apps/plain.py) from uvicorn with one
worker and no access log, so the figures differ only by instrumentation:

* (a) no instrumentation;
* (b) ``opentelemetry-instrument`` with opentelemetry-distro's defaults (traces, metrics and
  logs exporters ``otlp``), protocol set to ``http/protobuf``, and otel-velocity hidden from it;
* (c) ``opentelemetry-instrument`` with otel-velocity's distro and Sentry correlation on;
* (c0) as (c) with ``OTEL_PYTHON_FASTAPI_EXCLUDE_SPANS=`` (empty), which keeps the ASGI
  ``http send`` / ``http receive`` spans that otel-velocity's distro leaves out by default;
* (c1) as (c) with ``VELOCITY_SENTRY_OTLP=false``: spans go to the Collector only, not to Sentry;
* (c2) otel-velocity's distro without a Sentry DSN: no Sentry at all;
* (d) sentry-sdk's own tracing with ``traces_sample_rate=1.0``, no OpenTelemetry;
* (e) prometheus-fastapi-instrumentator's default metrics.

Each configuration gets its own discarding receiver on 127.0.0.1 (benchmarks/sink.py). It
replaces both the Collector and Sentry, and counts the spans that arrive. All servers start
first; then every round runs ``wrk -t1 -c16 --latency`` against each configuration in turn
(rotating the order), so slow phases of a shared machine hit all of them. The figures are
medians over the rounds, and the ratios to (b) both the ratio of medians and the median of the
ratios within each round.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.common import BIN, REPO_ROOT, Section, Table, Target, format_ratio, median

CONNECTIONS = 16
# The configurations that the targets name; --quick runs only these.
QUICK_CONFIGURATIONS = ("a", "b", "c", "d", "e")
SENTRY_KEY = "0123456789abcdef0123456789abcdef"
SENTRY_PROJECT = 4242


@dataclass(frozen=True)
class Configuration:
    name: str
    label: str
    app: str
    instrumented: bool
    env: dict[str, str] = field(default_factory=dict)
    # Hide otel-velocity's entry points, whose post-instrument hook would otherwise add the
    # velocity processor under any distro (see ``hidden_otel_velocity``).
    without_otel_velocity: bool = False


CONFIGURATIONS = (
    Configuration("a", "no instrumentation", "benchmarks.apps.plain:app", False),
    Configuration(
        "b",
        "opentelemetry-instrument, opentelemetry-distro defaults",
        "benchmarks.apps.plain:app",
        True,
        {
            "OTEL_PYTHON_DISTRO": "distro",
            "OTEL_PYTHON_CONFIGURATOR": "configurator",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "{sink}",
        },
        without_otel_velocity=True,
    ),
    Configuration(
        "c",
        "opentelemetry-instrument, otel-velocity distro, Sentry correlation",
        "benchmarks.apps.plain:app",
        True,
        {
            "OTEL_PYTHON_DISTRO": "otel_velocity",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "{sink}",
            "SENTRY_DSN": "{dsn}",
        },
    ),
    Configuration(
        "c0",
        "as (c), ASGI send/receive spans kept",
        "benchmarks.apps.plain:app",
        True,
        {
            "OTEL_PYTHON_DISTRO": "otel_velocity",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "{sink}",
            "SENTRY_DSN": "{dsn}",
            "OTEL_PYTHON_FASTAPI_EXCLUDE_SPANS": "",
        },
    ),
    Configuration(
        "c1",
        "as (c), spans not sent to Sentry (VELOCITY_SENTRY_OTLP=false)",
        "benchmarks.apps.plain:app",
        True,
        {
            "OTEL_PYTHON_DISTRO": "otel_velocity",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "{sink}",
            "SENTRY_DSN": "{dsn}",
            "VELOCITY_SENTRY_OTLP": "false",
        },
    ),
    Configuration(
        "c2",
        "otel-velocity distro, Sentry off (no SENTRY_DSN)",
        "benchmarks.apps.plain:app",
        True,
        {
            "OTEL_PYTHON_DISTRO": "otel_velocity",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "{sink}",
        },
    ),
    Configuration(
        "d",
        "sentry-sdk tracing, traces_sample_rate=1.0",
        "benchmarks.apps.sentry_tracing:app",
        False,
        {"SENTRY_DSN": "{dsn}"},
    ),
    Configuration(
        "e",
        "prometheus-fastapi-instrumentator",
        "benchmarks.apps.prometheus:app",
        False,
    ),
)


@dataclass
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


@dataclass
class Running:
    """One configuration's app server and receiver, and what wrk measured on it."""

    configuration: Configuration
    port: int
    sink_port: int
    server: subprocess.Popen[str]
    sink: subprocess.Popen[str]
    runs: list[WrkResult] = field(default_factory=list)
    requests_sent: int = 0
    sink_counts: dict[str, object] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def hidden_otel_velocity() -> Iterator[str]:
    """Yield a directory that hides otel-velocity's entry points when first on the path.

    It contains the metadata of an ``otel-velocity`` distribution without entry points.
    ``importlib.metadata.entry_points`` keeps the first distribution of each name on
    ``sys.path``, so ``opentelemetry-instrument`` then loads neither otel-velocity's distro nor
    its post-instrument hook, as if the package were not installed.
    """
    with tempfile.TemporaryDirectory(prefix="bench-plain-") as directory:
        metadata = Path(directory) / "otel_velocity-0.0.0.dist-info"
        metadata.mkdir()
        (metadata / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: otel-velocity\nVersion: 0.0.0\n"
        )
        yield directory


def _environment(
    configuration: Configuration, sink_port: int, hidden_directory: str
) -> dict[str, str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OTEL_", "SENTRY_"))
    }
    # An outer PYTHONPATH stays first, so that a run can point at another copy of the library.
    outer = os.environ.get("PYTHONPATH")
    hidden = hidden_directory if configuration.without_otel_velocity else None
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [hidden, outer, str(REPO_ROOT)]))
    environment["OTEL_SERVICE_NAME"] = "bench-app"
    sink = f"http://127.0.0.1:{sink_port}"
    dsn = f"http://{SENTRY_KEY}@127.0.0.1:{sink_port}/{SENTRY_PROJECT}"
    for name, value in configuration.env.items():
        environment[name] = value.format(sink=sink, dsn=dsn)
    return environment


def start(configuration: Configuration, hidden_directory: str) -> Running:
    sink_port = free_port()
    sink = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.sink", "--port", str(sink_port)],
        cwd=os.getcwd(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert sink.stdout is not None
    if sink.stdout.readline().strip() != "ready":
        sink.kill()
        raise RuntimeError(f"receiver for configuration {configuration.name} failed to start")

    port = free_port()
    command = [
        str(BIN / "uvicorn"),
        configuration.app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    if configuration.instrumented:
        command.insert(0, str(BIN / "opentelemetry-instrument"))
    server = subprocess.Popen(
        command,
        cwd=os.getcwd(),
        env=_environment(configuration, sink_port, hidden_directory),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return Running(configuration, port, sink_port, server, sink)


def wait_ready(running: Running, timeout_s: float = 60.0) -> None:
    url = f"http://127.0.0.1:{running.port}/items/1"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if running.server.poll() is not None:
            output = running.server.communicate()[0]
            raise RuntimeError(
                f"app of configuration {running.configuration.name} exited early:\n{output}"
            )
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                running.requests_sent += 1
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"app of configuration {running.configuration.name} not ready in time")


def run_wrk(port: int, duration_s: int) -> WrkResult:
    """Run one bounded wrk load on the app at ``port`` and parse its summary."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk not found: install Debian's package with `apt-get install wrk`")
    result = subprocess.run(
        [
            wrk,
            "-t1",
            f"-c{CONNECTIONS}",
            f"-d{duration_s}s",
            "--latency",
            f"http://127.0.0.1:{port}/items/42",
        ],
        capture_output=True,
        text=True,
        timeout=duration_s + 30,
        check=True,
    )
    return parse_wrk(result.stdout)


_LATENCY_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def parse_wrk(output: str) -> WrkResult:
    def latency_ms(percent: str) -> float:
        match = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
        if match is None:
            raise ValueError(f"no {percent}% latency in wrk output:\n{output}")
        return float(match[1]) * _LATENCY_UNITS_MS[match[2]]

    rate = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in", output, re.MULTILINE)
    if rate is None or total is None:
        raise ValueError(f"unexpected wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = int(non_2xx[1]) if non_2xx else 0
    if socket_errors:
        errors += sum(int(value) for value in socket_errors.groups())
    return WrkResult(float(rate[1]), latency_ms("50"), latency_ms("99"), int(total[1]), errors)


def stop(running: Running) -> None:
    """Stop the app, then the receiver, and read the receiver's counts."""
    if running.server.poll() is None:
        running.server.send_signal(signal.SIGTERM)
    try:
        running.server.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        running.server.kill()
        running.server.communicate()

    if running.sink.poll() is None:
        running.sink.send_signal(signal.SIGTERM)
    try:
        output, _ = running.sink.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        running.sink.kill()
        output, _ = running.sink.communicate()
    lines = output.strip().splitlines()
    if lines and lines[-1].startswith("{"):
        running.sink_counts = json.loads(lines[-1])


def measure(
    configurations: tuple[Configuration, ...], rounds: int, duration_s: int, warm_up_s: int
) -> list[Running]:
    with hidden_otel_velocity() as hidden_directory:
        return _measure(configurations, rounds, duration_s, warm_up_s, hidden_directory)


def _measure(
    configurations: tuple[Configuration, ...],
    rounds: int,
    duration_s: int,
    warm_up_s: int,
    hidden_directory: str,
) -> list[Running]:
    servers = [start(configuration, hidden_directory) for configuration in configurations]
    try:
        for running in servers:
            wait_ready(running)
        for running in servers:
            running.requests_sent += run_wrk(running.port, warm_up_s).requests
        for round_number in range(rounds):
            shift = round_number % len(servers)
            for running in servers[shift:] + servers[:shift]:
                result = run_wrk(running.port, duration_s)
                running.runs.append(result)
                running.requests_sent += result.requests
                # Let the exporters of this app send what they still hold before the next load.
                time.sleep(1.0)
    finally:
        for running in servers:
            stop(running)
    return servers


def run(quick: bool) -> Section:
    if quick:
        configurations = tuple(c for c in CONFIGURATIONS if c.name in QUICK_CONFIGURATIONS)
        return report(measure(configurations, rounds=1, duration_s=3, warm_up_s=1), 3)
    return report(measure(CONFIGURATIONS, rounds=5, duration_s=6, warm_up_s=2), 6)


def report(servers: list[Running], duration_s: int) -> Section:
    by_name = {running.configuration.name: running for running in servers}
    rates = {
        name: median([r.requests_per_s for r in running.runs]) for name, running in by_name.items()
    }
    baseline = rates.get("b")
    rounds = len(servers[0].runs)
    table = Table(
        f"Throughput, wrk -t1 -c{CONNECTIONS}, "
        f"{rounds} run(s) of {duration_s} s per configuration, medians",
        [
            "configuration",
            "requests/s",
            "range",
            "vs (b)",
            "vs (b), median of per-round ratios",
            "p50 latency",
            "p99 latency",
            "spans exported per request",
            "errors",
        ],
    )
    for name, running in by_name.items():
        runs = running.runs
        if baseline:
            # Paired by round: each round runs every configuration within a minute or two.
            round_ratios = [
                run.requests_per_s / baseline_run.requests_per_s
                for run, baseline_run in zip(runs, by_name["b"].runs, strict=True)
            ]
        spans = running.sink_counts.get("spans", {})
        assert isinstance(spans, dict)
        exported = sum(spans.values())
        per_request = f"{exported / running.requests_sent:.2f}" if exported else "-"
        if spans.get("sentry_otlp_traces"):
            per_request += f" ({spans.get('otlp_traces', 0) / running.requests_sent:.2f} OTLP + "
            per_request += f"{spans['sentry_otlp_traces'] / running.requests_sent:.2f} Sentry)"
        table.add(
            f"({name}) {running.configuration.label}",
            f"{rates[name]:.0f}",
            f"{min(r.requests_per_s for r in runs):.0f}-{max(r.requests_per_s for r in runs):.0f}",
            format_ratio(rates[name] / baseline) if baseline else "-",
            format_ratio(median(round_ratios)) if baseline else "-",
            f"{median([r.p50_ms for r in runs]):.2f} ms",
            f"{median([r.p99_ms for r in runs]):.2f} ms",
            per_request,
            sum(r.errors for r in runs),
        )
    table.notes.append(
        "Spans exported per request: spans that reached the receiver divided by all requests "
        "sent to that app (warm-up included); batches still queued at shutdown may be missing."
    )

    targets = []
    if baseline and "c" in rates:
        targets.append(
            Target(
                "(c) at least as fast as (b)",
                format_ratio(rates["c"] / baseline),
                rates["c"] >= baseline,
            )
        )
    if "c" in rates and "d" in rates:
        targets.append(
            Target(
                "(c) at least 2x (d)",
                format_ratio(rates["c"] / rates["d"]),
                rates["c"] >= 2 * rates["d"],
            )
        )
    raw = {
        name: {
            "runs": [r.__dict__ for r in running.runs],
            "requests_sent": running.requests_sent,
            "receiver": running.sink_counts,
        }
        for name, running in by_name.items()
    }
    return Section("throughput", tables=[table], raw=raw, targets=targets)


def main(argv: list[str] | None = None) -> None:
    names = [configuration.name for configuration in CONFIGURATIONS]
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.throughput",
        description="Run the throughput benchmark alone, on chosen configurations.",
    )
    parser.add_argument(
        "--configurations",
        nargs="+",
        choices=names,
        default=names,
        metavar="NAME",
        help=f"configurations to run, of: {' '.join(names)} (default: all)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="load runs per configuration")
    parser.add_argument("--seconds", type=int, default=6, help="length of each load run in s")
    arguments = parser.parse_args(argv)

    chosen = tuple(c for c in CONFIGURATIONS if c.name in arguments.configurations)
    section = report(
        measure(chosen, arguments.rounds, arguments.seconds, warm_up_s=2), arguments.seconds
    )
    for table in section.tables:
        print(table.markdown() + "\n")


if __name__ == "__main__":
    main()
