"""Benchmark scripts: they print tables; speed is never asserted in tests."""
