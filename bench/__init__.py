"""Benchmarks of gridflow on the local stack, each figure measured beside a raw baseline.

`gridflow bench` (bench.cli) runs them, prints a table and writes docs/PERFORMANCE.md.
"""
