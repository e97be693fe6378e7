"""Structured pruning as a torch-stage pass: remove block-internal channels (``rvc_compile.compress.prune``).

The pass only cuts; it does not fine-tune, so the output drifts from the original by however much the
removed channels contributed. ``rvc-compile prune RECIPE.yaml`` cuts *and* distils, and writes a pruned
checkpoint that a build recipe then takes as its source: that is the path for artifacts meant for use.
The pass must run before ``polyphase_upsample`` (it rebuilds the model from its weights); graph options
set before it (``fold_speaker``, ``host_source``) are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping

from ..errors import BuildError, RecipeError
from .base import GraphState, Pass, register


@dataclass
class PruningParams:
    """Fractions of block-internal channels to remove per group, and how channels are ranked."""

    decoder: float = 0.5  # middle channels of every decoder ResBlock1 conv pair
    encoder: float = 0.0  # the content encoder's feed-forward filter width
    flow: float = 0.0  # the flow WaveNets' gate width
    importance: Literal["l1", "l2", "activation"] = "l2"
    round_to: int = 8  # kept widths are multiples of this (SIMD-friendly) where a layer is that wide
    # least_squares: refit each pruned decoder pair's second conv to its full output on calibration inputs
    reconstruct: Literal["none", "least_squares"] = "none"

    def ratios(self) -> dict[str, float]:
        return {"decoder": self.decoder, "encoder": self.encoder, "flow": self.flow}

    @classmethod
    def from_ratios(cls, ratios: Mapping[str, float], *, importance: str = "l2", round_to: int = 1, where: str = "pruning") -> "PruningParams":
        """Checked params from a ratio per group (groups left out are not pruned)."""
        from ..compress.prune import GROUPS

        for group in ratios:
            if group not in GROUPS:
                raise RecipeError.at(where, f"unknown group {group!r} (expected one of {', '.join(GROUPS)})")
        params = cls(**{group: ratios.get(group, 0.0) for group in GROUPS}, importance=importance, round_to=round_to)  # type: ignore[arg-type]
        params.check(where)
        return params

    def check(self, where: str = "pruning") -> None:
        """The one validation of these params (the pass, the prune recipe and ``prune_model`` all use it);
        RecipeError names ``where`` + the field (``pruning.decoder``) in its message and its ``key``."""
        from ..compress.prune import IMPORTANCE_KINDS

        for group, ratio in self.ratios().items():
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0:
                raise RecipeError.at(f"{where}.{group}", f"ratio {ratio!r} must be in [0, 1)")
        if self.importance not in IMPORTANCE_KINDS:
            raise RecipeError.at(f"{where}.importance", f"{self.importance!r} is not one of {', '.join(IMPORTANCE_KINDS)}")
        if isinstance(self.round_to, bool) or not isinstance(self.round_to, int) or self.round_to < 1:
            raise RecipeError.at(f"{where}.round_to", f"{self.round_to!r} must be at least 1")


@dataclass
class PruneParams(PruningParams):
    calibration_count: int = 4  # activation importance: generated example inputs ...
    calibration_seconds: float = 2.0  # ... of this length

    def check(self, where: str = "passes.prune") -> None:
        super().check(where)
        if self.importance == "activation" and (self.calibration_count < 1 or self.calibration_seconds <= 0):
            raise RecipeError.at(where, "activation importance needs calibration_count >= 1 and calibration_seconds > 0")


@register
class Prune(Pass):
    name = "prune"
    stage = "torch"
    Params = PruneParams
    description = "remove block-internal channels (decoder ResBlock middles, encoder FFN, flow gates); no fine-tuning"

    def run(self, state: GraphState, workdir: Path) -> GraphState:
        from torch import nn

        from ..components.synthesizer.examples import example_case
        from ..components.synthesizer.model import build_model
        from ..compress.prune import prune_model, summary_line

        params = self.params
        params.check("passes.prune")
        if any(not isinstance(module, nn.ConvTranspose1d) for module in state.model.dec.ups):
            raise BuildError("passes.prune: must run before polyphase_upsample (it rebuilds the model from plain weights)")
        cases = []
        if params.importance == "activation":
            frames = max(2, int(round(params.calibration_seconds * state.spec.frames_per_second)))
            cases = [example_case(state.spec.feature_dim, frames, seed=1000 + i) for i in range(params.calibration_count)]
        old = state.model
        result = prune_model(
            state.spec, old.state_dict(), ratios=params.ratios(), importance=params.importance, cases=cases, round_to=params.round_to,
        )
        model = build_model(result.spec, result.state_dict)
        if old.fixed_speaker is not None:
            model.fix_speaker(old.fixed_speaker)
        model.host_source = old.host_source
        state.spec, state.model, state.input_names = result.spec, model, model.input_names
        state.records[self.name] = result.record
        state.notes.append(summary_line(result.record) + "; not fine-tuned (rvc-compile prune distils)")
        return state
