"""Decode OTLP trace export requests and count their SERVER spans in a velocity registry.

This module handles OTLP messages and no HTTP. The route key, the status code and the
error flag come from ``otel_velocity.routes``, the same functions the in-process span processor
calls, so a span from any language lands in the same row as it would inside a Python app.

Speed: ``ingest`` walks the protobuf objects directly and copies only the five HTTP attributes
that route keys read, so no span is converted to a dict or to JSON.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Container
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

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

TRACE_ID_BYTES = 16
SPAN_ID_BYTES = 8

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


class Rejection(Enum):
    """The reason a SERVER span was rejected. The value is the sentence used in messages."""

    TRACE_ID = "trace_id is not 16 bytes (32 hex digits in JSON) or is all zeros"
    SPAN_ID = "span_id is not 8 bytes (16 hex digits in JSON) or is all zeros"
    MISSING_TIME = "start_time_unix_nano or end_time_unix_nano is 0"
    END_BEFORE_START = "end_time_unix_nano is before start_time_unix_nano"


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
        return (
            f"rejected {self.rejected_spans} of "
            f"{self.server_spans + self.own_spans + self.rejected_spans} "
            f"SERVER spans: {reasons}. First rejected: {examples}. "
            "The other spans were counted; fix the exporter that sends these spans."
        )


# Returns the service's own route templates for a service.name, or an empty container.
OwnTemplates = Callable[[str], Container[str]]


def parse_request(body: bytes, encoding: Encoding) -> ExportTraceServiceRequest:
    """Decode a request body; raise ``MalformedRequest`` with the reason when it is invalid."""
    if encoding is Encoding.PROTOBUF:
        try:
            request: ExportTraceServiceRequest = ExportTraceServiceRequest.FromString(body)
        except DecodeError as error:
            raise MalformedRequest(
                f"the body is not a protobuf ExportTraceServiceRequest ({error}); "
                "send the serialized message with Content-Type: application/x-protobuf"
            ) from None
        return request
    return _parse_json(body)


def ingest(
    request: ExportTraceServiceRequest,
    registry: VelocityRegistry,
    own_templates: OwnTemplates | None = None,
) -> IngestResult:
    """Count each valid SERVER span of ``request`` in ``registry``.

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

                trace_id = span.trace_id
                span_id = span.span_id
                start_ns = span.start_time_unix_nano
                end_ns = span.end_time_unix_nano
                if len(trace_id) != TRACE_ID_BYTES or not any(trace_id):
                    result.reject(Rejection.TRACE_ID, service, span_id)
                    continue
                if len(span_id) != SPAN_ID_BYTES or not any(span_id):
                    result.reject(Rejection.SPAN_ID, service, span_id)
                    continue
                if start_ns == 0 or end_ns == 0:
                    result.reject(Rejection.MISSING_TIME, service, span_id)
                    continue
                if end_ns < start_ns:
                    result.reject(Rejection.END_BEFORE_START, service, span_id)
                    continue

                attributes = {}
                for key_value in span.attributes:
                    if key_value.key in ROUTE_ATTRIBUTES:
                        attributes[key_value.key] = _attribute_value(key_value.value)

                key = route_key(attributes)
                if key.route in own_routes:
                    result.own_spans += 1
                    continue

                status_code = response_status_code(attributes)
                is_error = is_server_error(status_code, span.status.code == STATUS_CODE_ERROR)
                record(
                    service,
                    key,
                    (end_ns - start_ns) / 1e6,
                    is_error,
                    status_code,
                    int.from_bytes(trace_id, "big"),
                    int.from_bytes(span_id, "big"),
                )
                result.server_spans += 1
    return result


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
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind is None:
        return None
    return getattr(value, kind)


def _parse_json(body: bytes) -> ExportTraceServiceRequest:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MalformedRequest(
            f"the body is not valid JSON ({error}); send an OTLP/JSON ExportTraceServiceRequest"
        ) from None

    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict(_slim_json_request(document), request)
    except json_format.ParseError as error:
        raise MalformedRequest(
            f"the JSON body is not an OTLP ExportTraceServiceRequest ({error}); field names "
            "are lowerCamelCase, ids hex strings and enums integers"
        ) from None
    return request


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
