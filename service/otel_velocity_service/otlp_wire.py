"""Read the binary protobuf encoding of an OTLP ``ExportTraceServiceRequest`` span by span.

protobuf's own parser (``ExportTraceServiceRequest.FromString``) builds every message of the
request at once, and a small message costs far more memory than its encoding. A 20 MiB body of
empty spans, about 20 KiB once gzipped, made protobuf 7.36 (upb) on CPython 3.11 allocate 1.8 GiB.
This module reads the wire format (https://protobuf.dev/programming-guides/encoding/) in place
and returns only the fields that route keys need, so decoding one request takes the memory of its
body plus a few values for the span being read.

It keeps protobuf's parsing rules where they change a result. The last value of a scalar field
wins, and repeated occurrences of a message field merge. A known field number with an unexpected
wire type is an unknown field, and unknown fields, groups included, are skipped. Unlike
protobuf's parser it checks UTF-8 only in the strings it returns: ``service.name`` and the HTTP
attributes.

Two levels of errors: ``check_request`` raises ``WireError`` when the request, resource or scope
framing is invalid, so no span of such a body is counted. Inside a span or a resource, invalid
data raises ``WireError`` from ``read_span`` or ``read_service_name``, and only those spans are
lost.

Work is bounded too: each call takes a ``FieldBudget`` and raises ``TooManyFields`` when the
fields it reads exceed it. Without a budget a 20 MiB body of two-byte fields took 26 s to read
(CPython 3.11); with one it stops after about a second.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import NamedTuple

# Field tags (field number << 3 | wire type) of the messages read here, from
# opentelemetry/proto/collector/trace/v1/trace_service.proto, trace/v1/trace.proto,
# resource/v1/resource.proto and common/v1/common.proto.
_LEN = 2
_REQUEST_RESOURCE_SPANS = 1 << 3 | _LEN
_RESOURCE_SPANS_RESOURCE = 1 << 3 | _LEN
_RESOURCE_SPANS_SCOPE_SPANS = 2 << 3 | _LEN
_SCOPE_SPANS_SPANS = 2 << 3 | _LEN
_RESOURCE_ATTRIBUTES = 1 << 3 | _LEN
_KEY_VALUE_KEY = 1 << 3 | _LEN
_KEY_VALUE_VALUE = 2 << 3 | _LEN
_SPAN_TRACE_ID = 1 << 3 | _LEN
_SPAN_SPAN_ID = 2 << 3 | _LEN
_SPAN_KIND = 6 << 3  # varint
_SPAN_START_TIME = 7 << 3 | 1  # fixed64
_SPAN_END_TIME = 8 << 3 | 1  # fixed64
_SPAN_ATTRIBUTES = 9 << 3 | _LEN
_SPAN_STATUS = 15 << 3 | _LEN
_STATUS_CODE = 3 << 3  # varint
_ANY_STRING = 1 << 3 | _LEN
_ANY_BOOL = 2 << 3  # varint
_ANY_INT = 3 << 3  # varint
_ANY_DOUBLE = 4 << 3 | 1  # fixed64
_ANY_BYTES = 7 << 3 | _LEN
# array_value, kvlist_value and string_value_strindex (an index into a string table that trace
# requests do not have): no route key reads them, so they decode to UNSUPPORTED_VALUE.
_ANY_ARRAY = 5 << 3 | _LEN
_ANY_KVLIST = 6 << 3 | _LEN
_ANY_STRING_INDEX = 8 << 3  # varint
_ANY_VALUE_TAGS = frozenset(
    {
        _ANY_STRING,
        _ANY_BOOL,
        _ANY_INT,
        _ANY_DOUBLE,
        _ANY_BYTES,
        _ANY_ARRAY,
        _ANY_KVLIST,
        _ANY_STRING_INDEX,
    }
)

_WIRE_START_GROUP = 3
_WIRE_END_GROUP = 4
_MAX_GROUP_DEPTH = 100
_MAX_VARINT_BYTES = 10
# Field numbers run from 1 to 2**29 - 1, so a valid tag is at least 8 and below 2**32.
_MIN_TAG = 1 << 3
_TAG_LIMIT = 1 << 32

_UINT64 = struct.Struct("<Q").unpack_from
_DOUBLE = struct.Struct("<d").unpack_from

SERVICE_NAME_KEY = b"service.name"

# An attribute value of a type that no route key reads (array, kvlist). Distinct from None, which
# is an AnyValue with no value: route keys fall back from http.request.method to http.method only
# when the first is absent.
UNSUPPORTED_VALUE = object()


# A request may have this many fields, plus one per BYTES_PER_FIELD of its body. Exporters write
# 20 bytes or more per field (an SDK span of 13 HTTP attributes is about 480 bytes in 21 fields),
# while a body built to cost the most work has a field every 2 bytes.
BASE_FIELD_BUDGET = 100_000
BYTES_PER_FIELD = 8


class WireError(ValueError):
    """Raised for data that is not the protobuf encoding of the expected message."""


class TooManyFields(Exception):
    """Raised when reading a request would take more fields than its ``FieldBudget``."""


class FieldBudget:
    """The number of fields that the reads of one request may still take."""

    def __init__(self, fields: int) -> None:
        self.limit = fields
        self.remaining = fields

    @classmethod
    def for_body(cls, body_bytes: int) -> FieldBudget:
        return cls(BASE_FIELD_BUDGET + body_bytes // BYTES_PER_FIELD)

    def spend(self, fields: int) -> None:
        self.remaining -= fields
        if self.remaining < 0:
            raise TooManyFields(
                f"the request has more than {self.limit} protobuf fields, the limit for its "
                f"size ({BASE_FIELD_BUDGET} plus one per {BYTES_PER_FIELD} bytes)"
            )


class AttributeKeys:
    """The span attribute keys that ``read_span`` looks for."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.by_utf8 = {key.encode(): key for key in keys}
        # Keys of other lengths are never sliced out of the body to be looked up.
        self.lengths = frozenset(len(key) for key in self.by_utf8)


