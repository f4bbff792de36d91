"""Benchmarks of otel-velocity: per-span cost, request throughput, OTLP ingest, accuracy, memory.

Run them all with ``python -m benchmarks`` from the repository root (``--quick`` for a short
pass, ``--help`` for the options); docs/benchmarks.md records the figures of one run.
"""
