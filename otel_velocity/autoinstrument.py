"""Entry points that ``opentelemetry-instrument`` loads: distro, configurator and a final hook.

``opentelemetry-instrument`` runs one distro and one configurator per process: the ones named by
``OTEL_PYTHON_DISTRO`` and ``OTEL_PYTHON_CONFIGURATOR``, or else the first entry point that
Python's metadata lists, which depends on the install order when ``opentelemetry-distro`` is
installed too. Whichever of them runs, the velocity processor ends up on the provider exactly
once:

* ``VelocityDistro`` sets defaults (OTLP over ``http/protobuf`` for traces, no metrics or logs
  exporters) and names ``VelocityConfigurator`` as the configurator unless one is set.
* ``VelocityConfigurator`` builds the SDK as the standard configurator does, then calls
  ``install``.
* ``after_instrumentation`` runs after every instrumentor in all cases and calls ``install``,
  which returns at once when the configurator already did.
"""

from __future__ import annotations

import importlib.util
import logging
import os
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


class VelocityDistro(BaseDistro):  # type: ignore[misc]
    """Defaults for ``opentelemetry-instrument``; any variable the user set wins."""

    def _configure(self, **kwargs: Any) -> None:
        os.environ.setdefault(OTEL_TRACES_EXPORTER, "otlp")
        os.environ.setdefault(OTEL_METRICS_EXPORTER, "none")
        os.environ.setdefault(OTEL_LOGS_EXPORTER, "none")
        os.environ.setdefault(OTEL_EXPORTER_OTLP_PROTOCOL, HTTP_PROTOBUF)
        os.environ.setdefault("OTEL_PYTHON_CONFIGURATOR", ENTRY_POINT_NAME)


class VelocityConfigurator(_OTelSDKConfigurator):
    """The standard SDK configurator, followed by ``install``."""

    def _configure(self, **kwargs: Any) -> None:
        _fall_back_to_http_without_grpc()
        super()._configure(**kwargs)  # type: ignore[no-untyped-call]
        install()


def after_instrumentation() -> None:
    """Install on the SDK provider if another configurator built it; a no-op after ours."""
    try:
        install()
    except TypeError:
        logger.warning(
            "otel-velocity: no SDK TracerProvider after auto-instrumentation (%s); "
            "velocity windows are off. Set OTEL_TRACES_EXPORTER or call otel_velocity.install()",
            type(get_tracer_provider()).__name__,
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
