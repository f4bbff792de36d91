"""Decode OTLP trace export requests and count their SERVER spans in a velocity registry.

This module handles OTLP messages and no HTTP. The route key, the status code and the
error flag come from ``otel_velocity.routes``, the same functions the in-process span processor
calls, so a span from any language lands in the same row as it would inside a Python app.

``ingest_body`` is the entry point for request bodies from the network. Protobuf's own parser
can need 90 times a body's size in memory, so it decodes only bodies of up to
``PROTOBUF_PARSER_MAX_BYTES``. ``otlp_wire`` reads larger ones, and any that the parser rejects,
in the memory of the body. JSON is decoded only after an estimate of its decoded size fits
``MAX_JSON_DECODE_BYTES``. Invalid data inside one span or resource rejects only those spans (a
partial success); invalid framing of the request rejects the whole body before any span is
counted.

Speed: both decoders copy only the five HTTP attributes that route keys read, so no span is
converted to a dict or to JSON.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.proto.trace.v1.trace_pb2 import Status as SpanStatus

from otel_velocity import VelocityRegistry
from otel_velocity.registry import UNKNOWN_SERVICE
from otel_velocity.routes import is_server_error, response_status_code, route_key
from otel_velocity_service import otlp_wire

SPAN_KIND_SERVER = Span.SpanKind.SPAN_KIND_SERVER
STATUS_CODE_ERROR = SpanStatus.StatusCode.STATUS_CODE_ERROR

# The attributes that otel_velocity.routes reads, in both generations of the HTTP conventions.
ROUTE_ATTRIBUTES = frozenset(
    {
        "http.route",
        "http.request.method",
        "http.method",
        "http.response.status_code",
        "http.status_code",
    }
)
_ROUTE_ATTRIBUTE_KEYS = otlp_wire.AttributeKeys(ROUTE_ATTRIBUTES)

TRACE_ID_BYTES = 16
SPAN_ID_BYTES = 8

# No HTTP request served by an instrumented app lasts a day. A longer span has a wrong timestamp,
# such as a start time near 0 or a clock in another unit, and would swamp the percentiles.
MAX_SPAN_DURATION_NS = 24 * 60 * 60 * 10**9

# The most memory, estimated by estimate_json_decode_bytes, that decoding one OTLP/JSON body may
# take. json.loads builds a Python object for every JSON value: 20 MiB of OTLP/JSON from the SDK's
# encoder took about 200 MiB, and 20 MiB of "[{},{},...]" 530 MiB (CPython 3.11). Protobuf bodies
# have no such cost, so exporters with large batches should send application/x-protobuf.
MAX_JSON_DECODE_BYTES = 64 * 1024 * 1024

# Bodies up to this size are decoded by protobuf's parser. It took 91 times the body's size for
# a body of empty spans (protobuf 7.36, upb), so at most about 45 MiB here, within the JSON limit
# above. Larger bodies are read span by span by otlp_wire, in the memory of the body.
PROTOBUF_PARSER_MAX_BYTES = 512 * 1024

# How many rejected spans the error message names by id; the counts cover all of them.
MAX_NAMED_REJECTIONS = 3

# The OTLP/JSON span fields that ``ingest`` reads; ``attributes`` is filtered separately.
_JSON_SPAN_FIELDS = ("traceId", "spanId", "kind", "startTimeUnixNano", "endTimeUnixNano", "status")


class Encoding(Enum):
    """The two OTLP/HTTP payload encodings, by their Content-Type."""

    PROTOBUF = "application/x-protobuf"
    JSON = "application/json"


class MalformedRequest(ValueError):
    """Raised when a request body is not an ``ExportTraceServiceRequest`` in its encoding."""


class DecodeLimitExceeded(ValueError):
    """Raised when decoding a body would take more memory or work than the service allows."""


class Rejection(Enum):
    """The reason a span was rejected. The value is the sentence used in messages."""

    TRACE_ID = "trace_id is not 16 bytes (32 hex digits in JSON) or is all zeros"
    SPAN_ID = "span_id is not 8 bytes (16 hex digits in JSON) or is all zeros"
    MISSING_TIME = "start_time_unix_nano or end_time_unix_nano is 0"
    END_BEFORE_START = "end_time_unix_nano is before start_time_unix_nano"
    TOO_LONG = "a duration over 24 hours (end_time_unix_nano minus start_time_unix_nano)"
    INVALID_SPAN = "a span that is not a valid protobuf Span"
    INVALID_ATTRIBUTE = (
        "an http.route, http.method, http.request.method or status code attribute that is not "
        "valid protobuf or not valid UTF-8"
    )
    INVALID_RESOURCE = (
        "a resource that is not a valid protobuf Resource or whose service.name is not valid UTF-8"
    )
    TOO_MANY_FIELDS = (
        f"more protobuf fields in the request than its limit ({otlp_wire.BASE_FIELD_BUDGET} plus "
        f"one per {otlp_wire.BYTES_PER_FIELD} bytes of body), so they were not read"
    )


@dataclass
class IngestResult:
    """The spans of one export request: counted, skipped and rejected."""

    server_spans: int = 0
    other_spans: int = 0
    own_spans: int = 0
    rejected: dict[Rejection, int] = field(default_factory=dict)
    # (reason, service, span_id hex) of the first few rejected spans, for the error message.
    examples: list[tuple[Rejection, str, str]] = field(default_factory=list)

    @property
    def rejected_spans(self) -> int:
        return sum(self.rejected.values())

    def reject(self, reason: Rejection, service: str, span_id: bytes) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if len(self.examples) < MAX_NAMED_REJECTIONS:
            self.examples.append((reason, service, span_id.hex()))

    def error_message(self) -> str:
        """Describe the rejected spans for ``ExportTracePartialSuccess.error_message``."""
        if not self.rejected:
            return ""
        reasons = "; ".join(
            f"{count} with {reason.value}" for reason, count in self.rejected.items()
        )
        examples = ", ".join(
            f"span_id {span_id or '(empty)'} of service {service!r}"
            for _, service, span_id in self.examples
        )
        first = f" First rejected: {examples}." if examples else ""
        return (
            f"rejected {self.rejected_spans} spans: {reasons}.{first} The other spans were "
            f"counted ({self.server_spans} SERVER spans); fix the exporter that sends the "
            "rejected spans."
        )


# Returns the service's own route templates for a service.name, or an empty container.
OwnTemplates = Callable[[str], Container[str]]


def ingest_body(
    body: bytes,
    encoding: Encoding,
    registry: VelocityRegistry,
    own_templates: OwnTemplates | None = None,
) -> IngestResult:
    """Decode a request body and count its valid SERVER spans in ``registry``.

    An empty body is an empty request, and the OTLP specification calls for a success response.
    Raises ``MalformedRequest`` for a body that cannot be decoded, and ``DecodeLimitExceeded``
    for a JSON body over ``MAX_JSON_DECODE_BYTES`` once decoded or a protobuf body with more
    framing fields than its ``FieldBudget``; nothing is counted then.
    """
    if encoding is Encoding.PROTOBUF:
        return ingest_protobuf(body, registry, own_templates)
    if not body.strip():
        return IngestResult()
    estimate_bytes = estimate_json_decode_bytes(body)
    if estimate_bytes > MAX_JSON_DECODE_BYTES:
        raise DecodeLimitExceeded(
            f"decoding this JSON body would take about {estimate_bytes // 2**20} MiB, more than "
            f"the service's limit of {MAX_JSON_DECODE_BYTES // 2**20} MiB: send smaller batches "
            "(the SDK's OTEL_BSP_MAX_EXPORT_BATCH_SIZE) or use application/x-protobuf, which "
            "has no such limit"
        )
    return ingest(_parse_json(body), registry, own_templates)


def parse_request(body: bytes, encoding: Encoding) -> ExportTraceServiceRequest:
    """Decode a request body; raise ``MalformedRequest`` with the reason when it is invalid.

    NOTE: protobuf's parser builds the whole message, which can take 90 times the body's size.
    Use ``ingest_body`` for bodies from the network.
    """
    if encoding is Encoding.PROTOBUF:
        try:
            request: ExportTraceServiceRequest = ExportTraceServiceRequest.FromString(body)
        except DecodeError as error:
            raise MalformedRequest(_protobuf_error(str(error))) from None
        return request
    return _parse_json(body)


def ingest_protobuf(
    body: bytes,
    registry: VelocityRegistry,
    own_templates: OwnTemplates | None = None,
) -> IngestResult:
    """Count each valid SERVER span of a binary protobuf request body.

    A body of up to ``PROTOBUF_PARSER_MAX_BYTES`` is decoded by protobuf's parser, which is
    about five times faster than ``ingest_wire``. When the parser rejects it, and for larger
    bodies, ``ingest_wire`` decodes it. Both count the same spans in the same rows whenever
    protobuf's parser accepts a body (``tests/hardening/test_service_fuzz.py``), so the result
    is always ``ingest_wire``'s, with its errors.
    """
    if len(body) <= PROTOBUF_PARSER_MAX_BYTES:
        try:
            request = ExportTraceServiceRequest.FromString(body)
        except DecodeError:
            pass  # ingest_wire rejects only the invalid spans, or raises with the reason.
        else:
            return ingest(request, registry, own_templates)
    return ingest_wire(body, registry, own_templates)


def ingest_wire(
    body: bytes,
    registry: VelocityRegistry,
    own_templates: OwnTemplates | None = None,
) -> IngestResult:
    """Count each valid SERVER span of a binary protobuf request body, decoded span by span.

    The request's framing is checked first, so a body that is cut short or is not protobuf
    raises ``MalformedRequest``, and one with more framing fields than its ``FieldBudget``
    raises ``DecodeLimitExceeded``, with nothing counted. A span or resource with invalid
    contents is rejected and the rest of the request is still counted. When the spans use up
    the budget, the rest of them are rejected.
    """
    budget = otlp_wire.FieldBudget.for_body(len(body))
    try:
        total_spans = otlp_wire.check_request(body, budget)
    except otlp_wire.WireError as error:
        raise MalformedRequest(_protobuf_error(str(error))) from None
    except otlp_wire.TooManyFields as error:
        raise DecodeLimitExceeded(f"{error}: send smaller batches") from None

    result = IngestResult()
    spans_read = 0
    try:
        for resource_start, resource_stop in otlp_wire.iter_resource_spans(body):
            service = _read_service_name(body, resource_start, resource_stop, budget)
            own_routes = own_templates(service) if own_templates and service else ()
            for span_start, span_stop in otlp_wire.iter_spans(body, resource_start, resource_stop):
                spans_read += 1
                _ingest_span(
                    result, registry, body, span_start, span_stop, service, own_routes, budget
                )
    except otlp_wire.TooManyFields:
        # The span being read when the budget ran out is rejected too.
        result.rejected[Rejection.TOO_MANY_FIELDS] = total_spans - spans_read + 1
    return result


def _read_service_name(
    body: bytes, start: int, stop: int, budget: otlp_wire.FieldBudget
) -> str | None:
    """Return the resource's service.name, or None when the resource is invalid."""
    try:
        return otlp_wire.read_service_name(body, start, stop, budget) or UNKNOWN_SERVICE
    except (otlp_wire.WireError, UnicodeDecodeError):
        return None


