"""Real-time blocks: the graph renders only the last frames of its input (RVC's ``skip_head``).

A real-time voice changer calls the synthesizer on a window of context + the new block (+ crossfade and
SOLA search frames) and keeps only the end. RVC's real-time path (``infer(skip_head, return_length)``)
runs the content encoder over the whole window, the flow over the returned frames plus 24 frames of
context, and the decoder over the returned frames only, so a 0.25 s block with 2.5 s of context costs
about a tenth of synthesizing the window. This pass makes our graph do the same: the model's spec gains
``skip_frames`` (its derived fp32 reference renders the same frames), and the graph's output is
``(frames - skip_frames) * hop`` samples. A recipe's ``stream:`` section adds it (docs/STREAMING.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import RecipeError
from .base import GraphState, Pass, register


@dataclass
class StreamBlockParams:
    skip_frames: int = 0  # frames of context before the rendered ones


@register
class StreamBlock(Pass):
    name = "stream_block"
    stage = "torch"
    Params = StreamBlockParams
    description = "real-time blocks: render only the frames after skip_frames of context (the flow and decoder skip them)"

    def run(self, state: GraphState, workdir: Path) -> GraphState:
        from ..components.synthesizer.spec import with_skip

        if not hasattr(state.spec, "skip_frames"):
            raise RecipeError("passes.stream_block: only synthesizer recipes render blocks")
        skip = self.params.skip_frames
        if isinstance(skip, bool) or not isinstance(skip, int) or skip < 1:
            raise RecipeError(f"passes.stream_block.skip_frames: {skip!r} must be a positive number of frames")
        state.spec = with_skip(state.spec, skip, source="passes.stream_block")
        state.model.spec = state.spec
        state.notes.append(f"renders the frames after the first {skip} (flow context {min(skip, 24)} frames)")
        return state
