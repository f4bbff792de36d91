"""Helpers for the Sentry outage tests: an endpoint that never responds, an app whose output is
read while it runs, and a bounded HTTP load with per-request latencies.

Everything listens and connects on 127.0.0.1 only.

Run ``python -m tests.hardening.outage`` from the repository root to print the latency, warning
and stop-time figures of each Sentry setup (about a minute on an idle 2-core machine).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

import httpx

from tests.support.app_process import REPO_ROOT, AppProcess, free_port
from tests.support.otlp_sink import OtlpTraceSink
from tests.support.sentry_ingest import DEFAULT_PROJECT_ID, DEFAULT_PUBLIC_KEY

APP = "tests.apps.instrumented_app:app"

# One cycle of the load: 2xx on async and thread-pool routes, 503s that otel-velocity turns into
# events, an HTTPException 503 and a route that captures a message. 8 of 20 requests make an
# event. No route raises, because uvicorn closes the connection after an unhandled exception and
# the reconnects would dominate the latency.
LOAD_CYCLE = (
    *[f"/items/{n}" for n in range(9)],
    *[f"/sync/{n}" for n in range(3)],
    *[f"/unavailable/shard-{n}" for n in range(4)],
    "/http-503",
    "/http-503",
    "/message/user-1",
    "/message/user-2",
)
EVENTS_PER_CYCLE = 8


def sentry_dsn(port: int) -> str:
    return f"http://{DEFAULT_PUBLIC_KEY}@127.0.0.1:{port}/{DEFAULT_PROJECT_ID}"


def closed_port() -> int:
    """Return a loopback port that nothing listens on: it was bound once and then released."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts connections, reads them and never responds."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self.bytes_received = 0

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._connections)

    def __enter__(self) -> SilentServer:
        accept = threading.Thread(target=self._accept, name="silent-accept", daemon=True)
        accept.start()
        self._threads.append(accept)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()
        with self._lock:
            for connection in self._connections:
                connection.close()
        for thread in self._threads:
            thread.join(timeout=5.0)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connection.settimeout(0.2)
            with self._lock:
                self._connections.append(connection)
            reader = threading.Thread(
                target=self._drain, args=(connection,), name="silent-read", daemon=True
            )
            reader.start()
            self._threads.append(reader)

    def _drain(self, connection: socket.socket) -> None:
        while not self._stopped.is_set():
            try:
                data = connection.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self.bytes_received += len(data)


class IngestProcess:
    """``tests.support.sentry_ingest`` in its own process: a reachable Sentry whose parsing
    does not compete with the load generator for this process's GIL."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dsn = sentry_dsn(self.port)
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> IngestProcess:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.sentry_ingest", "--port", str(self.port)],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        health_url = f"http://127.0.0.1:{self.port}/api/relay/healthcheck/live/"
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            try:
                httpx.get(health_url, timeout=1.0)
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"Sentry ingest did not respond on {health_url} within 30 s")

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10.0)


class RunningApp:
    """The instrumented app under ``opentelemetry-instrument uvicorn``, output read as it runs.

    ``AppProcess`` reads the output only at exit, so a chatty app would fill the pipe and block.
    """

    def __init__(self, env: Mapping[str, str]) -> None:
        self._app = AppProcess(APP, env, extra_args=("--no-access-log",))
        self.started_s = time.monotonic()
        self.url = self._app.url
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, name="app-output", daemon=True)
        self._reader.start()
        self.exit_code: int | None = None
        self.stop_s: float | None = None
        self.run_s: float | None = None

    def _read(self) -> None:
        stdout = self._app.process.stdout
        assert stdout is not None
        for line in stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline:
            if self._app.process.poll() is not None:
                raise AssertionError("app exited early:\n" + "\n".join(self.lines))
            try:
                if httpx.get(self.url + "/_test/setup", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("app did not respond on /_test/setup within 30 s")

    def stop(self, timeout_s: float = 60.0) -> None:
        """Send SIGTERM and record the exit code and the seconds until the process exited."""
        process = self._app.process
        started_s = time.monotonic()
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self.stop_s = time.monotonic() - started_s
        self.run_s = time.monotonic() - self.started_s
        self.exit_code = process.returncode
        self._reader.join(timeout=5.0)

    def logged_lines(self) -> list[str]:
        """Return the output lines other than uvicorn's own INFO lines."""
        return [line for line in self.lines if line.strip() and not line.startswith("INFO:")]


@dataclass
class LoadRound:
    latencies_s: list[float]
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def p99_ms(self) -> float:
        return quantile(self.latencies_s, 0.99) * 1000

    @property
    def p50_ms(self) -> float:
        return quantile(self.latencies_s, 0.5) * 1000


def quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


# A request that takes longer counts as failed, with this latency; 0 is its status.
REQUEST_TIMEOUT_S = 5.0
TIMED_OUT = 0


