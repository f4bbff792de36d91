"""Bearer token check for ``/ops/*`` and ``/v1/traces`` when ``VELOCITY_TOKEN`` is set."""

from __future__ import annotations

import hmac
import logging

from fastapi import HTTPException, Request

from otel_velocity_service.throttle import LogThrottle

logger = logging.getLogger(__name__)

UNAUTHORIZED_DETAIL = (
    "missing or invalid bearer token: send 'Authorization: Bearer <VELOCITY_TOKEN>' "
    "(open the page as /velocity#token=<VELOCITY_TOKEN>, or set "
    "OTEL_EXPORTER_OTLP_HEADERS='Authorization=Bearer%20<VELOCITY_TOKEN>' for exporters)"
)


class TokenCheck:
    """Compares the Authorization header with the configured token in constant time.

    The scheme name "Bearer" is matched in any case: HTTP identifies an authentication scheme
    by "a case-insensitive token" (RFC 7235, section 2.1). With no token configured every
    request passes. A rejected request is logged at most once a minute, with the number of
    rejections in between, and never with the header's value.
    """

    def __init__(self, token: str | None) -> None:
        self._expected = token.encode() if token else None
        self._throttle = LogThrottle()

    @property
    def enabled(self) -> bool:
        return self._expected is not None

    def is_authorized(self, request: Request) -> bool:
        if self._expected is None:
            return True
        # Starlette decodes header bytes as latin-1, so encoding back gives the bytes sent.
        header = request.headers.get("authorization", "").encode("latin-1", "replace")
        scheme, _, credentials = header.partition(b" ")
        is_bearer = scheme.lower() == b"bearer"
        # compare_digest runs for every scheme, so its duration does not depend on the scheme.
        if hmac.compare_digest(credentials, self._expected) and is_bearer:
            return True

        should_log, suppressed = self._throttle.allow("unauthorized")
        if should_log:
            client = request.client
            logger.warning(
                "otel-velocity service: rejected %s %s from %s: missing or invalid bearer token "
                "(%d similar rejections not logged in the last %.0f s)",
                request.method,
                request.url.path,
                f"{client.host}:{client.port}" if client else "an unknown client",
                suppressed,
                self._throttle.interval_s,
            )
        return False

    async def __call__(self, request: Request) -> None:
        """FastAPI dependency: raise 401 unless the request carries the token."""
        if not self.is_authorized(request):
            raise HTTPException(
                status_code=401,
                detail=UNAUTHORIZED_DETAIL,
                headers={"WWW-Authenticate": "Bearer"},
            )
