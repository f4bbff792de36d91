"""Service settings read from the environment.

The window sizes and row caps come from ``otel_velocity.VelocitySettings`` (``VELOCITY_BASELINE_S``,
``VELOCITY_MIN_SAMPLES``, ``VELOCITY_MAX_ROUTES`` and the rest), the Sentry links from
``links.SentryLinkSettings`` (``SENTRY_ORG``, ``SENTRY_PROJECT_ID`` or ``SENTRY_DSN``, ...), and
these variables belong to the service itself:

* ``VELOCITY_MAX_BODY_BYTES``: the largest OTLP request body, in bytes, before and after gzip
  decompression (default 20 MiB, the limit the OTLP specification recommends).
* ``VELOCITY_TOKEN``: when set, ``/ops/*`` and ``/v1/traces`` require
  ``Authorization: Bearer <token>``.
* ``VELOCITY_CORS_ORIGINS``: origins allowed to call the service from a browser, separated by
  commas; CORS is off when it is unset.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from otel_velocity_service.links import SentryLinkSettings, SentryNotConfigured

from otel_velocity import VelocitySettings

DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024

SENTRY_LINKS_OFF_REASON = (
    "Sentry links are off: set SENTRY_ORG and SENTRY_PROJECT_ID (or SENTRY_DSN) "
    "in the service's environment."
)


@dataclass(frozen=True)
class ServiceSettings:
    """Everything the service reads at startup; ``from_env`` builds it from the environment."""

    velocity: VelocitySettings = field(default_factory=VelocitySettings)
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # Kept out of repr so that logging the settings never prints the secret.
    token: str | None = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()
    sentry_links: SentryLinkSettings | None = None
    sentry_off_reason: str | None = SENTRY_LINKS_OFF_REASON

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be at least 1, got {self.max_body_bytes!r}")
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

        token = env.get("VELOCITY_TOKEN", "").strip() or None
        origins = tuple(
            origin.strip()
            for origin in env.get("VELOCITY_CORS_ORIGINS", "").split(",")
            if origin.strip()
        )
        return cls(
            velocity=VelocitySettings.from_env(env),
            max_body_bytes=_positive_int(env, "VELOCITY_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
            token=token,
            cors_origins=origins,
            sentry_links=sentry_links,
            sentry_off_reason=off_reason,
        )


def _positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(
            f"{name}={raw!r} is not an integer; set a whole number such as {default}"
        ) from None
    if value < 1:
        raise ValueError(f"{name}={raw!r} must be at least 1")
    return value