def _ingest_span(
    result: IngestResult,
    registry: VelocityRegistry,
    body: bytes,
    start: int,
    stop: int,
    service: str | None,
    own_routes: Container[str],
    budget: otlp_wire.FieldBudget,
) -> None:
    """Read, check and count one span; ``service`` None means its resource is invalid."""
    try:
        span = otlp_wire.read_span(body, start, stop, _ROUTE_ATTRIBUTE_KEYS, budget)
    except otlp_wire.WireError:
        result.reject(Rejection.INVALID_SPAN, service or UNKNOWN_SERVICE, b"")
        return
    if span.kind != SPAN_KIND_SERVER:
        result.other_spans += 1
        return
    if service is None:
        result.reject(Rejection.INVALID_RESOURCE, UNKNOWN_SERVICE, span.span_id)
        return

    rejection = _check_span(
        span.trace_id, span.span_id, span.start_time_unix_nano, span.end_time_unix_nano
    )
    if rejection is not None:
        result.reject(rejection, service, span.span_id)
        return
    try:
        attributes = {
            key: otlp_wire.read_any_value(body, ranges, budget)
            for key, ranges in (span.attributes or {}).items()
        }
    except (otlp_wire.WireError, UnicodeDecodeError):
        result.reject(Rejection.INVALID_ATTRIBUTE, service, span.span_id)
        return

    _count_span(
        result,
        registry.record,
        service,
        own_routes,
        attributes,
        span,
        span.status_code == STATUS_CODE_ERROR,
    )


