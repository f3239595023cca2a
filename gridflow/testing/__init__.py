"""Helpers for tests, the demo simulator and benchmarks (never imported by production paths)."""
