"""Checks of collector.yaml with the real Collector's `validate` and `print-config` commands."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

COMMAND_TIMEOUT_SECONDS = 30


def run_collector_command(
    binary: Path, *args: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )


def test_validate_accepts_collector_yaml(collector_binary, collector_config, collector_env):
    result = run_collector_command(
        collector_binary, "validate", "--config", str(collector_config), env=collector_env
    )

    assert result.returncode == 0, result.stderr


def test_validate_accepts_velocity_only_mode(collector_binary, collector_config, collector_env):
    collector_env["OTELCOL_TRACES_EXPORTERS"] = "[otlp_http/velocity]"
    collector_env["SENTRY_OTLP_TRACES_ENDPOINT"] = "none"
    del collector_env["SENTRY_PUBLIC_KEY"]

    result = run_collector_command(
        collector_binary, "validate", "--config", str(collector_config), env=collector_env
    )

    assert result.returncode == 0, result.stderr


def test_validate_rejects_missing_sentry_endpoint(
    collector_binary, collector_config, collector_env
):
    del collector_env["SENTRY_OTLP_TRACES_ENDPOINT"]

    result = run_collector_command(
        collector_binary, "validate", "--config", str(collector_config), env=collector_env
    )

    assert result.returncode != 0
    assert "exporters::otlp_http/sentry: at least one endpoint must be specified" in result.stderr


@pytest.mark.parametrize(
    ("original", "broken", "expected_error"),
    [
        pytest.param(
            "processors: [memory_limiter, batch]",
            "processors: [memory_limiter, batch, attributes]",
            'references processor "attributes" which is not configured',
            id="unconfigured-processor",
        ),
        pytest.param(
            "  otlp_http/velocity:\n",
            "  otlp_http/velocity:\n    no_such_option: true\n",
            "no_such_option",
            id="unknown-exporter-option",
        ),
        pytest.param(
            "processors: [memory_limiter, batch]",
            "processors: [memory_limiter, batch",
            "yaml",
            id="unclosed-flow-sequence",
        ),
    ],
)
def test_validate_rejects_broken_copy(
    collector_binary, collector_config, collector_env, tmp_path, original, broken, expected_error
):
    text = collector_config.read_text()
    assert original in text, (
        f"collector.yaml no longer contains {original!r}; update this test case"
    )
    broken_config = tmp_path / "collector.yaml"
    broken_config.write_text(text.replace(original, broken, 1))

    result = run_collector_command(
        collector_binary, "validate", "--config", str(broken_config), env=collector_env
    )

    assert result.returncode != 0
    assert expected_error in result.stderr


def test_validate_rejects_spike_above_memory_limit(
    collector_binary, collector_config, collector_env
):
    collector_env["OTELCOL_MEMORY_LIMIT_MIB"] = "100"
    collector_env["OTELCOL_MEMORY_SPIKE_LIMIT_MIB"] = "200"

    result = run_collector_command(
        collector_binary, "validate", "--config", str(collector_config), env=collector_env
    )

    assert result.returncode != 0
    assert "memory_limiter" in result.stderr


def test_defaults_listen_on_loopback(
    collector_binary, collector_config, environment_without_collector_variables
):
    """Only the Sentry variables, which have no defaults, are set."""
    env = environment_without_collector_variables
    env["SENTRY_OTLP_TRACES_ENDPOINT"] = (
        "https://o1.ingest.sentry.io/api/2/integration/otlp/v1/traces"
    )
    env["SENTRY_PUBLIC_KEY"] = "test-public-key"

    # --format=json is marked unstable by the Collector. The binary's version
    # is pinned in .ci/collector-builder.yaml, so its output is stable here.
    result = run_collector_command(
        collector_binary,
        "print-config",
        "--mode=unredacted",
        "--format=json",
        "--config",
        str(collector_config),
        env=env,
    )
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)

    protocols = config["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "127.0.0.1:4317"
    assert protocols["http"]["endpoint"] == "127.0.0.1:4318"
    assert config["extensions"]["health_check"]["endpoint"] == "127.0.0.1:13133"
    prometheus = config["service"]["telemetry"]["metrics"]["readers"][0]["pull"]["exporter"][
        "prometheus"
    ]
    assert prometheus["host"] == "127.0.0.1"
    assert prometheus["port"] == 8888
    assert config["exporters"]["otlp_http/velocity"]["endpoint"] == "http://127.0.0.1:8000"
    assert config["service"]["pipelines"]["traces"]["exporters"] == [
        "otlp_http/velocity",
        "otlp_http/sentry",
    ]
    assert config["service"]["pipelines"]["traces"]["processors"] == ["memory_limiter", "batch"]
