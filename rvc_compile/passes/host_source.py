"""Compute the NSF harmonic source on the host, outside the graph.

The sine source accumulates phase over every output sample: in bf16 or fp16 that alone drops the output
to about 17 dB SNR, and int8 cannot represent it. After this pass the graph takes the excitation
(``excitation`` [1, T*hop], made by ``rvc_compile.components.synthesizer.nsf`` in float64 from f0 and the source noise) instead
of ``source_noise``; everything after the excitation (the source's linear+tanh and the decoder) stays in
the graph. The runtime computes the excitation for the caller, so the artifact's interface is unchanged,
and a long input processed in windows keeps one continuous phase.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .base import GraphState, Pass, register


@dataclass
class HostSourceParams:
    pass


@register
class HostSource(Pass):
    name = "host_source"
    stage = "torch"
    Params = HostSourceParams
    description = "compute the NSF sine source on the host in float64; the graph takes the excitation as input"

    def run(self, state: GraphState, workdir: Path) -> GraphState:
        if not state.spec.f0:
            state.notes.append("model has no pitch input: no NSF source to move")
            return state
        state.model.host_source = True
        state.input_names = state.model.input_names
        state.notes.append("NSF excitation computed on the host (float64); graph input 'excitation' replaces 'source_noise'")
        return state
