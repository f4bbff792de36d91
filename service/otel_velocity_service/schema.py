"""Pydantic models of the service's JSON responses, as published in its OpenAPI schema.

Units: times are Unix seconds (``*_s``), latencies milliseconds (``*_ms``), rates requests per
second (``rps*``), error rates fractions from 0 to 1 (``err_rate*``) and ``regress_pct`` percent.
The OTLP models use the field names of the OTLP/JSON encoding, which are lowerCamelCase.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class TrendSample(BaseModel):
    """One bucket of a route's 5-minute trend."""

    time_s: float = Field(description="Start of the bucket, Unix time in seconds.")
    rps: float = Field(description="Requests per second in the bucket.")
    p95_ms: float | None = Field(
        description="95th percentile latency in the bucket, in milliseconds; null without requests."
    )
    err_rate: float = Field(description="Fraction of the bucket's requests that failed, 0..1.")


class ExemplarRef(BaseModel):
    """A concrete span kept as an example of a route's errors or slowest requests."""

    trace_id: str = Field(description="Trace id, 32 lowercase hex digits.")
    span_id: str = Field(description="Span id, 16 lowercase hex digits.")
    duration_ms: float = Field(description="Span duration in milliseconds.")
    status_code: int | None = Field(description="HTTP response status code, if the span had one.")
    kind: Literal["error", "slow"] = Field(
        description="'error' for a recent failed request, 'slow' for one of the slowest."
    )
    time_s: float = Field(description="When the span was counted, Unix time in seconds.")
    trace_url: str | None = Field(
        description="The trace in Sentry's trace view; null when Sentry links are off."
    )


class RowLinks(BaseModel):
    """Sentry pages filtered to one route."""

    errors: str = Field(description="Sentry issues stream filtered to the route's error events.")
    traces: str = Field(description="Sentry trace explorer filtered to the route's transactions.")


class TableRow(BaseModel):
    """One route of one service."""

    service: str = Field(description="The service.name resource attribute of the route's spans.")
    method: str = Field(description="HTTP request method, or '_OTHER' for a non-standard one.")
    route: str = Field(
        description="Route template from http.route; '(unmatched)' for requests without one."
    )
    key: str = Field(description="'METHOD route', the row's key within its service.")
    rps: float = Field(description="Requests per second over the short window (about 1 minute).")
    rps_5m: float = Field(description="Requests per second over the long window (5 minutes).")
    p50_ms: float | None = Field(description="Median latency, short window, milliseconds.")
    p95_ms: float | None = Field(description="95th percentile latency, short window, milliseconds.")
    p99_ms: float | None = Field(description="99th percentile latency, short window, milliseconds.")
    p95_5m_ms: float | None = Field(
        description="95th percentile latency over the long window, milliseconds."
    )
    err_rate: float = Field(description="Fraction of failed requests in the short window, 0..1.")
    err_rate_5m: float = Field(description="Fraction of failed requests in the long window, 0..1.")
    count: int = Field(description="Requests in the short window.")
    errors: int = Field(
        description="Failed requests (5xx, or span status ERROR) in the short window."
    )
    count_5m: int = Field(description="Requests in the long window.")
    baseline_p95_ms: float | None = Field(
        description="95th percentile latency of the baseline before the short window, milliseconds."
    )
    regress_pct: float | None = Field(
        description="How much p95_ms exceeds baseline_p95_ms, in percent; null without a baseline."
    )
    is_regress: bool = Field(
        description=(
            "True when regress_pct reaches the threshold and both windows hold enough requests."
        )
    )
    trend: list[TrendSample] = Field(description="One point per bucket of the long window.")
    exemplars: list[ExemplarRef] = Field(
        description="Recent error spans newest first, then the slowest spans slowest first."
    )
    links: RowLinks | None = Field(
        description="Sentry pages for the route; null when Sentry links are off or unavailable."
    )


class SentryState(BaseModel):
    """Whether the table carries Sentry links."""

    enabled: bool = Field(description="True when rows carry Sentry links.")
    reason: str | None = Field(
        description="Why links are off and which environment variable to set; null when on."
    )


class OverflowState(BaseModel):
    """Requests counted in overflow rows because a cap was reached."""

    routes: int = Field(description="Distinct routes that did not get a row of their own.")
    spans: int = Field(description="Requests counted in a service's '* (overflow)' row.")
    services: int = Field(description="Requests counted under '(other services)'.")


class VelocityTable(BaseModel):
    """The velocity table: one row per service and route."""

    generated_at_s: float = Field(description="When the table was computed, Unix time in seconds.")
    window_s: float = Field(description="Length of the short window, in seconds.")
    sentry: SentryState
    services: list[str] = Field(description="Every service that has rows, sorted by name.")
    total: int = Field(description="Rows that match the filter, before offset and limit.")
    offset: int = Field(description="Rows skipped, as requested.")
    limit: int = Field(description="The maximum number of rows returned, as requested.")
    overflow: OverflowState
    rows: list[TableRow]


class SentryLinkResult(BaseModel):
    """A Sentry URL for one route."""

    url: str = Field(description="Absolute URL of the Sentry page.")


class ErrorBody(BaseModel):
    """An error response of the ``/ops`` endpoints."""

    detail: str = Field(description="What failed, with the offending value and how to fix it.")


class Health(BaseModel):
    """The liveness response."""

    status: Literal["ok"] = "ok"


class OtlpPartialSuccess(BaseModel):
    """``ExportTracePartialSuccess`` in the OTLP/JSON encoding."""

    rejectedSpans: str = Field(
        description="Number of rejected spans; an int64, so a decimal string in JSON."
    )
    errorMessage: str = Field(description="Why the spans were rejected.")


class OtlpExportResult(BaseModel):
    """``ExportTraceServiceResponse`` in the OTLP/JSON encoding; protobuf requests get protobuf."""

    partialSuccess: OtlpPartialSuccess | None = Field(
        default=None, description="Present only when some spans were rejected."
    )


class OtlpStatus(BaseModel):
    """``google.rpc.Status`` in the OTLP/JSON encoding; protobuf requests get protobuf."""

    code: int = Field(description="gRPC status code, for troubleshooting only.")
    message: str = Field(description="What failed and how to fix it.")
