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


class _FixedSpeaker:
    """Build lazily so importing the registry does not import torch."""

    @staticmethod
    def wrap(model, speaker: int):
        import torch

        class FixedSpeakerSynthesizer(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner
                self.spec = inner.spec
                with torch.no_grad():
                    g = inner.speaker_embedding(torch.tensor([speaker], dtype=torch.long))
                self.register_buffer("g", g.clone())

            def forward(self, *inputs):
                if self.spec.f0:
                    features, f0, prior_noise, source_noise = inputs
                else:
                    (features, prior_noise), f0, source_noise = inputs, None, None
                return self.inner.synthesize(features, f0, self.g, prior_noise, source_noise)

        return FixedSpeakerSynthesizer(model).eval()


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
        state.model = _FixedSpeaker.wrap(state.model, self.params.speaker)
        state.input_names = [name for name in state.input_names if name != "speaker"]
        state.fixed_inputs["speaker"] = self.params.speaker
        return state
