"""Property tests: the span processor and the Sentry hooks never raise into the app.

Spans come from a real SDK ``TracerProvider`` or are built as ``ReadableSpan`` directly, with
attribute values of every type, huge strings, control characters, lone surrogates, both
generations of the HTTP semantic conventions mixed, odd timestamps and resources. The expected
rows come from a model written here from the documented rules, not from ``otel_velocity.routes``.
"""

from __future__ import annotations

import contextvars
import re
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sentry_sdk
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event as SpanEvent
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.trace import INVALID_SPAN_CONTEXT, SpanContext, SpanKind, Status, StatusCode
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from otel_velocity.config import SentrySettings
from otel_velocity.guard import FAULTS
from otel_velocity.processor import VelocitySpanProcessor
from otel_velocity.registry import VelocityRegistry
from otel_velocity.routes import RouteKey, response_status_code
from otel_velocity.sentry.correlation import SentryCorrelation
from otel_velocity.sentry.request_context import RequestContext, current_request

NOW_S = 1_800_000_000.0
# A DSN on the discard port of the loopback interface: MemoryTransport replaces the network.
LOCAL_DSN = "http://0123456789abcdef0123456789abcdef@127.0.0.1:9/1"

# The model: what the README and the module docstrings promise for one SERVER span.
STANDARD_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
THREE_ASCII_DIGITS = re.compile(r"[0-9]{3}")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
ROUTE_LIMIT = 200

ATTRIBUTE_NAMES = (
    "http.request.method",
    "http.method",
    "http.response.status_code",
    "http.status_code",
    "http.route",
    "url.path",
    "http.target",
    "url.full",
    "http.url",
    "url.query",
)

PROPERTY_SETTINGS = settings(
    max_examples=2000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- The independent model ------------------------------------------------------------


def first_present(attributes: Mapping[str, object], stable: str, old: str) -> object:
    """Return the stable-convention value when set, else the older one."""
    value = attributes.get(stable)
    return attributes.get(old) if value is None else value


def expected_method(attributes: Mapping[str, object]) -> str:
    value = first_present(attributes, "http.request.method", "http.method")
    if isinstance(value, str) and value.upper() in STANDARD_METHODS:
        return value.upper()
    return "_OTHER"


def expected_route(attributes: Mapping[str, object]) -> str:
    value = attributes.get("http.route")
    if not isinstance(value, str):
        return "(unmatched)"
    cleaned = CONTROL_CHARACTERS.sub(" ", value).strip()
    return cleaned[:ROUTE_LIMIT] if cleaned else "(unmatched)"


def expected_status(attributes: Mapping[str, object]) -> int | None:
    value = first_present(attributes, "http.response.status_code", "http.status_code")
    if isinstance(value, str) and THREE_ASCII_DIGITS.fullmatch(value):
        value = int(value)
    if type(value) is int and 100 <= value <= 999:
        return value
    return None


def expected_row(span: ReadableSpan) -> tuple[str, str, str, bool]:
    """Return (service, method, route, is_error) for a SERVER span."""
    attributes = span.attributes or {}
    status = expected_status(attributes)
    # A 5xx is an error; without a status code, the span status decides.
    is_error = span.status.status_code is StatusCode.ERROR if status is None else status >= 500

    service = span.resource.attributes.get("service.name")
    if not isinstance(service, str):
        service = "unknown_service"
    return service, expected_method(attributes), expected_route(attributes), is_error


def observed_counts(registry: VelocityRegistry) -> dict[tuple[str, str, str], tuple[int, int]]:
    return {
        (row.service, row.key.method, row.key.route): (row.window.count, row.window.errors)
        for row in registry.rows()
    }


def model_counts(spans: list[ReadableSpan]) -> dict[tuple[str, str, str], tuple[int, int]]:
    counts: Counter[tuple[str, str, str]] = Counter()
    errors: Counter[tuple[str, str, str]] = Counter()
    for span in spans:
        service, method, route, is_error = expected_row(span)
        counts[service, method, route] += 1
        errors[service, method, route] += is_error
    return {key: (counts[key], errors[key]) for key in counts}


# --- Strategies ------------------------------------------------------------------------

# Every code point, lone surrogates (invalid in UTF-8) and control characters included.
any_character = st.characters(exclude_categories=())
short_text = st.text(any_character, max_size=30)
huge_text = st.builds(
    lambda piece, repeat: piece * repeat,
    st.sampled_from(["/a", "x", "\x00", "\ud800", "9", "{id}/", "\n"]),
    st.integers(1_000, 20_000),
)
typical_text = st.sampled_from(
    [
        "GET", "get", "Post", "PATCH", "BREW", "", " ", "\t", "_OTHER",
        "/items/{item_id}", "/a\nb", " /padded ", "/\x7f", "\ud800/x",
        "500", "503", "200", "404", "0500", " 500", "5000", "-500", "1e3", "9" * 5000,
        # Digits that str.isdigit() accepts: superscript two, and 500 in Arabic-Indic digits.
        "\u00b2", "\u0665\u0660\u0660",
    ]
)  # fmt: skip
text = st.one_of(typical_text, short_text, huge_text)
status_numbers = st.one_of(
    st.integers(-1_000, 1_100),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, 99, 100, 200, 499, 500, 599, 999, 1000, -(2**63), 2**63 - 1]),
)
floats = st.floats(allow_nan=True, allow_infinity=True)
scalar = st.one_of(text, status_numbers, floats, st.booleans())
# Values an SDK span accepts: scalars and homogeneous sequences of them.
sdk_value = st.one_of(
    scalar,
    st.lists(text, max_size=4),
    st.lists(status_numbers, max_size=4),
    st.lists(st.booleans(), max_size=4),
    st.lists(floats, max_size=4),
)
# Anything at all, for spans built without the SDK's attribute cleaning.
raw_value = st.one_of(
    sdk_value,
    st.none(),
    st.binary(max_size=20),
    st.dictionaries(short_text, scalar, max_size=3),
    st.tuples(text, status_numbers),
    st.builds(object),
)