class SpanFields(NamedTuple):
    """The fields of one span that the velocity service reads.

    ``attributes`` maps each wanted attribute key that the span has to the byte range of its
    ``AnyValue`` encodings, decoded later with ``read_any_value`` and only for SERVER spans.
    """

    trace_id: bytes
    span_id: bytes
    kind: int
    start_time_unix_nano: int
    end_time_unix_nano: int
    attributes: dict[str, list[tuple[int, int]]] | None
    status_code: int


def check_request(data: bytes, budget: FieldBudget) -> int:
    """Check the framing of the request, resource and scope levels; return the number of spans.

    Raises ``WireError`` naming the offset of the first invalid field, and ``TooManyFields``.
    Span and resource contents are not checked here.
    """
    spans = 0
    for tag, start, stop in iter_fields(data, 0, len(data), budget):
        if tag != _REQUEST_RESOURCE_SPANS:
            continue
        for resource_tag, scope_start, scope_stop in iter_fields(data, start, stop, budget):
            if resource_tag != _RESOURCE_SPANS_SCOPE_SPANS:
                continue
            for scope_tag, _, _ in iter_fields(data, scope_start, scope_stop, budget):
                if scope_tag == _SCOPE_SPANS_SPANS:
                    spans += 1
    return spans


def iter_resource_spans(data: bytes) -> Iterator[tuple[int, int]]:
    """Yield the byte range of each ``ResourceSpans`` of a request that ``check_request`` passed.

    ``check_request`` counted these fields against the budget already, as it did for
    ``iter_spans``.
    """
    for tag, start, stop in iter_fields(data, 0, len(data)):
        if tag == _REQUEST_RESOURCE_SPANS:
            yield start, stop


