"""``POST /v1/traces``: the OTLP/HTTP trace receiver.

It follows the OTLP/HTTP section of the OTLP specification (opentelemetry-proto,
docs/specification.md):

* binary protobuf or JSON, chosen by Content-Type, and the response in the same encoding;
* ``Content-Encoding: gzip``, with the body limit applied before and after decompression (413);
* 400 with a ``google.rpc.Status`` for a body that cannot be decoded, and 413 for one that would
  take more memory or work to decode than ``otlp.ingest_body`` allows;
* 200 with ``partial_success`` when some spans are rejected;
* 429 or 503 with ``Retry-After`` when the service is overloaded (see ``throttle.IngestLimiter``);
* 200 for an empty body, which the specification calls an empty request.

Unsupported content types and content codings get 415, with the Status in JSON because the
request's encoding is unknown. A body that does not arrive within ``VELOCITY_BODY_TIMEOUT_S``
gets 408.
"""

from __future__ import annotations

import itertools
import logging
import time
import zlib
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from otel_velocity import VelocityRegistry
from otel_velocity_service.auth import UNAUTHORIZED_DETAIL, TokenCheck
from otel_velocity_service.otlp import (
    DecodeLimitExceeded,
    Encoding,
    IngestResult,
    MalformedRequest,
    export_response,
    ingest_body,
    serialize,
    status_message,
)
from otel_velocity_service.own_routes import OwnRoutes
from otel_velocity_service.schema import OtlpExportResult, OtlpStatus
from otel_velocity_service.throttle import IngestLimiter, LogThrottle, Reservation

logger = logging.getLogger(__name__)

# google.rpc.Code values; OTLP clients do not act on them, but they help when troubleshooting.
RPC_INVALID_ARGUMENT = 3
RPC_RESOURCE_EXHAUSTED = 8
RPC_INTERNAL = 13
RPC_UNAVAILABLE = 14
RPC_UNAUTHENTICATED = 16

GZIP_CODINGS = frozenset({"gzip", "x-gzip"})
IDENTITY_CODINGS = frozenset({"", "identity"})

_CONTENT_TYPES = {encoding.value: encoding for encoding in Encoding}


class Overloaded(Exception):
    """Raised when the service cannot take a request now: 429 or 503, both retryable."""

    def __init__(self, status: int, message: str, retry_after_s: int) -> None:
        super().__init__(f"{message}; retry after {retry_after_s} s, as Retry-After says")
        self.status = status
        self.retry_after_s = retry_after_s


class BodyTimeout(Exception):
    """Raised when a request body does not arrive within the body timeout."""


class BodyTooLarge(Exception):
    """Raised when a request body exceeds the limit, before or after decompression."""

    def __init__(self, limit_bytes: int, stage: str) -> None:
        super().__init__(
            f"the {stage} request body exceeds {limit_bytes} bytes: send smaller batches "
            "(the SDK's OTEL_BSP_MAX_EXPORT_BATCH_SIZE) or raise VELOCITY_MAX_BODY_BYTES"
        )


@dataclass
class IngestTotals:
    """Spans since startup, for the service's stop log line. Updated on worker threads."""

    requests: int = 0
    server_spans: int = 0
    rejected_spans: int = 0
    own_spans: int = 0
    # Requests rejected with 429 or 503 because the service was overloaded.
    overloaded_requests: int = 0

    def add(self, result: IngestResult) -> None:
        # NOTE: unlocked increments can lose a count under concurrent requests; these totals
        # are only logged.
        self.requests += 1
        self.server_spans += result.server_spans
        self.rejected_spans += result.rejected_spans
        self.own_spans += result.own_spans


