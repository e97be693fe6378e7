"""Open whatever a command's SOURCE argument names: a checkpoint (the PyTorch reference) or an artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def open_source(path: Path, *, config_path: Path | None = None) -> Any:
    """A model with ``spec``, ``sample_rate`` and ``infer(features, f0, speaker, noise)``."""
    from .reference import ReferenceModel

    return ReferenceModel.from_path(path, config_path=config_path)
