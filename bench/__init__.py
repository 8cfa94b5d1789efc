"""Benchmarks: each prints JSON lines (one result per line) and appends them to bench/results/."""