def iter_spans(data: bytes, start: int, stop: int) -> Iterator[tuple[int, int]]:
    """Yield the byte range of each span of one ``ResourceSpans``, over all its scopes."""
    for tag, scope_start, scope_stop in iter_fields(data, start, stop):
        if tag != _RESOURCE_SPANS_SCOPE_SPANS:
            continue
        for scope_tag, span_start, span_stop in iter_fields(data, scope_start, scope_stop):
            if scope_tag == _SCOPE_SPANS_SPANS:
                yield span_start, span_stop


def read_service_name(data: bytes, start: int, stop: int, budget: FieldBudget) -> str | None:
    """Return the ``service.name`` of one ``ResourceSpans``, or None when it has none.

    Like ``Resource.attributes`` after protobuf merges every ``resource`` field, the first
    ``service.name`` attribute counts, and a value that is not a string is "". Raises
    ``WireError`` for an invalid resource, ``UnicodeDecodeError`` for a name that is not UTF-8,
    and ``TooManyFields``.
    """
    for tag, resource_start, resource_stop in iter_fields(data, start, stop):
        if tag != _RESOURCE_SPANS_RESOURCE:
            continue
        attributes = iter_fields(data, resource_start, resource_stop, budget)
        for resource_tag, kv_start, kv_stop in attributes:
            if resource_tag != _RESOURCE_ATTRIBUTES:
                continue
            key, values = _read_key_value(data, kv_start, kv_stop, budget)
            if key == SERVICE_NAME_KEY:
                value = read_any_value(data, values, budget)
                return value if isinstance(value, str) else ""
    return None


def read_span(
    data: bytes, pos: int, end: int, wanted_keys: AttributeKeys, budget: FieldBudget
) -> SpanFields:
    """Read one span's fields, and the ranges of the attributes whose keys are in ``wanted_keys``.

    Raises ``WireError`` when the span is not a valid protobuf ``Span``, and ``TooManyFields``.
    """
    # The hot loop of the service: one pass over a span's fields, with the common one-byte tags
    # and lengths read inline. Everything else goes through _read_varint and _skip.
    trace_id = span_id = b""
    kind = start_ns = end_ns = status_code = 0
    attributes: dict[str, list[tuple[int, int]]] | None = None
    key_lengths = wanted_keys.lengths
    keys_by_utf8 = wanted_keys.by_utf8
    fields = 0
    max_fields = budget.remaining
    while pos < end:
        fields += 1
        if fields > max_fields:
            budget.spend(fields)
        tag = data[pos]
        pos += 1
        if tag >= 0x80:
            tag, pos = _read_tag(data, pos - 1, end)
        elif tag < _MIN_TAG:
            raise WireError(f"invalid field number 0 at offset {pos - 1}")
        wire_type = tag & 7

        if wire_type == _LEN:
            if pos >= end:
                raise WireError(f"a length is missing at offset {pos}")
            length = data[pos]
            pos += 1
            if length >= 0x80:
                length, pos = _read_varint(data, pos - 1, end)
            stop = pos + length
            if stop > end:
                raise WireError(f"a field of {length} bytes at offset {pos} runs past its message")
            if tag == _SPAN_ATTRIBUTES:
                # Exporters write a KeyValue as its key, with a one-byte length, and then one
                # value field of less than 128 bytes or none. That layout is read here; any
                # other goes through _read_key_value.
                key_stop = value_stop = -1
                if length >= 2 and data[pos] == _KEY_VALUE_KEY and data[pos + 1] < 0x80:
                    key_stop = value_stop = pos + 2 + data[pos + 1]
                    if (
                        key_stop + 2 <= stop
                        and data[key_stop] == _KEY_VALUE_VALUE
                        and data[key_stop + 1] < 0x80
                    ):
                        value_stop = key_stop + 2 + data[key_stop + 1]
                if value_stop == stop:
                    if data[pos + 1] in key_lengths:
                        key = keys_by_utf8.get(data[pos + 2 : key_stop])
                        if key is not None:
                            if attributes is None:
                                attributes = {}
                            # A repeated key replaces the earlier value, as a dict does.
                            attributes[key] = [(key_stop + 2, stop)] if key_stop < stop else []
                else:
                    key_bytes, values = _read_key_value(data, pos, stop, budget)
                    key = keys_by_utf8.get(key_bytes)
                    if key is not None:
                        if attributes is None:
                            attributes = {}
                        attributes[key] = values
            elif tag == _SPAN_TRACE_ID:
                trace_id = data[pos:stop]
            elif tag == _SPAN_SPAN_ID:
                span_id = data[pos:stop]
            elif tag == _SPAN_STATUS:
                status_code = _read_status_code(data, pos, stop, status_code, budget)
            pos = stop
        elif wire_type == 0:
            if pos >= end:
                raise WireError(f"a varint is missing at offset {pos}")
            value = data[pos]
            pos += 1
            if value >= 0x80:
                value, pos = _read_varint(data, pos - 1, end)
            if tag == _SPAN_KIND:
                kind = _enum_value(value)
        elif wire_type == 1:
            if pos + 8 > end:
                raise WireError(f"a fixed64 at offset {pos} runs past its message")
            if tag == _SPAN_START_TIME:
                start_ns = _UINT64(data, pos)[0]
            elif tag == _SPAN_END_TIME:
                end_ns = _UINT64(data, pos)[0]
            pos += 8
        else:
            pos = _skip(data, pos, end, tag, budget)
    budget.spend(fields)
    return SpanFields(trace_id, span_id, kind, start_ns, end_ns, attributes, status_code)


