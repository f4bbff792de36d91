"""Fixtures for tests that run the real otelcol-velocity Collector binary.

The binary is built by `bash .ci/build-collector`. These tests fail, never
skip, when it is missing.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

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
