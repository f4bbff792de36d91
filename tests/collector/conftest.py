"""Fixtures for tests that run the real otelcol-velocity Collector binary.

The binary is built by `bash .ci/build-collector`. These tests fail, never
skip, when it is missing.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
COLLECTOR_BINARY = REPO_ROOT / ".cache" / "otelcol-velocity" / "otelcol-velocity"
COLLECTOR_CONFIG = REPO_ROOT / "collector.yaml"

# Prefixes of the environment variables that collector.yaml reads.
COLLECTOR_ENV_PREFIXES = ("OTELCOL_", "SENTRY_", "VELOCITY_")

# Seconds to wait for the Collector's health check after launch, and for it
# to exit after SIGTERM. Both took under a second in this suite's runs on a
# 2-core machine, and the margin is for a loaded CI machine.
STARTUP_TIMEOUT_SECONDS = 30.0
SHUTDOWN_TIMEOUT_SECONDS = 15.0


@pytest.fixture(scope="session")
def collector_binary() -> Path:
    """Path of the Collector built by .ci/build-collector. Fails the test when missing."""
    if not os.access(COLLECTOR_BINARY, os.X_OK):
        pytest.fail(
            f"Collector binary not found or not executable at {COLLECTOR_BINARY}. "
            "Build it with `bash .ci/build-collector` from the repository root (needs Go).",
            pytrace=False,
        )
    return COLLECTOR_BINARY


@pytest.fixture(scope="session")
def collector_config() -> Path:
    return COLLECTOR_CONFIG


def free_tcp_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    NOTE: another process can take the port before the Collector binds it.
    The Collector then exits with "address already in use" in its log.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def environment_without_collector_variables() -> dict[str, str]:
    """A copy of os.environ without the variables that collector.yaml reads."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(COLLECTOR_ENV_PREFIXES)
    }


@pytest.fixture
def collector_env(environment_without_collector_variables: dict[str, str]) -> dict[str, str]:
    """Environment for the Collector with every variable of collector.yaml set.

    Each listener gets its own free port on 127.0.0.1. Both exporters point at
    127.0.0.1:9, where nothing listens, until a test points them at a sink.
    The result does not depend on the caller's shell.
    """
    env = dict(environment_without_collector_variables)
    env.update(
        OTELCOL_OTLP_GRPC_ENDPOINT=f"127.0.0.1:{free_tcp_port()}",
        OTELCOL_OTLP_HTTP_ENDPOINT=f"127.0.0.1:{free_tcp_port()}",
        OTELCOL_HEALTH_CHECK_ENDPOINT=f"127.0.0.1:{free_tcp_port()}",
        OTELCOL_METRICS_HOST="127.0.0.1",
        OTELCOL_METRICS_PORT=str(free_tcp_port()),
        OTELCOL_MEMORY_CHECK_INTERVAL="1s",
        OTELCOL_MEMORY_LIMIT_MIB="256",
        OTELCOL_MEMORY_SPIKE_LIMIT_MIB="64",
        OTELCOL_BATCH_SIZE="512",
        OTELCOL_BATCH_TIMEOUT="100ms",
        OTELCOL_LOG_LEVEL="info",
        VELOCITY_OTLP_ENDPOINT="http://127.0.0.1:9",
        SENTRY_OTLP_TRACES_ENDPOINT="http://127.0.0.1:9/api/4242/integration/otlp/v1/traces",
        SENTRY_PUBLIC_KEY="test-public-key",
    )
    return env


