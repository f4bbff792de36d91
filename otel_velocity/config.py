"""Settings read from the environment: standard Sentry names first, then ``VELOCITY_*``.

Each variable and its default is listed in the README's configuration table. An invalid value
raises ``ValueError`` naming the variable, the value and what is accepted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from otel_velocity.registry import DEFAULT_MAX_ROUTES, DEFAULT_MAX_SERVICES
from otel_velocity.windows import WindowSettings

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class SentrySettings:
    """Where and how the Sentry correlation reports; inactive without a DSN."""

    dsn: str | None = None
    release: str | None = None
    environment: str | None = None
    build_time: str | None = None
    otlp_traces: bool = True

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
        baseline_s = _positive_float(env, "VELOCITY_BASELINE_S", defaults.baseline_window_s)
        window = WindowSettings(
            bucket_s=bucket_s,
            baseline_buckets=max(round(baseline_s / bucket_s), 1),
            regress_threshold_pct=_positive_float(
                env, "VELOCITY_REGRESS_THRESHOLD_PCT", defaults.regress_threshold_pct
            ),
            regress_min_delta_ms=_non_negative_float(
                env, "VELOCITY_REGRESS_MIN_MS", defaults.regress_min_delta_ms
            ),
            min_samples=_positive_int(env, "VELOCITY_MIN_SAMPLES", defaults.min_samples),
        )
        sentry = SentrySettings(
            dsn=_first(env, "SENTRY_DSN"),
            release=_first(env, "SENTRY_RELEASE", "RELEASE_SHA"),
            environment=_first(env, "SENTRY_ENVIRONMENT", "SENTRY_ENV"),
            build_time=_first(env, "BUILD_TIME"),
            otlp_traces=_flag(env, "VELOCITY_SENTRY_OTLP", True),
        )
        return cls(
            max_routes=_positive_int(env, "VELOCITY_MAX_ROUTES", DEFAULT_MAX_ROUTES),
            max_services=_positive_int(env, "VELOCITY_MAX_SERVICES", DEFAULT_MAX_SERVICES),
            window=window,
            sentry=sentry,
        )


def _first(env: Mapping[str, str], *names: str) -> str | None:
    """Return the first non-empty value among ``names``: the standard name, then its aliases."""
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


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


def _positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(
            f"{name}={raw!r} is not a number; set a value such as {default:g}"
        ) from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name}={raw!r} must be a positive finite number")
    return value


def _non_negative_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(
            f"{name}={raw!r} is not a number; set a value such as {default:g}"
        ) from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{name}={raw!r} must be a finite number of 0 or more")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not a boolean; set true or false")