def create_otlp_router(
    registry: VelocityRegistry,
    *,
    max_body_bytes: int,
    limiter: IngestLimiter,
    body_timeout_s: float,
    token_check: TokenCheck,
    own_routes: OwnRoutes,
    totals: IngestTotals,
) -> APIRouter:
    """Build the router with ``POST /v1/traces`` feeding ``registry``."""
    throttle = LogThrottle()
    request_ids = itertools.count(1)

    async def export_traces(request: Request) -> Response:
        request_id = next(request_ids)
        client = _client(request)
        content_type = request.headers.get("content-type", "")
        encoding = _CONTENT_TYPES.get(content_type.split(";", 1)[0].strip().lower())
        reply_encoding = encoding or Encoding.JSON

        if not token_check.is_authorized(request):
            return _status_response(401, RPC_UNAUTHENTICATED, UNAUTHORIZED_DETAIL, reply_encoding)
        if encoding is None:
            message = (
                f"unsupported Content-Type {content_type!r}: send application/x-protobuf "
                "or application/json"
            )
            _log_rejected(throttle, "content-type", request_id, client, 415, message)
            return _status_response(415, RPC_INVALID_ARGUMENT, message, reply_encoding)

        coding = request.headers.get("content-encoding", "").strip().lower()
        if coding not in GZIP_CODINGS and coding not in IDENTITY_CODINGS:
            message = f"unsupported Content-Encoding {coding!r}: send gzip or no encoding"
            _log_rejected(throttle, "content-encoding", request_id, client, 415, message)
            return _status_response(415, RPC_INVALID_ARGUMENT, message, reply_encoding)

        try:
            result = await _receive_and_ingest(
                request,
                encoding,
                coding in GZIP_CODINGS,
                max_body_bytes=max_body_bytes,
                limiter=limiter,
                body_timeout_s=body_timeout_s,
                registry=registry,
                own_routes=own_routes,
            )
        except (BodyTooLarge, DecodeLimitExceeded) as error:
            _log_rejected(throttle, "too-large", request_id, client, 413, str(error))
            return _status_response(413, RPC_RESOURCE_EXHAUSTED, str(error), reply_encoding)
        except MalformedRequest as error:
            _log_rejected(throttle, "malformed", request_id, client, 400, str(error))
            return _status_response(400, RPC_INVALID_ARGUMENT, str(error), reply_encoding)
        except Overloaded as error:
            totals.overloaded_requests += 1
            _log_rejected(throttle, "overloaded", request_id, client, error.status, str(error))
            code = RPC_RESOURCE_EXHAUSTED if error.status == 429 else RPC_UNAVAILABLE
            return _status_response(
                error.status,
                code,
                str(error),
                reply_encoding,
                {"Retry-After": str(error.retry_after_s)},
            )
        except BodyTimeout as error:
            _log_rejected(throttle, "timeout", request_id, client, 408, str(error))
            return _status_response(408, RPC_INVALID_ARGUMENT, str(error), reply_encoding)
        except ClientDisconnect:
            # The client is gone, so this response is never read. Its exporter sends the batch
            # again if it still can.
            message = "the client disconnected before its spans were counted"
            _log_rejected(throttle, "disconnected", request_id, client, 400, message)
            return _status_response(400, RPC_INVALID_ARGUMENT, message, reply_encoding)
        except Exception:  # Any fault still gets an OTLP Status response, and is logged.
            logger.exception(
                "otel-velocity service: export request %d from %s failed", request_id, client
            )
            message = "internal error while counting the spans; see the service's log"
            return _status_response(500, RPC_INTERNAL, message, reply_encoding)

        totals.add(result)
        if result.rejected:
            should_log, suppressed = throttle.allow("partial")
            if should_log:
                logger.warning(
                    "otel-velocity service: export request %d from %s: %s "
                    "(%d similar requests not logged in the last %.0f s)",
                    request_id,
                    client,
                    result.error_message(),
                    suppressed,
                    throttle.interval_s,
                )
        return Response(serialize(export_response(result), encoding), media_type=encoding.value)

    router = APIRouter()
    router.add_api_route(
        "/v1/traces",
        export_traces,
        methods=["POST"],
        summary="Receive spans over OTLP/HTTP",
        description=(
            "An OTLP ExportTraceServiceRequest as application/x-protobuf or application/json, "
            "optionally gzip-compressed. SERVER spans are counted in the velocity table. The "
            "response has the request's encoding."
        ),
        # The handler returns its own responses; JSONResponse here only names the JSON media
        # type under which the OpenAPI schema lists the response models.
        response_class=JSONResponse,
        responses=_OPENAPI_RESPONSES,
        openapi_extra=_OPENAPI_REQUEST_BODY,
        tags=["otlp"],
    )
    return router


