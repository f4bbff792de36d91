"""Entry points that ``opentelemetry-instrument`` loads: distro, configurator and a final hook.

``opentelemetry-instrument`` runs one distro and one configurator per process: the ones named by
``OTEL_PYTHON_DISTRO`` and ``OTEL_PYTHON_CONFIGURATOR``, or else the first entry point that
Python's metadata lists, which depends on the install order when ``opentelemetry-distro`` is
installed too. Whichever of them runs, the velocity processor ends up on the provider exactly
once:

* ``VelocityDistro`` sets defaults (OTLP over ``http/protobuf`` for traces, no metrics or logs
  exporters, no ASGI ``http send``/``http receive`` spans) and names ``VelocityConfigurator``
  as the configurator unless one is set.
* ``VelocityConfigurator`` builds the SDK as the standard configurator does, then calls
  ``install``.
* ``after_instrumentation`` runs after every instrumentor in all cases and calls ``install``,
  which returns at once when the configurator already did.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from importlib.metadata import EntryPoint
from typing import Any

from opentelemetry.environment_variables import (
    OTEL_LOGS_EXPORTER,
    OTEL_METRICS_EXPORTER,
    OTEL_TRACES_EXPORTER,
)
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
)
from opentelemetry.trace import get_tracer_provider

from otel_velocity.install import install

logger = logging.getLogger(__name__)

ENTRY_POINT_NAME = "otel_velocity"
HTTP_PROTOBUF = "http/protobuf"
# The name that a proposed change to opentelemetry-instrumentation-fastapi gives this setting.
# Version 0.66b2 does not read it, so the distro passes it on as an argument.
FASTAPI_EXCLUDE_SPANS = "OTEL_PYTHON_FASTAPI_EXCLUDE_SPANS"
ASGI_SPAN_NAMES = ("receive", "send")


class VelocityDistro(BaseDistro):  # type: ignore[misc]
    """Defaults for ``opentelemetry-instrument``; any variable the user set wins.

    Besides the exporters, it leaves out the INTERNAL ``http send`` and ``http receive`` spans
    that the ASGI middleware of the FastAPI instrumentation starts for every ASGI message (two
    or more per request beside the one SERVER span). Status, route and duration stay on the
    SERVER span. What goes is each message's own timing, and the calls of
    ``client_response_hook`` and ``client_request_hook``, which receive those spans.
    ``OTEL_PYTHON_FASTAPI_EXCLUDE_SPANS`` chooses: a comma-separated subset of
    ``receive,send``, or empty to keep both.
    """

    def _configure(self, **kwargs: Any) -> None:
        os.environ.setdefault(OTEL_TRACES_EXPORTER, "otlp")
        os.environ.setdefault(OTEL_METRICS_EXPORTER, "none")
        os.environ.setdefault(OTEL_LOGS_EXPORTER, "none")
        os.environ.setdefault(OTEL_EXPORTER_OTLP_PROTOCOL, HTTP_PROTOBUF)
        os.environ.setdefault("OTEL_PYTHON_CONFIGURATOR", ENTRY_POINT_NAME)
        os.environ.setdefault(FASTAPI_EXCLUDE_SPANS, "receive,send")

    def load_instrumentor(self, entry_point: EntryPoint, **kwargs: Any) -> None:
        """Pass ``exclude_spans`` to the FastAPI instrumentor, which has no variable for it.

        opentelemetry-instrumentation-fastapi 0.66b2 accepts ``exclude_spans`` only as an
        argument; ``opentelemetry-instrument`` calls every instrumentor without arguments.
        """
        if entry_point.name == "fastapi" and "exclude_spans" not in kwargs:
            excluded = excluded_asgi_spans(os.environ.get(FASTAPI_EXCLUDE_SPANS, ""))
            if excluded:
                kwargs["exclude_spans"] = excluded
        super().load_instrumentor(entry_point, **kwargs)


def excluded_asgi_spans(value: str) -> list[str]:
    """Parse ``OTEL_PYTHON_FASTAPI_EXCLUDE_SPANS``; unknown names are logged and skipped."""
    excluded = []
    for name in value.split(","):
        name = name.strip().lower()
        if not name:
            continue
        if name in ASGI_SPAN_NAMES:
            excluded.append(name)
        else:
            logger.warning(
                "otel-velocity: ignoring %r in %s=%r; expected a comma-separated subset of %s",
                name,
                FASTAPI_EXCLUDE_SPANS,
                value,
                ",".join(ASGI_SPAN_NAMES),
            )
    return excluded


class VelocityConfigurator(_OTelSDKConfigurator):
    """The standard SDK configurator, followed by ``install``."""

    def _configure(self, **kwargs: Any) -> None:
        _fall_back_to_http_without_grpc()
        super()._configure(**kwargs)  # type: ignore[no-untyped-call]
        _install_or_log()


def after_instrumentation() -> None:
    """Install on the SDK provider if another configurator built it; a no-op after ours."""
    try:
        _install_or_log()
    except TypeError:
        logger.warning(
            "otel-velocity: no SDK TracerProvider after auto-instrumentation (%s); "
            "velocity windows are off. Set OTEL_TRACES_EXPORTER or call otel_velocity.install()",
            type(get_tracer_provider()).__name__,
        )


# Set once an invalid setting was logged, so the post-instrument hook does not log it again.
_invalid_setting_logged = False


def _install_or_log() -> None:
    """Run ``install``; an invalid setting turns otel-velocity off instead of all telemetry.

    ``opentelemetry-instrument`` gives up on the whole start-up, instrumentors included, when
    its configurator raises, so the app would run with no tracing at all.
    """
    global _invalid_setting_logged
    if _invalid_setting_logged:
        return

    try:
        install()
    except ValueError as error:
        _invalid_setting_logged = True
        logger.error(
            "otel-velocity: off because of an invalid setting: %s. OpenTelemetry tracing goes "
            "on without velocity windows or Sentry correlation",
            error,
        )


def _fall_back_to_http_without_grpc() -> None:
    """Use ``http/protobuf`` when gRPC is requested but its exporter is not installed.

    Without this, the SDK configurator fails to find the gRPC exporter and the whole app runs
    uninstrumented; this package depends only on the HTTP exporter.
    """
    if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is not None:
        return
    for name in (OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL):
        if os.environ.get(name, "").strip().lower() == "grpc":
            logger.warning(
                "otel-velocity: %s=grpc but opentelemetry-exporter-otlp-proto-grpc is not "
                "installed; exporting with %s instead",
                name,
                HTTP_PROTOBUF,
            )
            os.environ[name] = HTTP_PROTOBUF