def ingest(
    request: ExportTraceServiceRequest,
    registry: VelocityRegistry,
    own_templates: OwnTemplates | None = None,
) -> IngestResult:
    """Count each valid SERVER span of a decoded ``request`` in ``registry``.

    Other span kinds are skipped without checks because they are never counted. A SERVER span
    with an invalid id or timestamp is rejected and the rest of the request is still counted.
    A span whose service and route template ``own_templates`` claims is skipped.
    """
    result = IngestResult()
    record = registry.record
    for resource_spans in request.resource_spans:
        service = _service_name(resource_spans.resource)
        own_routes = own_templates(service) if own_templates is not None else ()

        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if span.kind != SPAN_KIND_SERVER:
                    result.other_spans += 1
                    continue

                rejection = _check_span(
                    span.trace_id, span.span_id, span.start_time_unix_nano, span.end_time_unix_nano
                )
                if rejection is not None:
                    result.reject(rejection, service, span.span_id)
                    continue

                attributes = {}
                for key_value in span.attributes:
                    if key_value.key in ROUTE_ATTRIBUTES:
                        attributes[key_value.key] = _attribute_value(key_value.value)
                _count_span(
                    result,
                    record,
                    service,
                    own_routes,
                    attributes,
                    span,
                    span.status.code == STATUS_CODE_ERROR,
                )
    return result