def attributes_of(values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """HTTP attributes of both convention generations in any mix, plus unrelated ones."""
    return st.dictionaries(
        st.one_of(
            st.sampled_from(ATTRIBUTE_NAMES), st.text(any_character, min_size=1, max_size=30)
        ),
        values,
        max_size=5,
    )


valid_http_attributes = st.fixed_dictionaries(
    {},
    optional={
        "http.request.method": st.sampled_from(["GET", "post", "DELETE", "BREW"]),
        "http.method": st.sampled_from(["GET", "PUT", "head"]),
        "http.route": st.sampled_from(["/items/{item_id}", "/a", "/b/{n}", ""]),
        "http.response.status_code": st.sampled_from([200, 404, 500, 503, "502"]),
        "http.status_code": st.sampled_from([201, 500, 418]),
        "url.path": st.sampled_from(["/users/4711", "/x?token=secret"]),
    },
)
span_status = st.sampled_from(
    [Status(StatusCode.UNSET), Status(StatusCode.OK), Status(StatusCode.ERROR, "failed")]
)
timestamps_ns = st.one_of(
    st.none(), st.integers(0, 2**63 - 1), st.sampled_from([0, 1, 1_800_000_000_000_000_000])
)
resources = st.one_of(
    st.just(Resource({})),
    st.builds(lambda name: Resource({"service.name": name}), st.sampled_from(["shop", "billing"])),
    st.builds(lambda name: Resource({"service.name": name}), sdk_value),
    st.builds(lambda: Resource.get_empty()),
)
span_contexts = st.one_of(
    st.none(),
    st.just(INVALID_SPAN_CONTEXT),
    st.builds(
        lambda trace_id, span_id: SpanContext(trace_id, span_id, is_remote=False),
        st.integers(0, 2**128 - 1),
        st.integers(0, 2**64 - 1),
    ),
)


@st.composite
def raw_spans(draw: st.DrawFn) -> ReadableSpan:
    """A ``ReadableSpan`` built directly: no attribute cleaning, any context and times."""
    attributes = {**draw(valid_http_attributes), **draw(attributes_of(raw_value))}
    return ReadableSpan(
        name=draw(text),
        context=draw(span_contexts),
        kind=SpanKind.SERVER,
        attributes=draw(st.one_of(st.just(attributes), st.none(), st.just({}))),
        resource=draw(st.one_of(st.none(), resources)),
        status=draw(span_status),
        start_time=draw(timestamps_ns),
        end_time=draw(timestamps_ns),
        events=draw(
            st.lists(st.sampled_from([SpanEvent("exception"), SpanEvent("log")]), max_size=2)
        ),
    )


@st.composite
def sdk_span_plans(draw: st.DrawFn) -> dict[str, Any]:
    """Arguments for one span started and ended through a real tracer."""
    start_ns = draw(st.integers(0, 2**62))
    return {
        "name": draw(text),
        "attributes": {**draw(valid_http_attributes), **draw(attributes_of(sdk_value))},
        "status": draw(span_status),
        "start_ns": start_ns,
        # End before start, zero duration and very long spans included.
        "end_ns": draw(st.one_of(st.just(start_ns), st.integers(0, 2**63 - 1))),
        "late_attributes": draw(attributes_of(sdk_value)),
    }


# --- Helpers -----------------------------------------------------------------------------


class MemoryTransport(Transport):
    """A sentry-sdk transport that keeps envelopes in memory and never opens a socket."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)


@contextmanager
def memory_sentry_client() -> Iterator[MemoryTransport]:
    """Bind a sentry-sdk client with a ``MemoryTransport`` to a forked isolation scope."""
    transport = MemoryTransport({"dsn": LOCAL_DSN})
    client = sentry_sdk.Client(
        dsn=LOCAL_DSN,
        transport=transport,
        default_integrations=False,
        auto_enabling_integrations=False,
    )
    with sentry_sdk.isolation_scope() as scope:
        scope.set_client(client)
        yield transport


class _Collector(SpanProcessor):
    """Keeps every ended span, so the model sees exactly what the processor saw."""

    def __init__(self, ended: list[ReadableSpan]) -> None:
        self._ended = ended

    def on_end(self, span: ReadableSpan) -> None:
        self._ended.append(span)


def end_sdk_span(provider: TracerProvider, plan: dict[str, Any]) -> None:
    tracer = provider.get_tracer("hardening")
    span = tracer.start_span(
        plan["name"],
        kind=SpanKind.SERVER,
        attributes=plan["attributes"],
        start_time=plan["start_ns"],
    )
    # Frameworks set some attributes, http.route among them, after the span started.
    span.set_attributes(plan["late_attributes"])
    span.set_status(plan["status"])
    span.end(end_time=plan["end_ns"])


def fault_total() -> int:
    return FAULTS.total()


# --- Processor ---------------------------------------------------------------------------


@settings(PROPERTY_SETTINGS, max_examples=600)
@given(resource=resources, plans=st.lists(sdk_span_plans(), min_size=1, max_size=3))
def test_sdk_spans_counted_exactly(resource: Resource, plans: list[dict[str, Any]]) -> None:
    registry = VelocityRegistry(clock=lambda: NOW_S)
    ended: list[ReadableSpan] = []
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(VelocitySpanProcessor(registry))
    provider.add_span_processor(_Collector(ended))
    faults_before = fault_total()

    for plan in plans:
        end_sdk_span(provider, plan)

    assert fault_total() == faults_before
    assert observed_counts(registry) == model_counts(ended)


@PROPERTY_SETTINGS
@given(spans=st.lists(raw_spans(), min_size=1, max_size=2))
@example(
    spans=[ReadableSpan(name="x", kind=SpanKind.SERVER, attributes={"http.status_code": "\u00b2"})]
)
@example(
    spans=[
        ReadableSpan(name="x", kind=SpanKind.SERVER, attributes={"http.status_code": "9" * 5000})
    ]
)
def test_raw_spans_counted_exactly(spans: list[ReadableSpan]) -> None:
    registry = VelocityRegistry(clock=lambda: NOW_S)
    processor = VelocitySpanProcessor(registry)
    faults_before = fault_total()

    for span in spans:
        processor.on_end(span)

    assert fault_total() == faults_before
    assert observed_counts(registry) == model_counts(spans)


def test_rows_reflect_model_example() -> None:
    """Pin the model itself on hand-checked spans, so a model bug cannot hide a processor bug."""
    spans = [
        ReadableSpan(
            name="a",
            kind=SpanKind.SERVER,
            attributes={"http.method": "get", "http.route": "/a\n", "http.status_code": "503"},
            resource=Resource({"service.name": "shop"}),
        ),
        ReadableSpan(
            name="b",
            kind=SpanKind.SERVER,
            attributes={"http.request.method": 7, "http.method": "GET", "url.path": "/u/1"},
            resource=Resource({"service.name": 3}),
            status=Status(StatusCode.ERROR),
        ),
    ]

    assert model_counts(spans) == {
        ("shop", "GET", "/a"): (1, 1),
        ("unknown_service", "_OTHER", "(unmatched)"): (1, 1),
    }


# --- Sentry hooks ------------------------------------------------------------------------

json_scalar = st.one_of(st.none(), st.booleans(), status_numbers, floats, text)
json_value = st.recursive(
    json_scalar,
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(short_text, children, max_size=3)
    ),
    max_leaves=8,
)
event_keys = st.sampled_from(
    ["tags", "contexts", "exception", "event_id", "transaction", "message", "level", "request"]
)
events = st.dictionaries(st.one_of(event_keys, short_text), json_value, max_size=6)


class _StatusError(Exception):
    def __init__(self, status_code: object, code: object) -> None:
        super().__init__("status")
        self.status_code = status_code
        self.code = code


def _exc_info(status_code: object, code: object) -> tuple[Any, ...]:
    error = _StatusError(status_code, code)
    return (type(error), error, None)


hints = st.one_of(
    st.none(),
    st.just({}),
    st.dictionaries(short_text, json_value, max_size=3),
    st.fixed_dictionaries(
        {"exc_info": st.one_of(st.builds(_exc_info, raw_value, raw_value), json_value)}
    ),
    st.just({"exc_info": (None, None, None)}),
)
sentry_settings = st.builds(
    SentrySettings,
    dsn=st.just(LOCAL_DSN),
    build_time=st.one_of(st.none(), text),
    release=st.one_of(st.none(), short_text),
)


@settings(PROPERTY_SETTINGS, max_examples=1000)
@given(
    sentry=sentry_settings,
    event=events,
    hint=hints,
    request_span=st.one_of(st.none(), raw_spans()),
    ended_status=st.one_of(st.none(), status_numbers),
)
@example(
    sentry=SentrySettings(dsn=LOCAL_DSN), event={"tags": [["a", "b"]]}, hint=None,
    request_span=None, ended_status=None,
)  # fmt: skip
@example(
    sentry=SentrySettings(dsn=LOCAL_DSN), event={"contexts": None}, hint={},
    request_span=ReadableSpan(name="x", kind=SpanKind.SERVER), ended_status=None,
)  # fmt: skip
def test_process_event_returns_event(
    sentry: SentrySettings,
    event: dict[str, Any],
    hint: dict[str, Any] | None,
    request_span: ReadableSpan | None,
    ended_status: int | None,
) -> None:
    correlation = SentryCorrelation(sentry)

    def run() -> object:
        if request_span is not None:
            request = RequestContext(request_span)
            request.status_code = ended_status
            request.ended = ended_status is not None
            current_request.set(request)
        return correlation.process_event(event, hint)  # type: ignore[arg-type]

    returned = contextvars.copy_context().run(run)

    # sentry-sdk drops an event whose processor returns None, so a fault must not lose it.
    assert returned is event


@settings(PROPERTY_SETTINGS, max_examples=300)
@given(
    sentry=sentry_settings,
    start_span=st.one_of(st.none(), raw_spans()),
    end_span=raw_spans(),
    method=text,
    route=text,
    status_code=st.one_of(st.none(), status_numbers),
    is_error=st.booleans(),
)
def test_span_hooks_never_raise(
    sentry: SentrySettings,
    start_span: ReadableSpan | None,
    end_span: ReadableSpan,
    method: str,
    route: str,
    status_code: int | None,
    is_error: bool,
) -> None:
    correlation = SentryCorrelation(sentry)

    def run() -> None:
        if start_span is not None:
            correlation.on_server_span_start(start_span)  # type: ignore[arg-type]
        correlation.on_server_span_end(end_span, RouteKey(method, route), status_code, is_error)

    with memory_sentry_client():
        contextvars.copy_context().run(run)


@settings(PROPERTY_SETTINGS, max_examples=200)
@given(resource=resources, plans=st.lists(sdk_span_plans(), min_size=1, max_size=3))
def test_processor_with_sentry_counts_exactly(
    resource: Resource, plans: list[dict[str, Any]]
) -> None:
    registry = VelocityRegistry(clock=lambda: NOW_S)
    correlation = SentryCorrelation(SentrySettings(dsn=LOCAL_DSN, build_time="2026-01-01"))
    ended: list[ReadableSpan] = []
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(
        VelocitySpanProcessor(
            registry,
            on_server_span_start=correlation.on_server_span_start,
            on_server_span_end=correlation.on_server_span_end,
        )
    )
    provider.add_span_processor(_Collector(ended))
    faults_before = fault_total()

    with memory_sentry_client() as transport:
        for plan in plans:
            contextvars.copy_context().run(end_sdk_span, provider, plan)

    expected_events = sum(
        1
        for span in ended
        if (expected_status(span.attributes or {}) or 0) >= 500
        and not any(event.name == "exception" for event in span.events)
    )
    assert fault_total() == faults_before
    assert observed_counts(registry) == model_counts(ended)
    assert len(transport.envelopes) == expected_events


def test_status_parser_agrees_with_model() -> None:
    for value in (
        "\u00b2",
        "\u0665\u0660\u0660",
        "9" * 5000,
        "503",
        503,
        True,
        "0500",
        1000,
        sys.maxsize,
    ):
        attributes = {"http.status_code": value}
        assert response_status_code(attributes) == expected_status(attributes), repr(value)[:40]
