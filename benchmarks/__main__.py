"""Run the benchmarks and print their tables as Markdown: ``python -m benchmarks [--quick]``."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from benchmarks.common import Section, Table, load_average, machine_info

# Benchmark name -> module; each module has ``run(quick: bool) -> Section``.
BENCHMARKS = {
    "span_cost": "benchmarks.span_cost",
    "accuracy": "benchmarks.accuracy",
    "memory": "benchmarks.memory",
    "ingest": "benchmarks.ingest",
    "throughput": "benchmarks.throughput",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Run otel-velocity's benchmarks on this machine and print Markdown tables.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer repeats and shorter load runs: about 1 minute instead of about 7",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=sorted(BENCHMARKS),
        metavar="NAME",
        help=f"run only these benchmarks, of: {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--json", type=Path, metavar="FILE", help="also write every raw figure to FILE as JSON"
    )
    arguments = parser.parse_args(argv)

    names = arguments.only or list(BENCHMARKS)
    machine = machine_info()
    print(_machine_markdown(machine, arguments.quick), flush=True)

    sections: list[Section] = []
    durations_s: dict[str, float] = {}
    for name in names:
        started = time.monotonic()
        section: Section = importlib.import_module(BENCHMARKS[name]).run(arguments.quick)
        durations_s[name] = round(time.monotonic() - started, 1)
        sections.append(section)
        print(
            f"\n## {name} ({durations_s[name]:.0f} s, load average after: {load_average()})\n",
            flush=True,
        )
        for table in section.tables:
            print(table.markdown() + "\n", flush=True)

    print(_targets_table(sections).markdown())
    if arguments.json:
        document = {
            "machine": machine,
            "quick": arguments.quick,
            "durations_s": durations_s,
            "sections": {
                section.name: {
                    "raw": section.raw,
                    "targets": [target.__dict__ for target in section.targets],
                }
                for section in sections
            },
        }
        arguments.json.write_text(json.dumps(document, indent=1, default=str) + "\n")
        print(f"\nRaw figures written to {arguments.json}", file=sys.stderr)
    return 0


def _machine_markdown(machine: dict[str, object], quick: bool) -> str:
    packages = machine["packages"]
    assert isinstance(packages, dict)
    versions = ", ".join(f"{name} {version}" for name, version in packages.items())
    return "\n".join(
        [
            "## Machine",
            "",
            f"- CPU: {machine['cpu_model']}, nproc {machine['nproc']}",
            f"- Python: {machine['implementation']} {machine['python']} on {machine['platform']}",
            f"- Packages: {versions}",
            f"- Load average (1, 5, 15 min) at start: {machine['load_average_at_start']}",
            f"- Mode: {'--quick' if quick else 'full'}",
        ]
    )


def _targets_table(sections: list[Section]) -> Table:
    table = Table("Targets", ["benchmark", "target", "measured", "met"])
    for section in sections:
        for target in section.targets:
            table.add(
                section.name, target.description, target.measured, "yes" if target.met else "no"
            )
    return table


if __name__ == "__main__":
    sys.exit(main())
