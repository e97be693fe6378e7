"""Speaker folding for single-speaker use: the speaker embedding becomes a constant.

The embedding row and everything computed from it alone (the flow's and decoder's conditioning 1x1
convolutions) turn into constants once the graph is constant-folded; the graph loses its ``speaker``
input and the artifact serves that one speaker.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import RecipeError
from .base import GraphState, Pass, register


@dataclass
class FoldSpeakerParams:
    speaker: int = 0


@register
class FoldSpeaker(Pass):
    name = "fold_speaker"
    stage = "torch"
    Params = FoldSpeakerParams
    description = "fix the speaker: its embedding and conditioning convolutions become constants"

    def run(self, state: GraphState, workdir: Path) -> GraphState:
        n_speakers = state.spec.n_speakers
        if not 0 <= self.params.speaker < n_speakers:
            raise RecipeError(f"passes.fold_speaker.speaker: {self.params.speaker} out of range (the model has {n_speakers} speakers)")
        state.model.fix_speaker(self.params.speaker)
        state.input_names = state.model.input_names
        state.fixed_inputs["speaker"] = self.params.speaker
        return state
