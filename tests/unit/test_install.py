import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NoOpTracerProvider, SpanKind

from otel_velocity import VelocitySettings, get_registry, install
from otel_velocity.autoinstrument import _fall_back_to_http_without_grpc


def test_install_once_per_provider() -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "manual"}))
    settings = VelocitySettings.from_env({})

    first = install(provider, settings=settings)
    second = install(provider, settings=settings)

    assert first is second
    assert get_registry() is first.registry


def test_install_counts_spans_of_that_provider() -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "manual"}))
    processor = install(provider, settings=VelocitySettings.from_env({}))
    tracer = provider.get_tracer("test")
    attributes = {"http.request.method": "GET", "http.route": "/manual"}
    with tracer.start_as_current_span("GET /manual", kind=SpanKind.SERVER, attributes=attributes):
        pass

    rows = processor.registry.rows("manual")
    assert [str(row.key) for row in rows] == ["GET /manual"]


def test_install_rejects_non_sdk_provider() -> None:
    with pytest.raises(TypeError, match="opentelemetry-sdk TracerProvider"):
        install(NoOpTracerProvider())  # type: ignore[arg-type]


def test_settings_reject_invalid_values() -> None:
    with pytest.raises(ValueError, match="VELOCITY_MAX_ROUTES='many'"):
        VelocitySettings.from_env({"VELOCITY_MAX_ROUTES": "many"})
    with pytest.raises(ValueError, match="VELOCITY_SENTRY_OTLP='maybe'"):
        VelocitySettings.from_env({"VELOCITY_SENTRY_OTLP": "maybe"})


def test_settings_read_aliases() -> None:
    settings = VelocitySettings.from_env(
        {"SENTRY_DSN": "http://k@h/1", "RELEASE_SHA": "abc", "SENTRY_ENV": "prod"}
    )
    assert settings.sentry.release == "abc"
    assert settings.sentry.environment == "prod"


def test_settings_standard_name_wins_over_alias() -> None:
    settings = VelocitySettings.from_env({"SENTRY_RELEASE": "std", "RELEASE_SHA": "alias"})
    assert settings.sentry.release == "std"


def test_grpc_falls_back_to_http_when_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name: None if "grpc" in name else real_find_spec(name),
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")

    _fall_back_to_http_without_grpc()

    import os

    assert os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"


def test_second_install_rearms_sigterm_flush() -> None:
    import signal

    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        provider = TracerProvider()
        install(provider, settings=VelocitySettings.from_env({}))
        first_handler = signal.getsignal(signal.SIGTERM)

        # A forked gunicorn worker resets SIGTERM to its default action.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        install(provider, settings=VelocitySettings.from_env({}))

        assert callable(first_handler)
        assert getattr(signal.getsignal(signal.SIGTERM), "__name__", "") == "handle_sigterm"
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_install_keeps_existing_sigterm_handler() -> None:
    import signal

    def app_handler(signum: int, frame: object) -> None:
        pass

    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, app_handler)
        install(TracerProvider(), settings=VelocitySettings.from_env({}))
        assert signal.getsignal(signal.SIGTERM) is app_handler
    finally:
        signal.signal(signal.SIGTERM, previous)
