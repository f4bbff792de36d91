"""Which distro and configurator run under ``opentelemetry-instrument``, with
``opentelemetry-distro`` installed beside otel-velocity, and how often the processor lands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
REPORT = """
import json, os, sentry_sdk
from opentelemetry import trace
from otel_velocity import VelocitySpanProcessor
provider = trace.get_tracer_provider()
processors = provider._active_span_processor._span_processors
print(json.dumps({
    "velocity_processors": sum(isinstance(p, VelocitySpanProcessor) for p in processors),
    "protocol": os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL"),
    "configurator": os.environ.get("OTEL_PYTHON_CONFIGURATOR"),
    "sentry_active": sentry_sdk.get_client().is_active(),
}))
"""


def _run_instrumented(**env: str) -> dict[str, object]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SENTRY_"))}
    base.update({"OTEL_TRACES_EXPORTER": "none", **env})
    result = subprocess.run(
        [str(BIN / "opentelemetry-instrument"), sys.executable, "-c", REPORT],
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    report: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def test_upstream_distro_is_installed_too() -> None:
    from importlib.metadata import entry_points

    names = {ep.name for ep in entry_points(group="opentelemetry_distro")}
    assert {"distro", "otel_velocity"} <= names


def test_velocity_distro_chosen_by_name() -> None:
    report = _run_instrumented(OTEL_PYTHON_DISTRO="otel_velocity")
    assert report["velocity_processors"] == 1
    assert report["protocol"] == "http/protobuf"
    assert report["configurator"] == "otel_velocity"


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"OTEL_PYTHON_DISTRO": "distro"},
        {"OTEL_PYTHON_DISTRO": "distro", "OTEL_PYTHON_CONFIGURATOR": "configurator"},
        {"OTEL_PYTHON_DISTRO": "otel_velocity", "OTEL_PYTHON_CONFIGURATOR": "configurator"},
    ],
    ids=["entry-point-order", "upstream-distro", "upstream-both", "upstream-configurator"],
)
def test_processor_installed_exactly_once(env: dict[str, str]) -> None:
    assert _run_instrumented(**env)["velocity_processors"] == 1


def test_user_protocol_wins() -> None:
    report = _run_instrumented(
        OTEL_PYTHON_DISTRO="otel_velocity", OTEL_EXPORTER_OTLP_PROTOCOL="grpc"
    )
    assert report["protocol"] == "grpc"


def test_sentry_off_without_dsn() -> None:
    report = _run_instrumented(OTEL_PYTHON_DISTRO="otel_velocity")
    assert report["sentry_active"] is False


def test_sentry_on_with_dsn(sentry_dsn: str) -> None:
    report = _run_instrumented(OTEL_PYTHON_DISTRO="otel_velocity", SENTRY_DSN=sentry_dsn)
    assert report["sentry_active"] is True


def _run_instrumented_output(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SENTRY_"))}
    base.update({"OTEL_TRACES_EXPORTER": "none", "OTEL_PYTHON_DISTRO": "otel_velocity", **env})
    return subprocess.run(
        [str(BIN / "opentelemetry-instrument"), sys.executable, "-c", REPORT],
        env=base,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"VELOCITY_MAX_ROUTES": "abc"}, "VELOCITY_MAX_ROUTES='abc'"),
        ({"SENTRY_DSN": "notadsn"}, "SENTRY_DSN is not a valid Sentry DSN"),
    ],
    ids=["max-routes", "dsn"],
)
def test_invalid_setting_keeps_tracing(env: dict[str, str], named: str) -> None:
    result = _run_instrumented_output(**env)
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["velocity_processors"] == 0
    assert result.stderr.count(named) == 1
    assert "Failed to auto initialize" not in result.stderr