def read_any_value(data: bytes, ranges: list[tuple[int, int]], budget: FieldBudget) -> object:
    """Decode the merged ``AnyValue`` of the given encodings, as ``KeyValue.value`` would read.

    Returns a str, bool, int, float or bytes, ``UNSUPPORTED_VALUE`` for an array, a kvlist or a
    string table index, or None when no value is set. The last value set wins, because the value
    is a oneof and protobuf merges repeated message fields. Raises ``UnicodeDecodeError`` for a
    string that is not UTF-8, ``WireError`` for invalid data and ``TooManyFields``.
    """
    if len(ranges) == 1:
        # The usual encoding: one AnyValue with a string of less than 128 bytes or an int.
        start, stop = ranges[0]
        if stop - start >= 2 and data[start] == _ANY_STRING and start + 2 + data[start + 1] == stop:
            return data[start + 2 : stop].decode("utf-8")
        if stop - start >= 2 and data[start] == _ANY_INT and data[stop - 1] < 0x80:
            number, after = _read_varint(data, start + 1, stop)
            if after == stop:
                return number - (1 << 64) if number >= 1 << 63 else number

    last: tuple[int, int, int] | None = None
    for start, stop in ranges:
        for tag, value_start, value_stop in iter_fields(data, start, stop, budget):
            if tag in _ANY_VALUE_TAGS:
                last = (tag, value_start, value_stop)
    if last is None:
        return None

    tag, start, stop = last
    if tag == _ANY_STRING:
        return data[start:stop].decode("utf-8")
    if tag == _ANY_INT:
        number = _read_varint(data, start, stop)[0]
        return number - (1 << 64) if number >= 1 << 63 else number
    if tag == _ANY_BOOL:
        return _read_varint(data, start, stop)[0] != 0
    if tag == _ANY_DOUBLE:
        return _DOUBLE(data, start)[0]
    if tag == _ANY_BYTES:
        return data[start:stop]
    return UNSUPPORTED_VALUE


def iter_fields(
    data: bytes, pos: int, end: int, budget: FieldBudget | None = None
) -> Iterator[tuple[int, int, int]]:
    """Yield ``(tag, start, stop)`` for each field of the message in ``data[pos:end]``.

    ``start:stop`` is the payload of a length-delimited field, and the encoded value of the other
    wire types. Raises ``WireError`` at the first invalid field, and ``TooManyFields`` when a
    budget is given and runs out.
    """
    while pos < end:
        if budget is not None:
            budget.remaining -= 1
            if budget.remaining < 0:
                budget.spend(0)
        tag, pos = _read_tag(data, pos, end)
        if tag & 7 == _LEN:
            length, pos = _read_varint(data, pos, end)
            stop = pos + length
            if stop > end:
                raise WireError(f"a field of {length} bytes at offset {pos} runs past its message")
            yield tag, pos, stop
            pos = stop
        else:
            start = pos
            pos = _skip(data, pos, end, tag, budget)
            yield tag, start, pos


