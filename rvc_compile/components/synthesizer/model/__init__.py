"""The export-ready inference graph of an RVC synthesizer (our implementation, torch)."""

from __future__ import annotations

import torch

from ..spec import ModelSpec
from .synthesizer import Synthesizer, input_names


def build_model(spec: ModelSpec, state_dict: dict[str, torch.Tensor] | None = None) -> Synthesizer:
    """Build the synthesizer for ``spec``; with ``state_dict`` (folded, fp32) load it strictly."""
    model = Synthesizer(spec)
    if state_dict is not None:
        model.load_state_dict(state_dict, strict=True)
    return model.eval().requires_grad_(False)


def expected_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Every inference key of ``spec`` and its shape, without allocating any weights."""
    with torch.device("meta"):
        model = Synthesizer(spec)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


__all__ = ["Synthesizer", "build_model", "expected_shapes", "input_names"]