def run_load(url: str, requests: int, concurrency: int, max_s: float = 10.0) -> LoadRound:
    """Send ``requests`` GETs along ``LOAD_CYCLE`` from ``concurrency`` workers; time each one.

    No request starts after ``max_s`` seconds, so a slow app shortens the round instead of
    stretching the test.
    """

    async def send_all() -> LoadRound:
        paths = [LOAD_CYCLE[n % len(LOAD_CYCLE)] for n in range(requests)]
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        deadline_s = time.monotonic() + max_s
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(
            base_url=url, timeout=REQUEST_TIMEOUT_S, limits=limits
        ) as client:

            async def worker(offset: int) -> None:
                for path in paths[offset::concurrency]:
                    if time.monotonic() > deadline_s:
                        return
                    started_s = time.perf_counter()
                    try:
                        status = (await client.get(path)).status_code
                    except httpx.TimeoutException:
                        status = TIMED_OUT
                    latencies.append(time.perf_counter() - started_s)
                    statuses[status] = statuses.get(status, 0) + 1

            await asyncio.gather(*(worker(offset) for offset in range(concurrency)))
        return LoadRound(latencies, statuses)

    return asyncio.run(send_all())


def base_env(otlp_url: str) -> dict[str, str]:
    """The app's settings except the DSN: its own spans go to a local OTLP sink."""
    return {
        "OTEL_SERVICE_NAME": "shop",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_url,
        "OTEL_PYTHON_DISTRO": "otel_velocity",
        "SENTRY_RELEASE": "shop@1.0.0",
    }


@contextmanager
def started_apps(setups: Sequence[str]) -> Iterator[tuple[dict[str, RunningApp], SilentServer]]:
    """Start one app per setup: ``none`` (no DSN), ``healthy``, ``closed`` and ``silent``.

    ``closed`` points the DSN at a port nothing listens on, ``silent`` at a ``SilentServer``.
    """
    with ExitStack() as stack:
        sink = stack.enter_context(OtlpTraceSink())
        silent = stack.enter_context(SilentServer())
        ingest = stack.enter_context(IngestProcess())
        dsns = {
            "healthy": ingest.dsn,
            "closed": sentry_dsn(closed_port()),
            "silent": sentry_dsn(silent.port),
        }
        apps: dict[str, RunningApp] = {}
        try:
            for setup in setups:
                env = base_env(sink.url)
                if setup != "none":
                    env["SENTRY_DSN"] = dsns[setup]
                apps[setup] = RunningApp(env)
            for app in apps.values():
                app.wait_ready()
            yield apps, silent
        finally:
            stop_all([app for app in apps.values() if app.exit_code is None])


def stop_all(apps: Sequence[RunningApp]) -> None:
    """Stop the apps side by side, so that each stop time is measured without the others."""
    threads = [threading.Thread(target=app.stop) for app in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def measure(
    apps: Mapping[str, RunningApp], rounds: int, requests: int, concurrency: int
) -> dict[str, list[LoadRound]]:
    """Load the apps in turn, one round each per pass, so that drift hits every setup alike."""
    for app in apps.values():
        run_load(app.url, 200, concurrency)  # Warm-up: imports and first-request paths.
    results: dict[str, list[LoadRound]] = {name: [] for name in apps}
    for _ in range(rounds):
        for name, app in apps.items():
            results[name].append(run_load(app.url, requests, concurrency))
    return results


def median_p99_ms(rounds: Sequence[LoadRound]) -> float:
    return statistics.median(r.p99_ms for r in rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.hardening.outage",
        description="Print request latency, warnings and stop time of the app per Sentry setup.",
    )
    parser.add_argument("--rounds", type=int, default=8, help="load rounds per setup (8)")
    parser.add_argument("--requests", type=int, default=1000, help="requests per round (1000)")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent requests (4)")
    arguments = parser.parse_args(argv)

    setups = ("none", "healthy", "closed", "silent")
    with started_apps(setups) as (apps, silent):
        results = measure(apps, arguments.rounds, arguments.requests, arguments.concurrency)
        stop_all(list(apps.values()))
        print("| Sentry | p50 ms (median) | p99 ms per round | p99 ms (median) | lines | stop s |")
        print("|---|---:|---|---:|---:|---:|")
        for name, rounds in results.items():
            app = apps[name]
            p99s = ", ".join(f"{r.p99_ms:.1f}" for r in rounds)
            p50 = statistics.median(r.p50_ms for r in rounds)
            print(
                f"| {name} | {p50:.1f} | {p99s} | {median_p99_ms(rounds):.1f} "
                f"| {len(app.logged_lines())} | {app.stop_s:.1f} |"
            )
        print(f"\nsilent server: {silent.connections} connections, {silent.bytes_received} bytes")
        for name, app in apps.items():
            print(f"\n--- {name}: lines other than uvicorn INFO ---")
            print("\n".join(app.logged_lines()[:40]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
