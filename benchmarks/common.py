"""Helpers shared by the benchmarks: machine description, medians and Markdown tables."""

from __future__ import annotations

import os
import platform
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Versions recorded with every run, because each of them changes the figures.
PACKAGES = (
    "opentelemetry-sdk",
    "opentelemetry-instrumentation-fastapi",
    "sentry-sdk",
    "fastapi",
    "starlette",
    "uvicorn",
    "prometheus-fastapi-instrumentator",
    "ddsketch",
)


def cpu_model() -> str:
    """Return the first ``model name`` of /proc/cpuinfo, or the platform's processor name."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    """Return the 1-, 5- and 15-minute load averages, to show how busy the shared machine was."""
    try:
        last_minute, last_5_minutes, last_15_minutes = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{last_minute:.2f} {last_5_minutes:.2f} {last_15_minutes:.2f}"


def machine_info() -> dict[str, object]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "load_average_at_start": load_average(),
        "packages": versions,
    }


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


@dataclass
class Table:
    """A Markdown table with a title, built row by row."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(
                f"table {self.title!r} has {len(self.columns)} columns, got {len(cells)} cells"
            )
        self.rows.append([str(cell) for cell in cells])

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        lines.extend("| " + " | ".join(row) + " |" for row in self.rows)
        if self.notes:
            lines.append("")
            lines.extend(self.notes)
        return "\n".join(lines)


@dataclass
class Section:
    """The result of one benchmark: tables for people and raw figures for the JSON file."""

    name: str
    tables: list[Table] = field(default_factory=list)
    raw: dict[str, object] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """One stated target and whether this run met it."""

    description: str
    measured: str
    met: bool


def format_ns(value_ns: float) -> str:
    if value_ns >= 10_000:
        return f"{value_ns / 1000:.1f} µs"
    return f"{value_ns:.0f} ns"


def format_ratio(value: float) -> str:
    return f"{value:.2f}x"
