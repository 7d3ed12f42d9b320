"""Benchmarks, run by `make bench` (`python -m benchmarks`).

Each prints one line per figure: `BENCH <name> <value> <unit>`.
"""
