"""Benchmarks, run on demand: `make bench` (see harness.py)."""
