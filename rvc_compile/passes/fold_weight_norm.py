"""Weight-norm folding and removal of training-only modules.

The checkpoint loader already folds every (g, v) pair into a plain weight and drops ``enc_q``, so the
model this pass sees holds inference weights only; the pass checks that and records it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import BuildError
from .base import GraphState, Pass, register


@dataclass
class FoldWeightNormParams:
    pass


@register
class FoldWeightNorm(Pass):
    name = "fold_weight_norm"
    stage = "torch"
    Params = FoldWeightNormParams
    description = "fold weight-norm (g, v) pairs into plain weights; drop training-only modules (enc_q)"

    def run(self, state: GraphState, workdir: Path) -> GraphState:
        leftovers = [
            name for name, _ in state.model.named_parameters()
            if name.startswith("enc_q.") or "weight_g" in name or "weight_v" in name or "parametrizations" in name
        ]
        if leftovers:
            raise BuildError(f"fold_weight_norm: model still has training-only or weight-norm parameters: {leftovers[0]}")
        state.notes.append("weight norm folded and enc_q dropped at load")
        return state