async def _receive_and_ingest(
    request: Request,
    encoding: Encoding,
    gzipped: bool,
    *,
    max_body_bytes: int,
    limiter: IngestLimiter,
    body_timeout_s: float,
    registry: VelocityRegistry,
    own_routes: OwnRoutes,
) -> IngestResult:
    """Read the body within the limiter's bytes, then decode and count it on a worker.

    Raises ``Overloaded`` before the body is read when its Content-Length does not fit the
    pending bytes, while it is read when a body without one stops fitting, and after it is
    read when no worker is free within ``max_wait_s``.
    """
    declared = request.headers.get("content-length", "")
    # isascii: str.isdigit also accepts digits such as "²" that int() rejects.
    declared_bytes = int(declared) if declared.isascii() and declared.isdigit() else 0
    if declared_bytes > max_body_bytes:
        raise BodyTooLarge(max_body_bytes, "compressed" if gzipped else "uncompressed")
    reservation = limiter.reserve(declared_bytes)
    if reservation is None:
        raise _pending_bytes_full(limiter)

    try:
        body = await _read_body(request, max_body_bytes, gzipped, reservation, body_timeout_s)
        if not await limiter.acquire_worker():
            raise Overloaded(
                503,
                f"the service is overloaded: no decoding worker was free within "
                f"{limiter.max_wait_s:g} s",
                limiter.retry_after_s(),
            )
        started_s = time.perf_counter()
        try:
            # An exporter that timed out while this request waited sends the batch again, so
            # counting this copy would count its spans twice.
            if await request.is_disconnected():
                raise ClientDisconnect
            return await anyio.to_thread.run_sync(
                partial(
                    _decode_and_ingest,
                    body,
                    encoding,
                    gzipped,
                    max_body_bytes,
                    registry,
                    own_routes,
                ),
                limiter=limiter.thread_limiter,
            )
        finally:
            limiter.release_worker(len(body), time.perf_counter() - started_s)
    finally:
        reservation.release()


def _pending_bytes_full(limiter: IngestLimiter) -> Overloaded:
    return Overloaded(
        429,
        f"the service is overloaded: {limiter.pending_bytes} bytes of export requests are "
        f"waiting to be counted, and the limit is {limiter.max_pending_bytes} "
        "(VELOCITY_MAX_PENDING_BYTES)",
        limiter.retry_after_s(),
    )


def _decode_and_ingest(
    body: bytes,
    encoding: Encoding,
    gzipped: bool,
    max_body_bytes: int,
    registry: VelocityRegistry,
    own_routes: OwnRoutes,
) -> IngestResult:
    if gzipped:
        body = gunzip(body, max_body_bytes)
    return ingest_body(body, encoding, registry, own_routes.templates_for)


