"""A receiver on 127.0.0.1 that accepts OTLP/HTTP and Sentry posts and discards them.

It stands in for both the Collector and Sentry during load runs, so that the receiving side
costs every configuration the same, small amount of CPU on the shared machine: it reads each
body and answers 200 at once. Trace bodies are kept and decoded only at shutdown, to count the
spans that arrived. On SIGTERM or SIGINT it prints one JSON line of counts and exits.

Run: ``python -m benchmarks.sink --port 4318``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import signal
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


class DiscardingSink:
    def __init__(self, port: int) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.bytes_received = 0
        self.trace_bodies: list[tuple[str, bytes]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self.server.daemon_threads = True

    def counts(self) -> dict[str, object]:
        spans: Counter[str] = Counter()
        for kind, body in self.trace_bodies:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            spans[kind] += sum(
                len(scope.spans)
                for resource in request.resource_spans
                for scope in resource.scope_spans
            )
        return {
            "requests": dict(self.requests),
            "bytes": self.bytes_received,
            "spans": dict(spans),
        }

    def _record(self, kind: str, body: bytes, encoding: str) -> None:
        with self._lock:
            self.requests[kind] += 1
            self.bytes_received += len(body)
            if kind in ("otlp_traces", "sentry_otlp_traces"):
                self.trace_bodies.append(
                    (kind, gzip.decompress(body) if encoding == "gzip" else body)
                )

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                path = self.path.split("?", 1)[0]
                if "/integration/otlp/" in path:
                    kind = "sentry_otlp_traces"
                elif path.endswith("/envelope/"):
                    kind = "sentry_envelopes"
                elif path.endswith("/v1/traces"):
                    kind = "otlp_traces"
                elif path.endswith("/v1/metrics"):
                    kind = "otlp_metrics"
                else:
                    kind = path
                sink._record(kind, body, self.headers.get("Content-Encoding", ""))

                response = b"{}" if kind == "sentry_envelopes" else b""
                self.send_response(200)
                self.send_header(
                    "Content-Type", "application/json" if response else "application/x-protobuf"
                )
                self.send_header("Content-Length", str(len(response)))
                self.end_headers()
                self.wfile.write(response)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Accept OTLP/HTTP and Sentry posts; discard them.")
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    arguments = parser.parse_args(argv)

    sink = DiscardingSink(arguments.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    thread = threading.Thread(target=sink.server.serve_forever, daemon=True)
    thread.start()
    print("ready", flush=True)
    stop.wait()
    sink.server.shutdown()
    print(json.dumps(sink.counts()), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
