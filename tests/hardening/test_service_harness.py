"""Shared helpers of the service hardening tests (``test_service_*.py``), with no tests.

* ``start_service``: the real service app under uvicorn in a thread on a free 127.0.0.1 port,
  with a ``ManualClock``, stopped at teardown.
* ``ServiceProcess``: the ``otel-velocity serve`` command in a subprocess, whose resident memory
  (VmRSS, VmHWM) is read from /proc.
* ``pb``: protobuf wire-format builders, for bodies that protobuf's own serializer cannot make
  (invalid UTF-8, cut-off fields, odd field layouts).
* ``chromium``: headless Debian Chromium driven by Playwright, allowed to reach 127.0.0.1 only.

Everything listens and connects on 127.0.0.1 only.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from otel_velocity_service import ServiceSettings, create_app

from otel_velocity import VelocityRegistry, WindowSettings
from tests.support.browser import launch_chromium
from tests.support.clock import ManualClock
from tests.support.uvicorn_thread import serve_in_thread

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTOBUF = "application/x-protobuf"
JSON = "application/json"

# A Unix time on a 10-second bucket boundary, so window arithmetic in tests is exact.
PROCESS_START_TIMEOUT_S = 30.0


# --- The service in this process ------------------------------------------------------------------


def serve_app(app: Any, *, access_log: bool = False) -> AbstractContextManager[str]:
    """Serve an ASGI app with uvicorn on a free 127.0.0.1 port; yield its base URL."""
    return serve_in_thread(app, log_level="info", access_log=access_log, log_config=None)


@dataclass
class RunningService:
    """The velocity service under uvicorn in this process, with its registry and clock."""

    base_url: str
    app: FastAPI
    registry: VelocityRegistry
    clock: ManualClock

    def url(self, path: str) -> str:
        return self.base_url + path

    def post(self, body: bytes, content_type: str = PROTOBUF, **headers: str) -> httpx.Response:
        """POST ``body`` to /v1/traces."""
        return httpx.post(
            self.url("/v1/traces"),
            content=body,
            headers={"Content-Type": content_type, **headers},
            timeout=30,
        )

    def table(self, **params: Any) -> dict[str, Any]:
        """Return the JSON of ``GET /ops/velocity``, failing the test on any other status."""
        response = httpx.get(self.url("/ops/velocity"), params=params, timeout=10)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def counts(self) -> dict[tuple[str, str], int]:
        """Return each row's request count in the short window, by (service, key)."""
        return {
            (row["service"], row["key"]): row["count"] for row in self.table(limit=1000)["rows"]
        }


# Fixtures are named with ``name=`` so that test modules import them as *_fixture and take
# parameters named after the fixture without shadowing the import.


@pytest.fixture(name="manual_clock")
def manual_clock_fixture() -> ManualClock:
    return ManualClock()


@pytest.fixture(name="start_service")
def start_service_fixture(
    manual_clock: ManualClock,
) -> Iterator[Callable[..., RunningService]]:
    """Start services on demand: ``start_service(settings, registry=..., access_log=...)``.

    Settings default to ``ServiceSettings()``, never the environment. Every service stops at
    teardown.
    """
    with ExitStack() as stack:

        def start(
            settings: ServiceSettings | None = None,
            *,
            registry: VelocityRegistry | None = None,
            window: WindowSettings | None = None,
            access_log: bool = False,
        ) -> RunningService:
            if registry is None:
                registry = VelocityRegistry(window, clock=manual_clock)
            app = create_app(registry, settings or ServiceSettings(), clock=manual_clock)
            base_url = stack.enter_context(serve_app(app, access_log=access_log))
            return RunningService(base_url, app, registry, manual_clock)

        yield start


@pytest.fixture(name="service")
def service_fixture(start_service: Callable[..., RunningService]) -> RunningService:
    return start_service()


