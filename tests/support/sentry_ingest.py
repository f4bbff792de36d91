"""Local Sentry ingest server for tests.

`SentryIngest` runs an HTTP server on 127.0.0.1 that accepts what sentry-sdk 2.x
sends to a DSN and stores it, parsed, for assertions:

- ``POST /api/<project_id>/envelope/``: Sentry envelopes (error events, transactions,
  sessions, client reports and any other item type).
- ``POST /api/<project_id>/store/``: the legacy single-event endpoint.
- ``POST /api/<project_id>/integration/otlp/v1/traces/``: OTLP/HTTP traces as
  protobuf or JSON, which sentry-sdk's ``OTLPIntegration`` sends.

The trailing slash is optional on all three. Request bodies may be compressed with
gzip, deflate, br (when the ``brotli`` package is importable) or zstd (when
``zstandard`` is importable).

sentry-sdk 2.76.0 sends envelopes gzip-compressed at level 9 unless ``brotli`` is
importable, in which case it sends br. The OTLP exporter (opentelemetry-exporter-otlp-
proto-http 1.45.2) sends uncompressed protobuf unless ``OTEL_EXPORTER_OTLP_COMPRESSION``
or its ``compression`` argument selects gzip or deflate.

Requests are authenticated as Relay does it (see `public_key_from_request`). An
envelope without credentials in its request may carry them in the ``dsn`` field of
its header, which is what Sentry's tunnel examples rely on. A missing or wrong key gets
401 and a project ID other than the configured one gets 403, both with a JSON body
``{"detail": "..."}``. Every request, rejected or not, is kept in
`SentryIngest.requests`.

Run ``python -m tests.support.sentry_ingest --port 9000`` from the repository root to
start a standalone server that prints its DSN and logs every request.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import copy
import importlib
import json
import logging
import re
import signal
import socket
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType, TracebackType
from typing import Any, Literal, TypeVar, overload
from urllib.parse import parse_qs, urlsplit

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

logger = logging.getLogger(__name__)

DEFAULT_PUBLIC_KEY = "0123456789abcdef0123456789abcdef"
DEFAULT_PROJECT_ID = 4242
DEFAULT_TIMEOUT_S = 10.0

MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_DECODED_BYTES = 256 * 1024 * 1024

# Idle time after which a keep-alive connection is closed by the server.
CONNECTION_IDLE_TIMEOUT_S = 60.0

Endpoint = Literal["envelope", "store", "otlp_traces", "health"]
Source = Literal[
    "events", "transactions", "envelope_items", "otlp_spans", "requests", "rejected_requests"
]
T = TypeVar("T")

_API_PATH = re.compile(
    r"^/api/(?P<project_id>\d+)/(?P<endpoint>envelope|store|integration/otlp/v1/traces)/?$"
)
_HEALTH_PATHS = frozenset({"/api/relay/healthcheck/live/", "/api/relay/healthcheck/ready/"})
_ENDPOINT_NAMES: dict[str, Endpoint] = {
    "envelope": "envelope",
    "store": "store",
    "integration/otlp/v1/traces": "otlp_traces",
}


def match_endpoint(path: str) -> tuple[Endpoint, int] | None:
    """Return the endpoint and project ID for a URL path, or None for an unknown path.

    The health check paths get project ID 0.
    """
    if path in _HEALTH_PATHS:
        return "health", 0
    match = _API_PATH.match(path)
    if match is None:
        return None
    return _ENDPOINT_NAMES[match["endpoint"]], int(match["project_id"])


# Item types whose payload is JSON even when the item header has no content_type.
_JSON_ITEM_TYPES = frozenset(
    {
        "event",
        "transaction",
        "session",
        "sessions",
        "client_report",
        "user_report",
        "feedback",
        "check_in",
        "profile",
        "profile_chunk",
        "replay_event",
        "span",
        "log",
        "otel_log",
        "trace_metric",
    }
)


# --- Records returned by the accessors -------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as received, with the status code of the response."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    """Header names in lower case. A repeated header keeps its last value."""
    body: bytes
    """The body as received, before content decoding."""
    status: int
    detail: str | None
    """Reason for a rejection, the same text as the ``detail`` in the response."""
    endpoint: Endpoint | None
    received_at: float
    """``time.time()`` when the request was handled."""


@dataclass(frozen=True)
class EnvelopeItem:
    """One item of a Sentry envelope."""

    type: str
    headers: dict[str, Any]
    payload: bytes
    json: Any
    """The parsed payload for JSON item types and content types, otherwise None."""
    envelope_headers: dict[str, Any]


@dataclass(frozen=True)
class Envelope:
    """A parsed Sentry envelope: the header line and its items."""

    headers: dict[str, Any]
    items: list[EnvelopeItem]


@dataclass(frozen=True)
class OtlpStatus:
    """Span status with the OTLP enum name as code, for example ``STATUS_CODE_ERROR``."""

    code: str
    message: str


@dataclass(frozen=True)
class OtlpSpan:
    """One span from an OTLP export request, with its resource and scope folded in.

    IDs are lower-case hex. ``parent_span_id`` is None for a root span. ``kind`` is the
    OTLP enum name, for example ``SPAN_KIND_SERVER``. Attribute values are plain Python
    values: arrays become lists, key-value lists become dicts and bytes stay bytes.
    """

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    kind: str
    attributes: dict[str, Any]
    resource_attributes: dict[str, Any]
    status: OtlpStatus
    scope_name: str
    scope_version: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    trace_state: str
    flags: int
    events: list[dict[str, Any]] = field(default_factory=list)
    """Span events as dicts with ``name``, ``time_unix_nano`` and ``attributes``."""
    links: list[dict[str, Any]] = field(default_factory=list)
    """Links as dicts with ``trace_id``, ``span_id``, ``trace_state`` and ``attributes``."""


class RequestRejected(Exception):
    """Error that makes the server reject a request with `status` and `detail`."""

    def __init__(self, status: int, detail: str, *, otlp_status: bool = False) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail
        # OTLP/HTTP requires a google.rpc.Status body for payload errors.
        self.otlp_status = otlp_status


# --- Content decoding -----------------------------------------------------------------


def _optional_module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


_brotli = _optional_module("brotli")
_zstandard = _optional_module("zstandard")


def _inflate(data: bytes, wbits: int) -> bytes:
    """Decompress zlib, gzip or raw deflate data, including concatenated gzip members."""
    output = bytearray()
    remaining = data
    while remaining:
        decompressor = zlib.decompressobj(wbits)
        output += decompressor.decompress(remaining, MAX_DECODED_BYTES + 1 - len(output))
        if decompressor.unconsumed_tail or len(output) > MAX_DECODED_BYTES:
            raise RequestRejected(413, f"decompressed body exceeds {MAX_DECODED_BYTES} bytes")
        if not decompressor.eof:
            raise RequestRejected(400, "compressed body is truncated")
        remaining = decompressor.unused_data
        # Only gzip allows several members one after the other.
        if wbits != 16 + zlib.MAX_WBITS:
            break
    return bytes(output)


def _decode_one(data: bytes, encoding: str) -> bytes:
    if encoding == "identity":
        return data
    try:
        if encoding in ("gzip", "x-gzip"):
            return _inflate(data, 16 + zlib.MAX_WBITS)
        if encoding == "deflate":
            # RFC 9110 defines deflate as the zlib format, but some clients send raw deflate.
            try:
                return _inflate(data, zlib.MAX_WBITS)
            except zlib.error:
                return _inflate(data, -zlib.MAX_WBITS)
    except zlib.error as error:
        raise RequestRejected(400, f"invalid {encoding} body: {error}") from error

    if encoding == "br":
        if _brotli is None:
            raise RequestRejected(
                415, "Content-Encoding br needs the brotli package, which is not installed"
            )
        try:
            decoded: bytes = _brotli.decompress(data)
        except _brotli.error as error:
            raise RequestRejected(400, f"invalid br body: {error}") from error
        return decoded
    if encoding == "zstd":
        if _zstandard is None:
            raise RequestRejected(
                415, "Content-Encoding zstd needs the zstandard package, which is not installed"
            )
        try:
            return bytes(
                _zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_DECODED_BYTES)
            )
        except _zstandard.ZstdError as error:
            raise RequestRejected(400, f"invalid zstd body: {error}") from error
    raise RequestRejected(415, f"unsupported Content-Encoding {encoding!r}")


def decode_body(body: bytes, content_encoding: str | None) -> bytes:
    """Undo every coding listed in a Content-Encoding header, last applied first."""
    if not content_encoding:
        return body
    encodings = [part.strip().lower() for part in content_encoding.split(",") if part.strip()]
    decoded = body
    for encoding in reversed(encodings):
        decoded = _decode_one(decoded, encoding)
    if len(decoded) > MAX_DECODED_BYTES:
        raise RequestRejected(413, f"decompressed body exceeds {MAX_DECODED_BYTES} bytes")
    return decoded


# --- Envelope and store parsing -------------------------------------------------------


def _parse_json_object(line: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestRejected(
            400, f"invalid envelope: {what} is not valid JSON: {error}"
        ) from error
    if not isinstance(value, dict):
        raise RequestRejected(400, f"invalid envelope: {what} is not a JSON object")
    return value


def _item_json(item_type: str, headers: Mapping[str, Any], payload: bytes) -> Any:
    """Return the parsed JSON payload, or None for items that are not JSON.

    Event and transaction payloads are parsed whatever their content_type, and invalid
    JSON in them rejects the envelope.
    """
    content_type = headers.get("content_type")
    is_json = (
        item_type in ("event", "transaction")
        or content_type == "application/json"
        or (isinstance(content_type, str) and content_type.endswith("+json"))
        or (content_type is None and item_type in _JSON_ITEM_TYPES)
    )
    if not is_json:
        return None
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        if item_type in ("event", "transaction"):
            raise RequestRejected(
                400, f"invalid envelope: {item_type} item payload is not valid JSON: {error}"
            ) from error
        return None


def parse_envelope(data: bytes) -> Envelope:
    """Parse the Sentry envelope format.

    The format is a JSON header line, then items of a JSON item header line and a
    payload. A payload with a ``length`` header is exactly that many bytes, and a
    newline may follow it. A payload without one runs to the next newline or the end.
    Blank lines between items are skipped. Raise `RequestRejected` (400) on bad input.
    """
    header_end = data.find(b"\n")
    header_line = data if header_end == -1 else data[:header_end]
    envelope_headers = _parse_json_object(header_line, "envelope header")
    position = len(data) if header_end == -1 else header_end + 1

    items: list[EnvelopeItem] = []
    while position < len(data):
        if data[position : position + 1] == b"\n":
            position += 1
            continue

        line_end = data.find(b"\n", position)
        if line_end == -1:
            line_end = len(data)
        item_headers = _parse_json_object(data[position:line_end], f"header of item {len(items)}")
        item_type = item_headers.get("type")
        if not isinstance(item_type, str) or not item_type:
            raise RequestRejected(400, f"invalid envelope: item {len(items)} has no type")
        position = line_end + 1

        length = item_headers.get("length")
        if length is not None:
            if not isinstance(length, int) or isinstance(length, bool) or length < 0:
                raise RequestRejected(
                    400, f"invalid envelope: item {len(items)} has invalid length {length!r}"
                )
            if position + length > len(data):
                raise RequestRejected(
                    400,
                    f"invalid envelope: item {len(items)} declares {length} bytes "
                    f"but only {max(len(data) - position, 0)} follow",
                )
            payload = data[position : position + length]
            position += length
            if position < len(data):
                if data[position : position + 1] != b"\n":
                    raise RequestRejected(
                        400, f"invalid envelope: missing newline after item {len(items)}"
                    )
                position += 1
        else:
            payload_end = data.find(b"\n", position)
            if payload_end == -1:
                payload_end = len(data)
            payload = data[position:payload_end]
            position = payload_end + 1

        items.append(
            EnvelopeItem(
                type=item_type,
                headers=item_headers,
                payload=payload,
                json=_item_json(item_type, item_headers, payload),
                envelope_headers=envelope_headers,
            )
        )
    return Envelope(headers=envelope_headers, items=items)


def parse_store_body(data: bytes) -> dict[str, Any]:
    """Parse a legacy store request: JSON, or base64 of zlib-compressed JSON."""
    text = data.strip()
    if not text.startswith(b"{"):
        try:
            text = zlib.decompress(base64.b64decode(text, validate=True))
        except (binascii.Error, zlib.error) as error:
            raise RequestRejected(
                400, f"invalid store body: neither JSON nor base64 zlib: {error}"
            ) from error
    try:
        event = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestRejected(400, f"invalid store body: {error}") from error
    if not isinstance(event, dict):
        raise RequestRejected(400, "invalid store body: not a JSON object")
    return event


# --- OTLP parsing ---------------------------------------------------------------------

_OTLP_ID_FIELDS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")


def _hex_ids_to_base64(node: dict[str, Any]) -> None:
    """Convert OTLP JSON hex IDs to the base64 that protobuf's JSON mapping expects."""
    for key in _OTLP_ID_FIELDS:
        value = node.get(key)
        if isinstance(value, str) and value:
            try:
                node[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
            except ValueError as error:
                raise RequestRejected(
                    400, f"invalid OTLP JSON: {key} {value!r} is not hex", otlp_status=True
                ) from error


def parse_otlp_json(data: bytes) -> ExportTraceServiceRequest:
    """Parse an OTLP/HTTP JSON traces request, whose IDs are hex instead of base64."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RequestRejected(400, f"invalid OTLP JSON: {error}", otlp_status=True) from error
    if not isinstance(document, dict):
        raise RequestRejected(400, "invalid OTLP JSON: not a JSON object", otlp_status=True)

    request = ExportTraceServiceRequest()
    try:
        for resource_spans in document.get("resourceSpans") or document.get("resource_spans") or []:
            for scope_spans in (
                resource_spans.get("scopeSpans") or resource_spans.get("scope_spans") or []
            ):
                for span in scope_spans.get("spans") or []:
                    _hex_ids_to_base64(span)
                    for link in span.get("links") or []:
                        _hex_ids_to_base64(link)
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (json_format.ParseError, AttributeError, TypeError) as error:
        # AttributeError and TypeError come from lists or values where objects belong.
        raise RequestRejected(400, f"invalid OTLP JSON: {error}", otlp_status=True) from error
    return request


def parse_otlp_protobuf(data: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(data)
    except DecodeError as error:
        raise RequestRejected(400, f"invalid OTLP protobuf: {error}", otlp_status=True) from error
    return request


def any_value_to_python(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value_to_python(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return attributes_to_dict(value.kvlist_value.values)
    return getattr(value, which)


def attributes_to_dict(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    return {attribute.key: any_value_to_python(attribute.value) for attribute in attributes}


def flatten_spans(request: ExportTraceServiceRequest) -> list[OtlpSpan]:
    spans: list[OtlpSpan] = []
    for resource_spans in request.resource_spans:
        resource_attributes = attributes_to_dict(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    OtlpSpan(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex() or None,
                        kind=Span.SpanKind.Name(span.kind),
                        attributes=attributes_to_dict(span.attributes),
                        resource_attributes=dict(resource_attributes),
                        status=OtlpStatus(
                            code=Status.StatusCode.Name(span.status.code),
                            message=span.status.message,
                        ),
                        scope_name=scope_spans.scope.name,
                        scope_version=scope_spans.scope.version,
                        start_time_unix_nano=span.start_time_unix_nano,
                        end_time_unix_nano=span.end_time_unix_nano,
                        trace_state=span.trace_state,
                        flags=span.flags,
                        events=[
                            {
                                "name": event.name,
                                "time_unix_nano": event.time_unix_nano,
                                "attributes": attributes_to_dict(event.attributes),
                            }
                            for event in span.events
                        ],
                        links=[
                            {
                                "trace_id": link.trace_id.hex(),
                                "span_id": link.span_id.hex(),
                                "trace_state": link.trace_state,
                                "attributes": attributes_to_dict(link.attributes),
                            }
                            for link in span.links
                        ],
                    )
                )
    return spans


# --- Authentication -------------------------------------------------------------------


def _parse_auth_params(value: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for part in value.split(","):
        name, separator, param_value = part.strip().partition("=")
        if separator:
            params[name.strip()] = param_value.strip()
    return params


def _basic_auth_user(authorization: str) -> str | None:
    if authorization[:6].lower() != "basic ":
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, separator, _ = decoded.partition(":")
    return user if separator and user else None


def public_key_from_request(headers: Mapping[str, str], query_string: str) -> str | None:
    """Return the public key of a request, or None when it carries no credentials.

    The sources are those of Relay's ``auth_from_parts`` (relay-server
    ``extractors/request_meta.rs``): an X-Sentry-Auth or Authorization header that
    starts with ``Sentry ``, HTTP Basic auth with the key as user name, and a query
    string with ``sentry_`` parameters. Like Relay, this raises `RequestRejected` (400)
    when a request uses more than one source, and (401) when a source lacks the key.
    """
    keys: list[str | None] = []
    for header_name in ("x-sentry-auth", "authorization"):
        value = headers.get(header_name, "")
        if value[:7].lower() == "sentry ":
            keys.append(_parse_auth_params(value[7:]).get("sentry_key"))
    basic_user = _basic_auth_user(headers.get("authorization", ""))
    if basic_user is not None:
        keys.append(basic_user)
    if "sentry_" in query_string:
        keys.append(parse_qs(query_string).get("sentry_key", [None])[0])

    if len(keys) > 1:
        raise RequestRejected(400, "multiple authorization payloads: send the key in one place")
    if keys and not keys[0]:
        raise RequestRejected(401, "invalid authorization: sentry_key is missing or empty")
    return keys[0] if keys else None


def public_key_from_dsn(dsn: object) -> str | None:
    if not isinstance(dsn, str):
        return None
    return urlsplit(dsn).username or None


# --- Summaries for logs and timeout messages ------------------------------------------


def describe_event(event: Mapping[str, Any]) -> str:
    """Return a one-line description: exception type and value, or the message."""
    exception = event.get("exception")
    values = exception.get("values") if isinstance(exception, dict) else exception
    if isinstance(values, list) and values and isinstance(values[-1], dict):
        last = values[-1]
        return f"{last.get('type')}: {last.get('value')}"
    logentry = event.get("logentry")
    if isinstance(logentry, dict):
        return str(logentry.get("formatted") or logentry.get("message"))
    if "message" in event:
        return str(event["message"])
    return f"event {event.get('event_id')}"


def _describe_item(item: EnvelopeItem) -> str:
    if item.type == "event" and isinstance(item.json, dict):
        return f"event ({describe_event(item.json)})"
    if item.type == "transaction" and isinstance(item.json, dict):
        return f"transaction ({item.json.get('transaction')})"
    return item.type


# --- HTTP server ----------------------------------------------------------------------


class _IngestHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks open connections so `close_connections` can end them."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], ingest: SentryIngest) -> None:
        self.ingest = ingest
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _IngestRequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down open keep-alive connections so their handler threads end."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            # The peer may have closed the connection already.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _IngestRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "otel-velocity-sentry-ingest"
    timeout = CONNECTION_IDLE_TIMEOUT_S
    server: _IngestHTTPServer

    def _dispatch(self) -> None:
        self.server.ingest._handle_request(self)

    do_POST = _dispatch
    do_GET = _dispatch
    do_HEAD = _dispatch
    do_PUT = _dispatch
    do_PATCH = _dispatch
    do_DELETE = _dispatch
    do_OPTIONS = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - " + format, self.address_string(), *args)


def _read_chunked(handler: BaseHTTPRequestHandler) -> bytes:
    body = bytearray()
    while True:
        size_line = handler.rfile.readline(1024)
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError as error:
            raise RequestRejected(400, f"invalid chunk size line {size_line!r}") from error
        if size == 0:
            # Skip trailer fields up to the blank line that ends the body.
            while handler.rfile.readline(1024).strip():
                pass
            return bytes(body)
        if len(body) + size > MAX_BODY_BYTES:
            raise RequestRejected(413, f"request body exceeds {MAX_BODY_BYTES} bytes")
        body += handler.rfile.read(size)
        handler.rfile.readline(1024)


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        return _read_chunked(handler)
    length_header = handler.headers.get("Content-Length")
    if length_header is None:
        return b""
    try:
        length = int(length_header)
    except ValueError as error:
        raise RequestRejected(400, f"invalid Content-Length {length_header!r}") from error
    if length < 0:
        raise RequestRejected(400, f"invalid Content-Length {length_header!r}")
    if length > MAX_BODY_BYTES:
        raise RequestRejected(413, f"request body of {length} bytes exceeds {MAX_BODY_BYTES} bytes")
    return handler.rfile.read(length)


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str
    detail: str | None = None


def _json_response(status: int, document: object, detail: str | None = None) -> _Response:
    return _Response(status, json.dumps(document).encode(), "application/json", detail)


def _otlp_content_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _otlp_error_response(status: int, detail: str, content_type: str) -> _Response:
    message = status_pb2.Status(code=3, message=detail)
    if content_type == "application/json":
        return _Response(
            status, json_format.MessageToJson(message).encode(), "application/json", detail
        )
    return _Response(status, message.SerializeToString(), "application/x-protobuf", detail)


# --- The ingest server ----------------------------------------------------------------


class SentryIngest:
    """Local Sentry ingest server that stores what sentry-sdk sends.

    Use it as a context manager, or call `start` and `stop`. All accessors are
    thread-safe and return copies, so callers may modify what they get.

    Example::

        with SentryIngest() as ingest:
            sentry_sdk.init(dsn=ingest.dsn)
            sentry_sdk.capture_message("hello")
            sentry_sdk.flush()
            assert ingest.wait_for(1)[0]["message"] == "hello"
    """

    def __init__(
        self,
        *,
        public_key: str = DEFAULT_PUBLIC_KEY,
        project_id: int = DEFAULT_PROJECT_ID,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.public_key = public_key
        self.project_id = project_id
        self.host = host
        self._requested_port = port
        self._server: _IngestHTTPServer | None = None
        self._thread: threading.Thread | None = None

        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._generation = 0
        self._requests: list[RecordedRequest] = []
        self._envelopes: list[Envelope] = []
        self._events: list[dict[str, Any]] = []
        self._transactions: list[dict[str, Any]] = []
        self._otlp_requests: list[ExportTraceServiceRequest] = []
        self._otlp_spans: list[OtlpSpan] = []

    # Lifecycle

    def start(self) -> SentryIngest:
        if self._server is not None:
            raise RuntimeError("SentryIngest is already running")
        server = _IngestHTTPServer((self.host, self._requested_port), self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"sentry-ingest-{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        logger.info("Sentry ingest listening on %s with DSN %s", self.url, self.dsn)
        return self

    def stop(self) -> None:
        """Stop serving and close open connections. Calling it again does nothing."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5.0)
        self._server = None
        self._thread = None
        logger.info("Sentry ingest on port %d stopped", server.server_address[1])

    def __enter__(self) -> SentryIngest:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # Addresses

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(
                "SentryIngest is not running, so it has no port yet: call start() first"
            )
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def dsn(self) -> str:
        return f"http://{self.public_key}@{self.host}:{self.port}/{self.project_id}"

    @property
    def otlp_traces_url(self) -> str:
        """The OTLP traces endpoint that sentry-sdk derives from `dsn`."""
        return f"{self.url}/api/{self.project_id}/integration/otlp/v1/traces/"

    # Accessors

    def requests(self) -> list[RecordedRequest]:
        """Return every request received, in arrival order, including rejected ones."""
        with self._lock:
            return list(self._requests)

    def rejected_requests(self) -> list[RecordedRequest]:
        """Return the requests whose response status is 400 or above."""
        with self._lock:
            return [request for request in self._requests if request.status >= 400]

    def envelopes(self) -> list[Envelope]:
        with self._lock:
            return copy.deepcopy(self._envelopes)

    def envelope_items(self, type: str | None = None) -> list[EnvelopeItem]:
        """Return the items of all accepted envelopes, only those of `type` if given."""
        with self._lock:
            items = [item for envelope in self._envelopes for item in envelope.items]
            return copy.deepcopy([item for item in items if type is None or item.type == type])

    def events(self) -> list[dict[str, Any]]:
        """Return error and message events: envelope items of type event and store bodies."""
        with self._lock:
            return copy.deepcopy(self._events)

    def transactions(self) -> list[dict[str, Any]]:
        """Return transaction events from envelopes and from the store endpoint."""
        with self._lock:
            return copy.deepcopy(self._transactions)

    def otlp_requests(self) -> list[ExportTraceServiceRequest]:
        """Return the accepted OTLP export requests as protobuf messages."""
        with self._lock:
            copies = []
            for request in self._otlp_requests:
                duplicate = ExportTraceServiceRequest()
                duplicate.CopyFrom(request)
                copies.append(duplicate)
            return copies

    def otlp_spans(self) -> list[OtlpSpan]:
        """Return all spans of the accepted OTLP requests, flattened, in arrival order."""
        with self._lock:
            return copy.deepcopy(self._otlp_spans)

    def clear(self) -> None:
        """Forget everything received so far."""
        with self._changed:
            self._requests.clear()
            self._envelopes.clear()
            self._events.clear()
            self._transactions.clear()
            self._otlp_requests.clear()
            self._otlp_spans.clear()
            self._generation += 1
            self._changed.notify_all()

    # Waiting

    def _read_source(self, source: Source) -> list[Any]:
        readers: dict[Source, Callable[[], list[Any]]] = {
            "events": self.events,
            "transactions": self.transactions,
            "envelope_items": self.envelope_items,
            "otlp_spans": self.otlp_spans,
            "requests": self.requests,
            "rejected_requests": self.rejected_requests,
        }
        return readers[source]()

    @overload
    def wait_for(
        self,
        condition: int,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        source: Source = "events",
        description: str | None = None,
    ) -> list[Any]: ...

    @overload
    def wait_for(
        self,
        condition: Callable[[SentryIngest], T],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        source: Source = "events",
        description: str | None = None,
    ) -> T: ...

    def wait_for(
        self,
        condition: int | Callable[[SentryIngest], Any],
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        source: Source = "events",
        description: str | None = None,
    ) -> Any:
        """Wait until `condition` is met and return what met it.

        An int waits for at least that many records of `source` and returns them all.
        A callable is called with this server until it returns a truthy value, which is
        returned. Exceptions from the callable propagate. On timeout this raises
        AssertionError with `description` (or the condition) and `summary`.
        """
        if isinstance(condition, bool) or not (isinstance(condition, int) or callable(condition)):
            raise TypeError(f"condition must be an int or a callable, not {condition!r}")

        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                generation = self._generation

            if isinstance(condition, int):
                records = self._read_source(source)
                if len(records) >= condition:
                    return records
            else:
                result = condition(self)
                if result:
                    return result

            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with self._changed:
                # The wait ends early on any change since `generation` was read, so a
                # change made while the condition was being checked is not missed.
                if self._generation == generation:
                    self._changed.wait(timeout=remaining)

        if description is None:
            if isinstance(condition, int):
                description = f"{condition} {source}"
            else:
                description = getattr(condition, "__qualname__", repr(condition))
        raise AssertionError(
            f"Timed out after {timeout_s} s waiting for {description}.\n{self.summary()}"
        )

    def summary(self, max_lines: int = 20) -> str:
        """Return a readable overview of everything received, for failure messages."""
        with self._lock:
            requests = list(self._requests)
            events = list(self._events)
            transactions = list(self._transactions)
            spans = list(self._otlp_spans)
            items = [item for envelope in self._envelopes for item in envelope.items]

        lines = [f"Received {len(requests)} request(s):"]
        request_counts = Counter(
            (request.method, request.path, request.status) for request in requests
        )
        for (method, path, status), count in list(request_counts.items())[:max_lines]:
            lines.append(f"  {count} x {method} {path} -> {status}")
        rejected = [request for request in requests if request.status >= 400]
        if rejected:
            lines.append(f"Rejected {len(rejected)} request(s):")
            lines.extend(
                f"  {request.method} {request.path} -> {request.status}: {request.detail}"
                for request in rejected[:max_lines]
            )
        item_counts = Counter(item.type for item in items)
        lines.append(f"Envelope items: {dict(item_counts) or 'none'}")
        lines.append(f"Events ({len(events)}):")
        lines.extend(
            f"  [{event.get('level', '?')}] {describe_event(event)}" for event in events[:max_lines]
        )
        transaction_names = [transaction.get("transaction") for transaction in transactions]
        lines.append(f"Transactions ({len(transactions)}): {transaction_names[:max_lines]}")
        lines.append(f"OTLP spans ({len(spans)}):")
        lines.extend(
            f"  {span.name} trace={span.trace_id} span={span.span_id} parent={span.parent_span_id}"
            for span in spans[:max_lines]
        )
        return "\n".join(lines)

    # Request handling, called on the server's handler threads

    def _handle_request(self, handler: _IngestRequestHandler) -> None:
        url = urlsplit(handler.path)
        query = parse_qs(url.query)
        headers = {name.lower(): value for name, value in handler.headers.items()}
        target = match_endpoint(url.path)
        endpoint = target[0] if target else None
        body = b""
        body_read = False
        records: list[Callable[[], None]] = []

        try:
            body = _read_body(handler)
            body_read = True
            response, records = self._route(
                handler.command, url.path, target, headers, url.query, body
            )
        except RequestRejected as rejection:
            if rejection.otlp_status and endpoint == "otlp_traces":
                response = _otlp_error_response(
                    rejection.status, rejection.detail, _otlp_content_type(headers)
                )
            else:
                response = _json_response(
                    rejection.status, {"detail": rejection.detail}, rejection.detail
                )
        except Exception as error:
            logger.exception("Sentry ingest failed to handle %s %s", handler.command, handler.path)
            detail = f"internal error in the test ingest server: {error!r}"
            response = _json_response(500, {"detail": detail}, detail)
        if not body_read:
            # Part of the body may still be on the connection, so it cannot be reused.
            handler.close_connection = True

        recorded = RecordedRequest(
            method=handler.command,
            path=url.path,
            query=query,
            headers=headers,
            body=body,
            status=response.status,
            detail=response.detail,
            endpoint=endpoint,
            received_at=time.time(),
        )
        # Store before responding, so a client that has its response can already read the data.
        with self._changed:
            self._requests.append(recorded)
            for record in records:
                record()
            self._generation += 1
            self._changed.notify_all()

        if response.status >= 400:
            logger.warning(
                "Sentry ingest rejected %s %s with %d: %s",
                handler.command,
                url.path,
                response.status,
                response.detail,
            )
        self._send(handler, response)

    def _route(
        self,
        method: str,
        path: str,
        target: tuple[Endpoint, int] | None,
        headers: Mapping[str, str],
        query_string: str,
        body: bytes,
    ) -> tuple[_Response, list[Callable[[], None]]]:
        if target is None:
            raise RequestRejected(404, f"no Sentry endpoint at {path}")
        endpoint, project_id = target
        if endpoint == "health":
            if method not in ("GET", "HEAD"):
                raise RequestRejected(405, f"method {method} not allowed on {path}, use GET")
            return _json_response(200, {"is_healthy": True}), []
        if method != "POST":
            raise RequestRejected(405, f"method {method} not allowed on {path}, use POST")

        # Relay checks credentials before it reads the body. Envelopes without them may
        # still carry the key in the dsn field of the envelope header.
        header_key = public_key_from_request(headers, query_string)
        if header_key is not None:
            self._check_credentials(header_key, project_id)
        elif endpoint != "envelope":
            self._require_key(None)

        decoded = decode_body(body, headers.get("content-encoding"))
        if endpoint == "envelope":
            return self._accept_envelope(decoded, header_key, project_id)
        if endpoint == "store":
            return self._accept_store(decoded)
        return self._accept_otlp(decoded, headers)

    def _check_credentials(self, public_key: str, project_id: int) -> None:
        if public_key != self.public_key:
            raise RequestRejected(
                401,
                f"invalid public key {public_key!r}: the test ingest expects the key in its DSN",
            )
        if project_id != self.project_id:
            raise RequestRejected(
                403,
                f"project ID mismatch: request for project {project_id}, DSN for {self.project_id}",
            )

    @staticmethod
    def _require_key(public_key: str | None) -> str:
        if public_key is None:
            raise RequestRejected(
                401,
                "missing authorization information: send X-Sentry-Auth or sentry_key in the query",
            )
        return public_key

    def _accept_envelope(
        self, data: bytes, header_key: str | None, project_id: int
    ) -> tuple[_Response, list[Callable[[], None]]]:
        envelope = parse_envelope(data)
        if header_key is None:
            dsn_key = self._require_key(public_key_from_dsn(envelope.headers.get("dsn")))
            self._check_credentials(dsn_key, project_id)

        def record() -> None:
            self._envelopes.append(envelope)
            for item in envelope.items:
                if item.type == "event" and isinstance(item.json, dict):
                    self._events.append(item.json)
                elif item.type == "transaction" and isinstance(item.json, dict):
                    self._transactions.append(item.json)

        logger.info(
            "Sentry ingest received an envelope with %s",
            ", ".join(_describe_item(item) for item in envelope.items) or "no items",
        )
        event_id = envelope.headers.get("event_id")
        return _json_response(200, {"id": event_id} if event_id else {}), [record]

    def _accept_store(self, data: bytes) -> tuple[_Response, list[Callable[[], None]]]:
        event = parse_store_body(data)
        target = self._transactions if event.get("type") == "transaction" else self._events

        def record() -> None:
            target.append(event)

        logger.info("Sentry ingest received a store event: %s", describe_event(event))
        return _json_response(200, {"id": event.get("event_id")}), [record]

    def _accept_otlp(
        self, data: bytes, headers: Mapping[str, str]
    ) -> tuple[_Response, list[Callable[[], None]]]:
        content_type = _otlp_content_type(headers)
        if content_type in ("application/x-protobuf", "application/protobuf"):
            request = parse_otlp_protobuf(data)
            response = _Response(
                200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf"
            )
        elif content_type == "application/json":
            request = parse_otlp_json(data)
            response = _Response(
                200,
                json_format.MessageToJson(ExportTraceServiceResponse()).encode(),
                "application/json",
            )
        else:
            raise RequestRejected(
                415,
                f"unsupported Content-Type {content_type!r} for OTLP: "
                "use application/x-protobuf or application/json",
            )
        spans = flatten_spans(request)

        def record() -> None:
            self._otlp_requests.append(request)
            self._otlp_spans.extend(spans)

        logger.info(
            "Sentry ingest received %d OTLP span(s): %s",
            len(spans),
            ", ".join(span.name for span in spans),
        )
        return response, [record]

    @staticmethod
    def _send(handler: _IngestRequestHandler, response: _Response) -> None:
        try:
            handler.send_response(response.status)
            handler.send_header("Content-Type", response.content_type)
            handler.send_header("Content-Length", str(len(response.body)))
            if handler.close_connection:
                handler.send_header("Connection", "close")
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError) as error:
            logger.debug("Client closed the connection before the response was sent: %s", error)
            handler.close_connection = True


# --- Standalone use -------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Run a local Sentry ingest server that logs what it receives."
    )
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="TCP port to listen on; 0 picks a free port (default: 0)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--public-key", default=DEFAULT_PUBLIC_KEY, help="public key that requests must carry"
    )
    parser.add_argument(
        "--project-id", type=int, default=DEFAULT_PROJECT_ID, help="numeric project ID in the DSN"
    )
    arguments = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    stop_requested = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop_requested.set())

    with SentryIngest(
        public_key=arguments.public_key,
        project_id=arguments.project_id,
        host=arguments.host,
        port=arguments.port,
    ) as ingest:
        print(ingest.dsn, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stop_requested.wait()


if __name__ == "__main__":
    main()