def _read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """Return a varint as an unsigned 64-bit number, and the offset after it."""
    result = 0
    shift = 0
    while pos < end:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & 0xFFFF_FFFF_FFFF_FFFF, pos
        shift += 7
        if shift >= 7 * _MAX_VARINT_BYTES:
            raise WireError(f"a varint is longer than {_MAX_VARINT_BYTES} bytes at offset {pos}")
    raise WireError(f"a varint runs past its message at offset {pos}")


def _read_tag(data: bytes, pos: int, end: int) -> tuple[int, int]:
    tag, stop = _read_varint(data, pos, end)
    if tag < _MIN_TAG or tag >= _TAG_LIMIT:
        raise WireError(f"invalid field number {tag >> 3} at offset {pos}")
    return tag, stop


def _skip(data: bytes, pos: int, end: int, tag: int, budget: FieldBudget | None) -> int:
    """Return the offset after the value of a field with ``tag`` whose value starts at ``pos``."""
    field_number = tag >> 3
    wire_type = tag & 7
    if wire_type == 0:
        return _read_varint(data, pos, end)[1]
    if wire_type == 1:
        stop = pos + 8
    elif wire_type == _LEN:
        length, pos = _read_varint(data, pos, end)
        stop = pos + length
    elif wire_type == 5:
        stop = pos + 4
    elif wire_type == _WIRE_START_GROUP:
        stop = _skip_group(data, pos, end, field_number, budget)
    else:
        raise WireError(f"invalid wire type {wire_type} before offset {pos}")
    if stop > end:
        raise WireError(f"a field at offset {pos} runs past its message")
    return stop


def _skip_group(
    data: bytes, pos: int, end: int, field_number: int, budget: FieldBudget | None
) -> int:
    """Return the offset after the end-group tag that closes a group of ``field_number``."""
    open_groups = [field_number]
    while open_groups:
        if budget is not None:
            budget.spend(1)
        tag, pos = _read_tag(data, pos, end)
        if tag & 7 == _WIRE_END_GROUP:
            if tag >> 3 != open_groups.pop():
                raise WireError(f"an end-group tag does not match its group at offset {pos}")
        elif tag & 7 == _WIRE_START_GROUP:
            if len(open_groups) >= _MAX_GROUP_DEPTH:
                raise WireError(f"groups nest deeper than {_MAX_GROUP_DEPTH} at offset {pos}")
            open_groups.append(tag >> 3)
        else:
            pos = _skip(data, pos, end, tag, budget)
    return pos


def _read_key_value(
    data: bytes, start: int, stop: int, budget: FieldBudget
) -> tuple[bytes, list[tuple[int, int]]]:
    """Return a ``KeyValue``'s key and the ranges of its value encodings, merged in order."""
    key = b""
    values = []
    for tag, field_start, field_stop in iter_fields(data, start, stop, budget):
        if tag == _KEY_VALUE_KEY:
            key = data[field_start:field_stop]
        elif tag == _KEY_VALUE_VALUE:
            values.append((field_start, field_stop))
    return key, values


def _read_status_code(data: bytes, start: int, stop: int, code: int, budget: FieldBudget) -> int:
    """Return ``Status.code`` after merging this encoding into a status whose code is ``code``."""
    for tag, value_start, value_stop in iter_fields(data, start, stop, budget):
        if tag == _STATUS_CODE:
            code = _enum_value(_read_varint(data, value_start, value_stop)[0])
    return code


def _enum_value(varint: int) -> int:
    """Return an enum field's value: protobuf keeps the low 32 bits as a signed int32."""
    value = varint & 0xFFFF_FFFF
    return value - (1 << 32) if value >= 1 << 31 else value
