"""Service settings read from the environment.

The window sizes and row caps come from ``otel_velocity.VelocitySettings`` (``VELOCITY_BASELINE_S``,
``VELOCITY_MIN_SAMPLES``, ``VELOCITY_MAX_ROUTES`` and the rest), the Sentry links from
``links.SentryLinkSettings`` (``SENTRY_ORG``, ``SENTRY_PROJECT_ID`` or ``SENTRY_DSN``, ...), and
these variables belong to the service itself:

* ``VELOCITY_MAX_BODY_BYTES``: the largest OTLP request body, in bytes, before and after gzip
  decompression (default 20 MiB, the limit the OTLP specification recommends).
* ``VELOCITY_MAX_PENDING_BYTES``: the most request body bytes held at once by export requests
  that are being received, waiting or decoding (default 64 MiB or the body limit, whichever is
  larger). Past it export requests get 429 with Retry-After.
* ``VELOCITY_MAX_QUEUE_WAIT_S``: the longest an export request waits for a decoding worker, in
  seconds, before it gets 503 with Retry-After (default 5).
* ``VELOCITY_BODY_TIMEOUT_S``: the longest the service waits for an export request's body to
  arrive, in seconds, before it responds with 408 (default 30).
* ``VELOCITY_TOKEN``: when set, ``/ops/*`` and ``/v1/traces`` require
  ``Authorization: Bearer <token>``.
* ``VELOCITY_CORS_ORIGINS``: origins allowed to call the service from a browser, separated by
  commas; CORS is off when it is unset.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from otel_velocity import VelocitySettings
from otel_velocity.envvars import finite_float, positive_int
from otel_velocity_service.links import SentryLinkSettings, SentryNotConfigured

logger = logging.getLogger(__name__)

# Setting any of these requests Sentry links, so a configuration that leaves them off is a warning.
_SENTRY_LINK_VARIABLES = (
    "SENTRY_ORG",
    "SENTRY_ORG_SLUG",
    "SENTRY_PROJECT_ID",
    "SENTRY_URL",
    "VELOCITY_SENTRY_PROJECTS",
)

DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PENDING_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_QUEUE_WAIT_S = 5.0
DEFAULT_BODY_TIMEOUT_S = 30.0

SENTRY_LINKS_OFF_REASON = (
    "Sentry links are off: set SENTRY_ORG and SENTRY_PROJECT_ID (or SENTRY_DSN) "
    "in the service's environment."
)


@dataclass(frozen=True)
class ServiceSettings:
    """Everything the service reads at startup; ``from_env`` builds it from the environment."""

    velocity: VelocitySettings = field(default_factory=VelocitySettings)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # None: DEFAULT_MAX_PENDING_BYTES or max_body_bytes, whichever is larger.
    max_pending_bytes: int | None = None
    max_queue_wait_s: float = DEFAULT_MAX_QUEUE_WAIT_S
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    # Kept out of repr so that logging the settings never prints the secret.
    token: str | None = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()
    sentry_links: SentryLinkSettings | None = None
    sentry_off_reason: str | None = SENTRY_LINKS_OFF_REASON

    @property
    def pending_bytes_limit(self) -> int:
        """``max_pending_bytes``, never None: ``__post_init__`` sets the default."""
        return self.max_pending_bytes or max(DEFAULT_MAX_PENDING_BYTES, self.max_body_bytes)

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be at least 1, got {self.max_body_bytes!r}")
        if self.max_pending_bytes is None:
            object.__setattr__(
                self, "max_pending_bytes", max(DEFAULT_MAX_PENDING_BYTES, self.max_body_bytes)
            )
        elif self.max_pending_bytes < self.max_body_bytes:
            # A body that fits the body limit must fit the pending bytes, or it would get 429
            # forever.
            raise ValueError(
                f"max_pending_bytes ({self.max_pending_bytes}) is below max_body_bytes "
                f"({self.max_body_bytes}): set VELOCITY_MAX_PENDING_BYTES to at least "
                "VELOCITY_MAX_BODY_BYTES"
            )
        for name in ("max_queue_wait_s", "body_timeout_s"):
            seconds = getattr(self, name)
            if not 0 < seconds < math.inf:
                raise ValueError(f"{name} must be a positive number of seconds, got {seconds!r}")
        # The reason is None exactly when links are on.
        if self.sentry_links is not None:
            object.__setattr__(self, "sentry_off_reason", None)
        elif self.sentry_off_reason is None:
            object.__setattr__(self, "sentry_off_reason", SENTRY_LINKS_OFF_REASON)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServiceSettings:
        """Read every setting; raise ``ValueError`` naming the variable for an invalid value.

        Missing or invalid Sentry link settings do not raise: the service runs without links
        and ``sentry_off_reason`` names the variable to set.
        """
        env = os.environ if environ is None else environ

        try:
            sentry_links: SentryLinkSettings | None = SentryLinkSettings.from_env(env)
            off_reason = None
        except SentryNotConfigured as error:
            sentry_links = None
            off_reason = error.reason
            if any(env.get(name, "").strip() for name in _SENTRY_LINK_VARIABLES):
                logger.warning("otel-velocity service: Sentry links are off: %s", off_reason)

        token = env.get("VELOCITY_TOKEN", "").strip() or None
        origins = tuple(
            origin.strip()
            for origin in env.get("VELOCITY_CORS_ORIGINS", "").split(",")
            if origin.strip()
        )
        return cls(
            velocity=VelocitySettings.from_env(env),
            max_body_bytes=positive_int(env, "VELOCITY_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
            max_pending_bytes=_optional_positive_int(env, "VELOCITY_MAX_PENDING_BYTES"),
            max_queue_wait_s=finite_float(
                env, "VELOCITY_MAX_QUEUE_WAIT_S", DEFAULT_MAX_QUEUE_WAIT_S
            ),
            body_timeout_s=finite_float(env, "VELOCITY_BODY_TIMEOUT_S", DEFAULT_BODY_TIMEOUT_S),
            token=token,
            cors_origins=origins,
            sentry_links=sentry_links,
            sentry_off_reason=off_reason,
        )


def _optional_positive_int(env: Mapping[str, str], name: str) -> int | None:
    if not env.get(name, "").strip():
        return None
    return positive_int(env, name, 0)
