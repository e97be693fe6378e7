"""rvc-compile: compile trained RVC voice models into fast, verified inference artifacts."""

__version__ = "0.1.0"
