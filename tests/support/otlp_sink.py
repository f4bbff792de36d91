"""OTLP/HTTP trace sink for tests: a real HTTP server on 127.0.0.1 that
records every export request it receives.

It accepts protobuf-encoded ``ExportTraceServiceRequest`` bodies, plain or
with ``Content-Encoding: gzip`` (the Collector's otlp_http exporter sends
gzip by default), on any path, and responds to each with an empty
``ExportTraceServiceResponse``. Tests read what arrived through ``exports``,
``spans()`` and ``wait_for_spans()``.

Usage::

    with OtlpTraceSink() as sink:
        ...  # point an exporter at sink.url + "/v1/traces"
        spans = sink.wait_for_spans(3, timeout=10)
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

PROTOBUF_CONTENT_TYPE = "application/x-protobuf"

# Bodies larger than this are rejected with 413 before they are read, so a
# broken client cannot make the test process buffer unbounded data.
MAX_BODY_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ReceivedExport:
    """One export request that the sink accepted and decoded."""

    path: str
    # Header names are lowercased. A repeated header keeps its last value.
    headers: dict[str, str]
    request: ExportTraceServiceRequest

    @property
    def spans(self) -> list[Span]:
        return [
            span
            for resource_spans in self.request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]


@dataclass(frozen=True)
class RejectedRequest:
    """A request that the sink rejected with an error status, kept for diagnosis."""

    method: str
    path: str
    status: int
    reason: str


class OtlpTraceSink:
    """OTLP/HTTP trace receiver that records requests instead of processing them.

    The server listens on 127.0.0.1 only. Port 0 picks a free port, which
    ``port`` and ``url`` return.
    """

    def __init__(self, port: int = 0) -> None:
        self._lock = threading.Lock()
        self._received = threading.Condition(self._lock)
        self._exports: list[ReceivedExport] = []
        self._rejected: list[RejectedRequest] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._make_handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """Base URL without a path, such as ``http://127.0.0.1:41234``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def exports(self) -> list[ReceivedExport]:
        """A snapshot of the accepted export requests, in arrival order."""
        with self._lock:
            return list(self._exports)

    @property
    def rejected(self) -> list[RejectedRequest]:
        """A snapshot of the requests rejected with an error status."""
        with self._lock:
            return list(self._rejected)

    def spans(self) -> list[Span]:
        """Return every span received so far, in arrival order."""
        return [span for export in self.exports for span in export.spans]

    def wait_for_spans(self, count: int, timeout: float) -> list[Span]:
        """Block until at least ``count`` spans have arrived, then return all of them.

        Raises ``TimeoutError`` after ``timeout`` seconds, with the number of
        spans and the rejected requests seen so far.
        """
        deadline = time.monotonic() + timeout
        with self._received:
            while True:
                received = [span for export in self._exports for span in export.spans]
                if len(received) >= count:
                    return received
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"OTLP sink at {self.url} received {len(received)} of "
                        f"{count} expected spans within {timeout} s; "
                        f"rejected requests: {self._rejected}"
                    )
                self._received.wait(remaining)

    def start(self) -> OtlpTraceSink:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            name=f"otlp-sink-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> OtlpTraceSink:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _record_export(self, export: ReceivedExport) -> None:
        with self._received:
            self._exports.append(export)
            self._received.notify_all()

    def _record_rejection(self, rejection: RejectedRequest) -> None:
        with self._lock:
            self._rejected.append(rejection)

    def _make_handler(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.1 lets the Collector's client reuse connections between exports.
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self._read_body()
                if body is None:
                    return

                content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
                if content_type != PROTOBUF_CONTENT_TYPE:
                    self._reject(
                        415,
                        f"unsupported Content-Type {content_type!r}, "
                        f"expected {PROTOBUF_CONTENT_TYPE}",
                    )
                    return

                encoding = self.headers.get("Content-Encoding", "").strip().lower()
                if encoding == "gzip":
                    try:
                        body = gzip.decompress(body)
                    except (OSError, EOFError, zlib.error) as error:
                        self._reject(400, f"invalid gzip body: {error}")
                        return
                elif encoding not in ("", "identity"):
                    self._reject(415, f"unsupported Content-Encoding {encoding!r}")
                    return

                request = ExportTraceServiceRequest()
                try:
                    request.ParseFromString(body)
                except DecodeError as error:
                    self._reject(400, f"invalid ExportTraceServiceRequest: {error}")
                    return

                headers = {name.lower(): value for name, value in self.headers.items()}
                sink._record_export(
                    ReceivedExport(path=self.path, headers=headers, request=request)
                )
                self._respond(200, ExportTraceServiceResponse().SerializeToString())

            def do_GET(self) -> None:
                self._reject(405, "only POST is supported")

            def _read_body(self) -> bytes | None:
                length_header = self.headers.get("Content-Length")
                if length_header is None:
                    self._reject(411, "missing Content-Length")
                    return None
                try:
                    length = int(length_header)
                except ValueError:
                    self._reject(400, f"invalid Content-Length {length_header!r}")
                    return None
                if length < 0 or length > MAX_BODY_BYTES:
                    self._reject(413, f"Content-Length {length} is outside 0..{MAX_BODY_BYTES}")
                    return None
                return self.rfile.read(length)

            def _reject(self, status: int, reason: str) -> None:
                sink._record_rejection(
                    RejectedRequest(
                        method=self.command, path=self.path, status=status, reason=reason
                    )
                )
                # The body was not read in every case, so the connection
                # cannot be reused safely.
                self.close_connection = True
                self._respond(status, reason.encode(), content_type="text/plain; charset=utf-8")

            def _respond(
                self, status: int, body: bytes, content_type: str = PROTOBUF_CONTENT_TYPE
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                # Requests are recorded in the sink. Access lines on stderr
                # would only clutter the test output.
                pass

        return Handler
