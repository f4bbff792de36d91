"""Settings read from the environment: standard Sentry names first, then ``VELOCITY_*``.

Each variable and its default is listed in the README's configuration table. An invalid value
raises ``ValueError`` naming the variable, the value and what is accepted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from otel_velocity.envvars import finite_float, first_set, flag, positive_int
from otel_velocity.registry import DEFAULT_MAX_ROUTES, DEFAULT_MAX_SERVICES
from otel_velocity.windows import WindowSettings


@dataclass(frozen=True)
class SentrySettings:
    """Settings of the Sentry correlation, which stays inactive without a DSN."""

    dsn: str | None = None
    release: str | None = None
    environment: str | None = None
    build_time: str | None = None
    otlp_traces: bool = True

    def __post_init__(self) -> None:
        if self.dsn:
            from sentry_sdk.utils import BadDsn, Dsn

            try:
                Dsn(self.dsn)
            except BadDsn as error:
                # The message leaves out the DSN itself: it carries the project's key.
                raise ValueError(
                    f"SENTRY_DSN is not a valid Sentry DSN ({error}); copy it from the Sentry "
                    "project's Client Keys page, e.g. https://<key>@o1.ingest.sentry.io/12"
                ) from None

    @property
    def enabled(self) -> bool:
        return bool(self.dsn)


@dataclass(frozen=True)
class VelocitySettings:
    max_routes: int = DEFAULT_MAX_ROUTES
    max_services: int = DEFAULT_MAX_SERVICES
    window: WindowSettings = field(default_factory=WindowSettings)
    sentry: SentrySettings = field(default_factory=SentrySettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> VelocitySettings:
        env = os.environ if environ is None else environ
        defaults = WindowSettings()
        bucket_s = defaults.bucket_s
        baseline_s = finite_float(env, "VELOCITY_BASELINE_S", defaults.baseline_window_s)
        window = WindowSettings(
            bucket_s=bucket_s,
            baseline_buckets=max(round(baseline_s / bucket_s), 1),
            regress_threshold_pct=finite_float(
                env, "VELOCITY_REGRESS_THRESHOLD_PCT", defaults.regress_threshold_pct
            ),
            regress_min_delta_ms=finite_float(
                env, "VELOCITY_REGRESS_MIN_MS", defaults.regress_min_delta_ms, allow_zero=True
            ),
            min_samples=positive_int(env, "VELOCITY_MIN_SAMPLES", defaults.min_samples),
        )
        sentry = SentrySettings(
            dsn=first_set(env, "SENTRY_DSN"),
            release=first_set(env, "SENTRY_RELEASE", "RELEASE_SHA"),
            environment=first_set(env, "SENTRY_ENVIRONMENT", "SENTRY_ENV"),
            build_time=first_set(env, "BUILD_TIME"),
            otlp_traces=flag(env, "VELOCITY_SENTRY_OTLP", True),
        )
        return cls(
            max_routes=positive_int(env, "VELOCITY_MAX_ROUTES", DEFAULT_MAX_ROUTES),
            max_services=positive_int(env, "VELOCITY_MAX_SERVICES", DEFAULT_MAX_SERVICES),
            window=window,
            sentry=sentry,
        )