@dataclass
class CollectorProcess:
    """A running Collector subprocess and the files and addresses tests need."""

    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]

    @property
    def grpc_endpoint(self) -> str:
        return self.env["OTELCOL_OTLP_GRPC_ENDPOINT"]

    @property
    def http_endpoint(self) -> str:
        return self.env["OTELCOL_OTLP_HTTP_ENDPOINT"]

    @property
    def health_url(self) -> str:
        return f"http://{self.env['OTELCOL_HEALTH_CHECK_ENDPOINT']}/"

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log written)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int:
        """Stop the Collector with SIGTERM and return its exit code.

        SIGTERM makes the Collector shut down gracefully: exporters send what
        is still queued before it exits. SIGKILL follows if it does not exit
        within SHUTDOWN_TIMEOUT_SECONDS.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=SHUTDOWN_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=SHUTDOWN_TIMEOUT_SECONDS)
        return self.process.returncode


def wait_until_healthy(collector: CollectorProcess, timeout: float) -> None:
    """Poll the health_check extension until it returns 200 or the timeout passes."""
    deadline = time.monotonic() + timeout
    last_error = "no request sent"
    while time.monotonic() < deadline:
        if collector.process.poll() is not None:
            pytest.fail(
                f"Collector exited with code {collector.process.returncode} "
                f"before it became healthy. Log tail:\n{collector.log_tail()}",
                pytrace=False,
            )
        try:
            with urllib.request.urlopen(collector.health_url, timeout=1) as response:
                if response.status == 200:
                    return
                last_error = f"status {response.status}"
        except urllib.error.HTTPError as error:
            # The extension returns 503 until the pipelines are running.
            last_error = f"status {error.code}"
        except OSError as error:
            last_error = str(error)
        time.sleep(0.05)
    pytest.fail(
        f"Collector health check at {collector.health_url} did not return 200 within {timeout} s "
        f"(last result: {last_error}). Log tail:\n{collector.log_tail()}",
        pytrace=False,
    )


@pytest.fixture
def start_collector(
    collector_binary: Path,
    collector_config: Path,
    tmp_path: Path,
) -> Iterator[Callable[[dict[str, str]], CollectorProcess]]:
    """Factory that launches the Collector with collector.yaml and waits until it is healthy.

    Every Collector it started is stopped at teardown, also when the test failed.
    """
    started: list[CollectorProcess] = []

    def start(env: dict[str, str]) -> CollectorProcess:
        log_path = tmp_path / f"collector-{len(started)}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [str(collector_binary), "--config", str(collector_config)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        collector = CollectorProcess(process=process, log_path=log_path, env=env)
        started.append(collector)
        wait_until_healthy(collector, STARTUP_TIMEOUT_SECONDS)
        return collector

    yield start

    for collector in started:
        collector.stop()


# --- The velocity service and instrumented apps, for the fleet tests ---------------------

# Prefixes of variables that would change how an instrumented app or the service behaves.
# They are removed from the test process's environment before a test sets its own.
APP_ENV_PREFIXES = ("OTEL_", "SENTRY_", "VELOCITY_")
VENV_BIN = Path(sys.executable).parent

# Seconds to wait for the service or an app to respond after launch, and for one to exit after
# SIGTERM. Each took under 3 s in this suite's runs on a 2-core machine.
PROCESS_START_TIMEOUT_SECONDS = 30.0
PROCESS_STOP_TIMEOUT_SECONDS = 20.0


def wait_until(
    condition: Callable[[], object], timeout_s: float, description: Callable[[], str]
) -> None:
    """Poll ``condition`` until it returns a truthy value, and fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(
                f"timed out after {timeout_s} s waiting until {description()}", pytrace=False
            )
        time.sleep(0.05)


