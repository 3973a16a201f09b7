"""Benchmark scripts and helpers (run with ``python -m benchmarks.<name>``)."""