def estimate_json_decode_bytes(body: bytes) -> int:
    """Estimate the memory that decoding a JSON body takes, from counts of its characters.

    json.loads makes a dict or list for each bracket (64 to 250 bytes on CPython 3.11), a str
    for each pair of quotes (about 55 bytes and up) and a pointer or number for each comma. The
    weights below overestimate the worst cases measured ("[{},...]", '["ab",...]', "[1.5,...]")
    and come within 10 % of the SDK's encoding of real spans.
    """
    brackets = body.count(b"{") + body.count(b"[")
    return len(body) + 80 * brackets + 32 * body.count(b'"') + 40 * body.count(b",")


class _TimedSpan(Protocol):
    """The span fields that ``_count_span`` reads, of ``Span`` and ``otlp_wire.SpanFields``."""

    @property
    def trace_id(self) -> bytes: ...
    @property
    def span_id(self) -> bytes: ...
    @property
    def start_time_unix_nano(self) -> int: ...
    @property
    def end_time_unix_nano(self) -> int: ...


def _check_span(trace_id: bytes, span_id: bytes, start_ns: int, end_ns: int) -> Rejection | None:
    if len(trace_id) != TRACE_ID_BYTES or not any(trace_id):
        return Rejection.TRACE_ID
    if len(span_id) != SPAN_ID_BYTES or not any(span_id):
        return Rejection.SPAN_ID
    if start_ns == 0 or end_ns == 0:
        return Rejection.MISSING_TIME
    if end_ns < start_ns:
        return Rejection.END_BEFORE_START
    if end_ns - start_ns > MAX_SPAN_DURATION_NS:
        return Rejection.TOO_LONG
    return None


def _count_span(
    result: IngestResult,
    record: Callable[..., None],
    service: str,
    own_routes: Container[str],
    attributes: Mapping[str, object],
    span: _TimedSpan,
    span_status_is_error: bool,
) -> None:
    """Record one checked SERVER span, unless its route is one of the service's own."""
    key = route_key(attributes)
    if key.route in own_routes:
        result.own_spans += 1
        return

    status_code = response_status_code(attributes)
    start_ns = span.start_time_unix_nano
    end_ns = span.end_time_unix_nano
    record(
        service,
        key,
        (end_ns - start_ns) / 1e6,
        is_server_error(status_code, span_status_is_error),
        status_code,
        int.from_bytes(span.trace_id, "big"),
        int.from_bytes(span.span_id, "big"),
    )
    result.server_spans += 1


def _protobuf_error(reason: str) -> str:
    return (
        f"the body is not a protobuf ExportTraceServiceRequest ({reason}); "
        "send the serialized message with Content-Type: application/x-protobuf"
    )


def export_response(result: IngestResult) -> ExportTraceServiceResponse:
    """Build the response: ``partial_success`` is set only when spans were rejected."""
    response = ExportTraceServiceResponse()
    if result.rejected:
        response.partial_success.rejected_spans = result.rejected_spans
        response.partial_success.error_message = result.error_message()
    return response


def status_message(code: int, message: str) -> Status:
    """Build the ``google.rpc.Status`` that OTLP/HTTP sends with every 4xx and 5xx response."""
    return Status(code=code, message=message)


