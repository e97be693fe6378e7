"""Open whatever a command's SOURCE argument names: a checkpoint (the PyTorch reference) or an artifact."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .artifact.manifest import MANIFEST


def is_artifact(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / MANIFEST).exists()


def open_source(path: Path, *, config_path: Path | None = None, threads: int | None = None) -> Any:
    """A model with ``sample_rate``, ``has_f0`` and ``infer(features, f0, speaker, noise)``."""
    if is_artifact(path):
        from .runtime import load

        return load(path, threads=threads)
    from .components.synthesizer.reference import ReferenceModel

    return ReferenceModel.from_path(path, config_path=config_path, threads=threads)