@dataclass
class ServerProcess:
    """A subprocess serving HTTP on 127.0.0.1: the velocity service or an instrumented app."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log written)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_until_ready(self, path: str, timeout_s: float) -> None:
        """Poll ``GET path`` until it returns 200, and fail if the process exits or times out."""
        deadline = time.monotonic() + timeout_s
        last_error = "no request sent"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(
                    f"{self.name} exited with code {self.process.returncode} before it answered "
                    f"GET {path}. Log tail:\n{self.log_tail()}",
                    pytrace=False,
                )
            try:
                response = httpx.get(self.url + path, timeout=1.0)
                if response.status_code == 200:
                    return
                last_error = f"status {response.status_code}"
            except httpx.TransportError as error:
                last_error = repr(error)
            time.sleep(0.05)
        pytest.fail(
            f"{self.name} did not answer GET {self.url}{path} with 200 within {timeout_s} s "
            f"(last result: {last_error}). Log tail:\n{self.log_tail()}",
            pytrace=False,
        )

    def stop(self) -> int:
        """Send SIGTERM, wait for the exit and return the exit code.

        SIGKILL follows if the process does not exit within PROCESS_STOP_TIMEOUT_SECONDS.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=PROCESS_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=PROCESS_STOP_TIMEOUT_SECONDS)
        return self.process.returncode


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Factory that launches ``command`` with ``env`` and the repository as working directory.

    ``command`` may contain ``{port}``, which is replaced with a free port on 127.0.0.1. The
    process's output goes to a log file in ``tmp_path``. Every server it started is stopped
    at teardown, also when the test failed.
    """
    started: list[ServerProcess] = []

    def start(name: str, command: list[str], env: dict[str, str]) -> ServerProcess:
        port = free_tcp_port()
        log_path = tmp_path / f"{name}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [part.format(port=port) for part in command],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        server = ServerProcess(name, process, f"http://127.0.0.1:{port}", log_path)
        started.append(server)
        return server

    yield start

    for server in started:
        server.stop()


@pytest.fixture
def clean_environment() -> dict[str, str]:
    """A copy of os.environ without OTEL_*, SENTRY_* and VELOCITY_* variables."""
    return {
        name: value for name, value in os.environ.items() if not name.startswith(APP_ENV_PREFIXES)
    }


@dataclass
class VelocityService:
    """``otel-velocity serve`` in a subprocess, with readers for ``GET /ops/velocity``."""

    server: ServerProcess

    @property
    def url(self) -> str:
        return self.server.url

    def table(self, **params: object) -> dict[str, Any]:
        """Return the JSON of ``GET /ops/velocity`` with up to 1,000 rows."""
        response = httpx.get(
            self.url + "/ops/velocity", params={"limit": 1000, **params}, timeout=10.0
        )
        assert response.status_code == 200, response.text
        table: dict[str, Any] = response.json()
        return table

    def rows(self, **params: object) -> dict[tuple[str, str], dict[str, Any]]:
        """Return the table's rows by (service, key)."""
        return {(row["service"], row["key"]): row for row in self.table(**params)["rows"]}

    def counts(self, service: str) -> dict[str, int]:
        """Return the short-window request count of each route key of one service."""
        return {row["key"]: row["count"] for row in self.table(service=service)["rows"]}


@pytest.fixture
def start_velocity_service(
    start_server: Callable[..., ServerProcess], clean_environment: dict[str, str]
) -> Callable[..., VelocityService]:
    """Factory that runs ``otel-velocity serve`` on a free port with ``settings`` as environment.

    The service runs without OpenTelemetry, so only the spans it receives reach its table.
    """

    def start(**settings: str) -> VelocityService:
        server = start_server(
            "velocity-service",
            [str(VENV_BIN / "otel-velocity"), "serve", "--port", "{port}", "--log-level", "info"],
            {**clean_environment, **settings},
        )
        server.wait_until_ready("/healthz", PROCESS_START_TIMEOUT_SECONDS)
        return VelocityService(server)

    return start


def instrumented_app_env(
    clean_environment: dict[str, str], collector: CollectorProcess, service_name: str
) -> dict[str, str]:
    """Environment for an app under ``opentelemetry-instrument`` that exports to ``collector``.

    The app's spans go over OTLP/HTTP protobuf to the Collector's HTTP receiver, with
    otel-velocity's distro. Requests to ``/_test/`` paths, such as the readiness and read-out
    endpoints of tests/apps/fleet_app.py, make no spans. Tests add the batch span processor
    settings they need.
    """
    return {
        **clean_environment,
        "PYTHONPATH": str(REPO_ROOT),
        "OTEL_PYTHON_DISTRO": "otel_velocity",
        "OTEL_SERVICE_NAME": service_name,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{collector.http_endpoint}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "/_test/",
    }
