"""The content-addressed store every cached thing goes through (build stages, calibration sets, compiled blobs)."""
