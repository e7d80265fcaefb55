"""Benchmarks and simulations: run by hand as modules (``python -m tests.bench.NAME``), not by pytest."""
