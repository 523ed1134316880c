"""Benchmarks: each module writes a markdown section to bench/results/; run_all assembles BENCHMARKS.md."""