def serialize(message: Message, encoding: Encoding) -> bytes:
    """Serialize a response message in the request's encoding."""
    if encoding is Encoding.PROTOBUF:
        data: bytes = message.SerializeToString()
        return data
    text: str = json_format.MessageToJson(message, indent=None)
    return text.encode()


def _service_name(resource: Resource) -> str:
    for key_value in resource.attributes:
        if key_value.key == "service.name":
            value = key_value.value.string_value
            return value or UNKNOWN_SERVICE
    return UNKNOWN_SERVICE


def _attribute_value(value: AnyValue) -> object:
    """Return the value as ``otlp_wire.read_any_value`` does, so both decoders agree."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind is None:
        return None
    if kind in ("bool_value", "double_value", "bytes_value"):
        return getattr(value, kind)
    return otlp_wire.UNSUPPORTED_VALUE


def _parse_json(body: bytes) -> ExportTraceServiceRequest:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MalformedRequest(
            f"the body is not valid JSON ({error}); send an OTLP/JSON ExportTraceServiceRequest"
        ) from None
    except RecursionError:
        raise MalformedRequest(_TOO_DEEP) from None

    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(_slim_json_request(document), request)
    except json_format.ParseError as error:
        raise MalformedRequest(
            f"the JSON body is not an OTLP ExportTraceServiceRequest ({error}); field names "
            "are lowerCamelCase, ids hex strings and enums integers"
        ) from None
    except RecursionError:
        raise MalformedRequest(_TOO_DEEP) from None
    return request


# Python's JSON and protobuf parsers recurse once per level and stop at the interpreter's limit.
_TOO_DEEP = (
    "the JSON body is nested too deeply to parse (about a thousand levels are the limit); "
    "flatten nested arrays and key-value lists in attributes"
)


def _slim_json_request(document: object) -> dict[str, Any]:
    """Copy only the fields that ``ingest`` reads, with ids rewritten for protobuf's parser.

    OTLP/JSON writes trace and span ids as hex, but protobuf's JSON mapping reads bytes as
    base64. Copying a few fields also makes ``ParseDict`` about twice as fast as on the whole
    document. Skipping the other fields is allowed because OTLP/JSON receivers must ignore
    unknown fields.
    An id that is not a hex string becomes empty bytes, so ``ingest`` rejects its span.
    """
    root = _json_object(document, "the request")
    resources = []
    for resource_spans in _json_array(root, "resourceSpans"):
        resource_spans = _json_object(resource_spans, "resourceSpans[]")
        resource = _json_object(resource_spans.get("resource", {}), "resource")
        service_attributes = [
            attribute
            for attribute in _json_array(resource, "attributes")
            if isinstance(attribute, dict) and attribute.get("key") == "service.name"
        ]

        scopes = []
        for scope_spans in _json_array(resource_spans, "scopeSpans"):
            scope_spans = _json_object(scope_spans, "scopeSpans[]")
            spans = [
                _slim_json_span(_json_object(span, "spans[]"))
                for span in _json_array(scope_spans, "spans")
            ]
            scopes.append({"spans": spans})

        resources.append({"resource": {"attributes": service_attributes}, "scopeSpans": scopes})
    return {"resourceSpans": resources}


def _slim_json_span(span: dict[str, Any]) -> dict[str, Any]:
    slim = {name: span[name] for name in _JSON_SPAN_FIELDS if name in span}
    for name in ("traceId", "spanId"):
        if name in slim:
            slim[name] = _hex_to_base64(slim[name])
    slim["attributes"] = [
        attribute
        for attribute in _json_array(span, "attributes")
        if isinstance(attribute, dict) and attribute.get("key") in ROUTE_ATTRIBUTES
    ]
    return slim


def _hex_to_base64(value: object) -> str:
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        raw = b""
    return base64.b64encode(raw).decode("ascii")


def _json_object(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedRequest(
            f"{name} is a JSON {_json_type(value)}, expected an object; "
            'send {"resourceSpans": [{"resource": {...}, "scopeSpans": [...]}]}'
        )
    return value


def _json_array(parent: dict[str, Any], name: str) -> list[Any]:
    value = parent.get(name, [])
    if not isinstance(value, list):
        raise MalformedRequest(f"{name} is a JSON {_json_type(value)}, expected an array")
    return value


def _json_type(value: object) -> str:
    """Name the JSON type of a value from ``json.loads``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"
