"""Rewrite the decoder's transposed convolutions as polyphase convolutions (exact in fp32).

See ``rvc_compile.components.synthesizer.model.polyphase``: the same weights and FLOPs, but plain convolutions, which the int8
and bf16 kernels of OpenVINO and ONNX Runtime run far faster than transposed ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import BuildError
from .base import GraphState, Pass, register


@dataclass
class PolyphaseUpsampleParams:
    pass


@register
class PolyphaseUpsample(Pass):
    name = "polyphase_upsample"
    stage = "torch"
    Params = PolyphaseUpsampleParams
    description = "rewrite the decoder's transposed convolutions as interleaved plain convolutions (exact)"

    def run(self, state: GraphState, workdir: Path) -> GraphState:
        from torch import nn

        from ..components.synthesizer.model.polyphase import PolyphaseUpsample as Polyphase

        ups = state.model.dec.ups
        rewritten = []
        for index, module in enumerate(ups):
            if isinstance(module, Polyphase):
                continue
            if not isinstance(module, nn.ConvTranspose1d):
                raise BuildError(f"polyphase_upsample: dec.ups.{index} is a {type(module).__name__}, not a transposed convolution")
            try:
                ups[index] = Polyphase(module)
            except ValueError as exc:
                raise BuildError(f"polyphase_upsample: dec.ups.{index}: {exc}") from None
            rewritten.append(f"dec.ups.{index} (x{module.stride[0]}, {len(ups[index].convs)} convs)")
        state.notes.append("rewrote " + (", ".join(rewritten) if rewritten else "nothing"))
        return state
