"""Profile one throughput configuration under load with py-spy, and group the samples.

``python -m benchmarks.profile_app c --seconds 10`` starts configuration (c) of
benchmarks/throughput.py with its receiver and runs ``wrk`` against it, while ``py-spy record
--gil`` samples whichever thread of the app holds the GIL, 100 times per second. It prints where
the samples fall: by package of the innermost frame (own time), and the functions with the
largest own and inclusive shares. py-spy is a benchmark extra (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import threading
from collections import Counter
from pathlib import Path

from benchmarks.throughput import (
    CONFIGURATIONS,
    Configuration,
    hidden_otel_velocity,
    run_wrk,
    start,
    stop,
    wait_ready,
)

# Path fragment -> group, first match wins; these name the layers of an instrumented request.
GROUPS = (
    ("otel_velocity/", "otel-velocity"),
    ("opentelemetry/instrumentation/", "OpenTelemetry instrumentation (ASGI, FastAPI)"),
    ("opentelemetry/exporter/", "OpenTelemetry OTLP exporter"),
    ("opentelemetry/proto/", "OpenTelemetry OTLP exporter"),
    ("google/protobuf/", "OpenTelemetry OTLP exporter"),
    ("opentelemetry/sdk/metrics/", "OpenTelemetry SDK metrics"),
    ("opentelemetry/sdk/", "OpenTelemetry SDK tracing"),
    ("opentelemetry/", "OpenTelemetry API, context, semconv"),
    ("sentry_sdk/", "sentry-sdk"),
    ("prometheus", "Prometheus client"),
    ("fastapi/", "FastAPI"),
    ("starlette/", "Starlette"),
    ("uvicorn/", "uvicorn"),
    ("h11/", "h11"),
    ("requests/", "requests, urllib3 (exporter HTTP)"),
    ("urllib3/", "requests, urllib3 (exporter HTTP)"),
    ("asyncio/", "asyncio"),
    ("pydantic", "pydantic"),
)


def group_of(frame: str) -> str:
    for fragment, group in GROUPS:
        if fragment in frame:
            return group
    return "other (stdlib, interpreter)"


def _short(frame: str) -> str:
    """Drop the line number and the path up to site-packages or the standard library."""
    frame = re.sub(r":\d+\)$", ")", frame)
    return re.sub(r"\(/.*?/(site-packages|python3\.\d+)/", "(", frame)


def summarize(raw: str, top: int = 25) -> str:
    own: Counter[str] = Counter()
    own_functions: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[group_of(frames[-1])] += count
        own_functions[_short(frames[-1])] += count
        for function in {_short(frame) for frame in frames}:
            inclusive[function] += count

    lines = [f"{total} samples", "", "Own time by package of the innermost frame:"]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in own.most_common()]
    lines += ["", f"Top {top} functions by own time:"]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in own_functions.most_common(top)]
    lines += ["", f"Top {top} functions by inclusive time:"]
    lines += [f"  {100 * n / total:5.1f} %  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    names = [configuration.name for configuration in CONFIGURATIONS]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("configuration", choices=names, help="configuration to profile")
    parser.add_argument("--seconds", type=int, default=10, help="load and sampling time in s")
    parser.add_argument(
        "--raw", type=Path, help="also write py-spy's collapsed stacks to this file"
    )
    arguments = parser.parse_args(argv)

    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy not found: pip install -e '.[bench]'")
    configuration = CONFIGURATIONS[names.index(arguments.configuration)]
    with hidden_otel_velocity() as hidden_directory:
        profile(configuration, hidden_directory, arguments.seconds, arguments.raw, py_spy)


def profile(
    configuration: Configuration,
    hidden_directory: str,
    seconds: int,
    raw_path: Path | None,
    py_spy: str,
) -> None:
    running = start(configuration, hidden_directory)
    try:
        wait_ready(running)
        run_wrk(running.port, 2)
        with tempfile.TemporaryDirectory() as directory:
            output = Path(directory) / "profile.txt"
            recorder = subprocess.Popen(
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(running.server.pid),
                    "--duration",
                    str(seconds),
                    "--rate",
                    "100",
                    "--format",
                    "raw",
                    "--full-filenames",
                    "--gil",
                    "--output",
                    str(output),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            load = threading.Thread(target=run_wrk, args=(running.port, seconds))
            load.start()
            load.join()
            _, errors = recorder.communicate(timeout=seconds + 60)
            if recorder.returncode != 0:
                raise SystemExit(f"py-spy failed: {errors}")
            print(f"({configuration.name}) {configuration.label}")
            raw = output.read_text()
            if raw_path is not None:
                raw_path.write_text(raw)
            print(summarize(raw))
    finally:
        stop(running)


if __name__ == "__main__":
    main()
