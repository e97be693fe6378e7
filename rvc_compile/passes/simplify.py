"""Constant folding and graph simplification of the captured ONNX graph (onnxslim, or onnxsim)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import BuildError
from .base import GraphState, Pass, register


@dataclass
class SimplifyParams:
    tool: Literal["onnxslim", "onnxsim"] = "onnxslim"


@register
class Simplify(Pass):
    name = "simplify"
    stage = "onnx"
    Params = SimplifyParams
    description = "constant folding, dead-node removal and operator fusion on the ONNX graph"

    def run(self, state: GraphState, workdir: Path) -> GraphState:
        import onnx

        model = onnx.load(str(state.onnx_path))
        original = onnx.ModelProto()
        original.CopyFrom(model)  # the tools may rewrite their input in place
        before = len(model.graph.node)
        if self.params.tool == "onnxslim":
            import onnxslim

            simplified = onnxslim.slim(model)
        else:
            try:
                import onnxsim
            except ImportError:
                raise BuildError("passes.simplify.tool: onnxsim is not installed (pip install onnxsim), or use onnxslim") from None
            simplified, ok = onnxsim.simplify(model)
            if not ok:
                raise BuildError("passes.simplify: onnxsim could not validate the simplified graph")
        from ..precision.layers import carry_names, name_layers

        carry_names(original, simplified)  # fused nodes come back named after tensors of the original graph
        name_layers(simplified)
        out = workdir / "simplified.onnx"
        onnx.save(simplified, str(out))
        state.onnx_path = out
        state.notes.append(f"simplify ({self.params.tool}): {before} -> {len(simplified.graph.node)} nodes")
        return state
