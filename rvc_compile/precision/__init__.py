"""Precision: the plan (which layer in which precision), calibration, sensitivity, accuracy-aware search, layer names."""