class RecordingHandler(logging.Handler):
    """Keeps every log record of the loggers it is attached to."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self) -> list[str]:
        return [record.getMessage() for record in self.records]


@contextmanager
def recorded_logs(*names: str) -> Iterator[RecordingHandler]:
    """Record the log records of the named loggers at every level, within the block."""
    handler = RecordingHandler()
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


# --- The service in a subprocess ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServiceProcess:
    """``otel-velocity serve`` in a subprocess, with settings from ``env``; ``stop`` ends it.

    It runs with the default ``--host``, so it must listen on 127.0.0.1 only.
    """

    def __init__(self, env: Mapping[str, str], extra_args: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        # Only the variables a test sets: a developer's VELOCITY_* or SENTRY_* must not leak in.
        clean_env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("VELOCITY_", "SENTRY_", "OTEL_"))
        }
        command = [
            sys.executable,
            "-m",
            "otel_velocity_service",
            "serve",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            *extra_args,
        ]
        self.process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env={**clean_env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.output = ""

    def wait_ready(self) -> None:
        deadline = time.monotonic() + PROCESS_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the service exited early:\n{self.stop()}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(
            f"the service did not answer /healthz within {PROCESS_START_TIMEOUT_S} s"
        )

    def memory_kib(self) -> dict[str, int]:
        """Return VmRSS (resident now) and VmHWM (peak resident) of the process, in KiB."""
        values = {}
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        for line in status.splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0])
        return values

    def listening_addresses(self) -> list[str]:
        """Return the 'address:port' of each TCP socket of the process in the LISTEN state."""
        inodes = set()
        for fd in Path(f"/proc/{self.process.pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except FileNotFoundError:  # Closed since the listing.
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])

        addresses = []
        for table in ("tcp", "tcp6"):
            lines = Path(f"/proc/{self.process.pid}/net/{table}").read_text().splitlines()[1:]
            for line in lines:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "0A" and inode in inodes:  # 0A is TCP_LISTEN.
                    addresses.append(_proc_net_address(local))
        return addresses

    def stop(self) -> str:
        """Stop the process with SIGINT, as Ctrl-C would, and return its output."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.output, _ = self.process.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.output, _ = self.process.communicate()
        elif self.process.stdout is not None:
            self.output += self.process.stdout.read()
        return self.output


def _proc_net_address(local: str) -> str:
    """Decode a /proc/net/tcp local address such as '0100007F:1F90' (IPv4 only)."""
    host_hex, port_hex = local.split(":")
    if len(host_hex) != 8:
        return f"[{host_hex}]:{int(port_hex, 16)}"
    host = socket.inet_ntoa(struct.pack("<I", int(host_hex, 16)))
    return f"{host}:{int(port_hex, 16)}"


@contextmanager
def service_process(env: Mapping[str, str]) -> Iterator[ServiceProcess]:
    process = ServiceProcess(env)
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


# --- Protobuf wire format -------------------------------------------------------------------------


