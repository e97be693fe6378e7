"""Measurement: benchmark, baselines, per-layer profile, the machine's floor, FLOP counting."""
