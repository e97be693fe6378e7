"""Graph passes. Each pass is one module that registers itself with a typed parameter dataclass.

A pass runs on a ``GraphState`` (see ``base``) and returns a new one; the recipe lists passes by
``name`` with their parameters, validated against the registered dataclass.
"""

from __future__ import annotations

from .base import PASSES, GraphState, Pass, register  # noqa: F401
from . import equalize_channels, fold_speaker, fold_weight_norm, host_source, polyphase_upsample, prune, simplify, stream_block  # noqa: F401  (registration)

__all__ = ["PASSES", "GraphState", "Pass", "register"]