class pb:  # A namespace of builders, read as pb.span(...) and pb.request(...).
    """Builders for the protobuf encoding of OTLP trace messages, byte by byte.

    Field numbers come from opentelemetry/proto/trace/v1/trace.proto and common/v1/common.proto.
    """

    @staticmethod
    def varint(value: int) -> bytes:
        value &= (1 << 64) - 1
        out = bytearray()
        while True:
            byte = value & 0x7F
            value >>= 7
            if value:
                out.append(byte | 0x80)
            else:
                out.append(byte)
                return bytes(out)

    @staticmethod
    def tag(number: int, wire_type: int) -> bytes:
        return pb.varint(number << 3 | wire_type)

    @staticmethod
    def field(number: int, payload: bytes) -> bytes:
        """A length-delimited field."""
        return pb.tag(number, 2) + pb.varint(len(payload)) + payload

    @staticmethod
    def varint_field(number: int, value: int) -> bytes:
        return pb.tag(number, 0) + pb.varint(value)

    @staticmethod
    def fixed64_field(number: int, value: int) -> bytes:
        return pb.tag(number, 1) + struct.pack("<Q", value & ((1 << 64) - 1))

    @staticmethod
    def string_value(text: str | bytes) -> bytes:
        """An AnyValue with string_value; bytes are written as they are, valid UTF-8 or not."""
        raw = text.encode() if isinstance(text, str) else text
        return pb.field(1, raw)

    @staticmethod
    def int_value(number: int) -> bytes:
        return pb.varint_field(3, number)

    @staticmethod
    def key_value(key: str | bytes, any_value: bytes | None) -> bytes:
        raw_key = key.encode() if isinstance(key, str) else key
        value = pb.field(2, any_value) if any_value is not None else b""
        return pb.field(1, raw_key) + value

    @staticmethod
    def span(
        *,
        route: str | bytes | None = "/items/{item_id}",
        method: str | None = "GET",
        status: int | None = 200,
        trace_id: bytes | None = None,
        span_id: bytes | None = None,
        kind: int = 2,
        start_ns: int = 1_700_000_000_000_000_000,
        duration_ns: int = 5_000_000,
        end_ns: int | None = None,
        name: str | bytes = "GET",
        extra_attributes: Sequence[bytes] = (),
        extra_fields: bytes = b"",
    ) -> bytes:
        """A Span: a SERVER span with valid random ids and the old HTTP conventions by default."""
        attributes = []
        if method is not None:
            attributes.append(pb.key_value("http.method", pb.string_value(method)))
        if route is not None:
            attributes.append(pb.key_value("http.route", pb.string_value(route)))
        if status is not None:
            attributes.append(pb.key_value("http.status_code", pb.int_value(status)))
        attributes.extend(extra_attributes)
        raw_name = name.encode() if isinstance(name, str) else name
        body = (
            pb.field(1, os.urandom(16) if trace_id is None else trace_id)
            + pb.field(2, os.urandom(8) if span_id is None else span_id)
            + pb.field(5, raw_name)
            + pb.varint_field(6, kind)
            + pb.fixed64_field(7, start_ns)
            + pb.fixed64_field(8, start_ns + duration_ns if end_ns is None else end_ns)
            + b"".join(pb.field(9, attribute) for attribute in attributes)
            + extra_fields
        )
        return body

    @staticmethod
    def resource_spans(spans: Sequence[bytes], service: str | bytes | None = "shop") -> bytes:
        """A ResourceSpans with one scope holding ``spans``."""
        resource = b""
        if service is not None:
            resource = pb.field(
                1, pb.field(1, pb.key_value("service.name", pb.string_value(service)))
            )
        scope = pb.field(2, b"".join(pb.field(2, span) for span in spans))
        return resource + scope

    @staticmethod
    def request(*resources: bytes) -> bytes:
        """An ExportTraceServiceRequest of ResourceSpans encodings."""
        return b"".join(pb.field(1, resource) for resource in resources)

    @staticmethod
    def spans_request(spans: Sequence[bytes], service: str | bytes | None = "shop") -> bytes:
        return pb.request(pb.resource_spans(spans, service))


# --- Chromium -------------------------------------------------------------------------------------


@pytest.fixture(name="chromium", scope="module")
def chromium_fixture() -> Iterator[Any]:
    """Headless Debian Chromium driven by Playwright, open for one test module."""
    with launch_chromium() as browser:
        yield browser


@dataclass
class BrowserPage:
    """A page in a fresh browser context that may reach one 127.0.0.1 origin only."""

    page: Any
    requests: list[Any] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


@contextmanager
def open_page(chromium: Any, base_url: str) -> Iterator[BrowserPage]:
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    allowed_netloc = urlsplit(base_url).netloc

    def guard(route: Any) -> None:
        if urlsplit(route.request.url).netloc == allowed_netloc:
            route.continue_()
        else:
            route.abort()

    context.route("**/*", guard)
    page = context.new_page()
    view = BrowserPage(page)
    page.on("request", lambda request: view.requests.append(request))
    page.on("pageerror", lambda error: view.console_errors.append(str(error)))
    try:
        yield view
    finally:
        context.close()
