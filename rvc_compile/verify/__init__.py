"""Checking artifacts: accuracy metrics, golden-set and latency gates, ``rvc-compile verify``."""