async def _read_body(
    request: Request,
    limit_bytes: int,
    gzipped: bool,
    reservation: Reservation,
    timeout_s: float,
) -> bytes:
    """Read the body, stopping as soon as it exceeds ``limit_bytes`` or the reservation."""
    body = bytearray()
    try:
        with anyio.fail_after(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit_bytes:
                    raise BodyTooLarge(limit_bytes, "compressed" if gzipped else "uncompressed")
                if not reservation.grow_to(len(body)):
                    raise _pending_bytes_full(reservation.limiter)
    except TimeoutError:
        raise BodyTimeout(
            f"the request body did not arrive within {timeout_s:g} s ({len(body)} bytes "
            "received): check the network, or send smaller batches"
        ) from None
    return bytes(body)


def gunzip(data: bytes, limit_bytes: int) -> bytes:
    """Decompress gzip data, of one or more members, to at most ``limit_bytes``.

    Raises ``BodyTooLarge`` as soon as the output would exceed the limit, so a small body that
    expands enormously is never held in memory, and ``MalformedRequest`` for invalid data.
    """
    output = bytearray()
    remaining = data
    while remaining:
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            # max_length is at least 1 here; zlib reads 0 as "no limit".
            output += decompressor.decompress(remaining, limit_bytes + 1 - len(output))
        except zlib.error as error:
            raise MalformedRequest(
                f"the body is not valid gzip ({error}); compress it with gzip or drop "
                "Content-Encoding"
            ) from None
        if len(output) > limit_bytes:
            raise BodyTooLarge(limit_bytes, "decompressed")
        if not decompressor.eof:
            raise MalformedRequest(
                "the gzip body ends before its end marker: send the whole compressed body"
            )
        remaining = decompressor.unused_data
    return bytes(output)


def _status_response(
    status: int,
    code: int,
    message: str,
    encoding: Encoding,
    headers: dict[str, str] | None = None,
) -> Response:
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return Response(
        serialize(status_message(code, message), encoding),
        status_code=status,
        media_type=encoding.value,
        headers=headers,
    )


def _log_rejected(
    throttle: LogThrottle, place: str, request_id: int, client: str, status: int, message: str
) -> None:
    should_log, suppressed = throttle.allow(place)
    if should_log:
        logger.warning(
            "otel-velocity service: export request %d from %s rejected with %d: %s "
            "(%d similar requests not logged in the last %.0f s)",
            request_id,
            client,
            status,
            message,
            suppressed,
            throttle.interval_s,
        )


def _client(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client else "an unknown client"


# The JSON schema of each response comes from its model; protobuf bodies are binary.
_PROTOBUF_CONTENT: dict[str, Any] = {
    "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}}
}

_OPENAPI_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": OtlpExportResult,
        "description": "Spans accepted; partialSuccess counts the rejected ones.",
        "content": _PROTOBUF_CONTENT,
    },
    400: {
        "model": OtlpStatus,
        "description": "The body cannot be decoded.",
        "content": _PROTOBUF_CONTENT,
    },
    401: {
        "model": OtlpStatus,
        "description": "VELOCITY_TOKEN is set and the token is missing.",
        "content": _PROTOBUF_CONTENT,
    },
    408: {
        "model": OtlpStatus,
        "description": "The body did not arrive within VELOCITY_BODY_TIMEOUT_S.",
        "content": _PROTOBUF_CONTENT,
    },
    413: {
        "model": OtlpStatus,
        "description": (
            "The body exceeds VELOCITY_MAX_BODY_BYTES, or a JSON body would take more than "
            "64 MiB to decode."
        ),
        "content": _PROTOBUF_CONTENT,
    },
    429: {
        "model": OtlpStatus,
        "description": (
            "Overloaded: VELOCITY_MAX_PENDING_BYTES of requests are waiting. Retry after the "
            "Retry-After header's seconds."
        ),
        "content": _PROTOBUF_CONTENT,
    },
    503: {
        "model": OtlpStatus,
        "description": (
            "Overloaded: no decoding worker was free within VELOCITY_MAX_QUEUE_WAIT_S. Retry "
            "after the Retry-After header's seconds."
        ),
        "content": _PROTOBUF_CONTENT,
    },
    415: {
        "model": OtlpStatus,
        "description": "Unsupported Content-Type or Content-Encoding; the Status is JSON.",
    },
}

_OPENAPI_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-protobuf": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {
                "schema": {
                    "type": "object",
                    "description": "OTLP/JSON ExportTraceServiceRequest with resourceSpans.",
                }
            },
        },
    }
}
