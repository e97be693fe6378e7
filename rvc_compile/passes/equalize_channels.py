"""Cross-layer channel equalization of the decoder's ResBlocks (exact in fp32; for int8).

Inside a ResBlock, ``conv2(lrelu(conv1(.)))``: LeakyReLU commutes with a positive per-channel scale, so
conv1's output channel c may be divided by s_c and conv2's input channel c multiplied by s_c without
changing the function. Trained voices have channels whose ranges differ by orders of magnitude there;
with one int8 activation scale per tensor (and one weight scale per output channel), the small channels
drown in the large ones' quantization step. Choosing s_c = sqrt(r1_c / r2_c) (r1_c: the largest |weight|
of conv1's output channel c, r2_c: of conv2's input channel c) gives both the same range, sqrt(r1_c r2_c),
the data-free equalization of Nagel et al. (2019), "Data-Free Quantization Through Weight Equalization
and Bias Correction". Spread in the residual stream between blocks is not equalized (it feeds skips).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import BuildError
from .base import GraphState, Pass, register


@dataclass
class EqualizeChannelsParams:
    iterations: int = 2  # equalization converges in a few sweeps; each sweep is exact


@register
class EqualizeChannels(Pass):
    name = "equalize_channels"
    stage = "torch"
    Params = EqualizeChannelsParams
    description = "equalize the channel ranges of each decoder ResBlock's conv pair (exact; makes int8 robust to channel-scale spread)"

    def run(self, state: GraphState, workdir: Path) -> GraphState:
        import torch

        if self.params.iterations < 1:
            raise BuildError("equalize_channels: iterations must be at least 1")
        pairs = [
            (conv1, conv2)
            for block in state.model.dec.resblocks
            for conv1, conv2 in zip(getattr(block, "convs1", ()), getattr(block, "convs2", ()))
        ]
        spread_before = spread_after = 1.0
        with torch.no_grad():
            for sweep in range(self.params.iterations):
                for conv1, conv2 in pairs:
                    r1 = conv1.weight.abs().amax(dim=(1, 2))
                    r2 = conv2.weight.abs().amax(dim=(0, 2))
                    if sweep == 0:
                        spread_before = max(spread_before, float(r1.max() / r1.clamp_min(1e-12).min()))
                    scale = torch.sqrt(r1 / r2.clamp_min(1e-12)).clamp(1e-4, 1e4)
                    scale = torch.where((r1 > 0) & (r2 > 0), scale, torch.ones_like(scale))
                    conv1.weight.div_(scale[:, None, None])
                    if conv1.bias is not None:
                        conv1.bias.div_(scale)
                    conv2.weight.mul_(scale[None, :, None])
            for conv1, _ in pairs:
                r1 = conv1.weight.abs().amax(dim=(1, 2))
                spread_after = max(spread_after, float(r1.max() / r1.clamp_min(1e-12).min()))
        state.notes.append(
            f"equalized {len(pairs)} conv pairs: largest channel-range ratio {spread_before:.3g} -> {spread_after:.3g}"
            if pairs else "no ResBlock conv pairs (ResBlock2 has none)"
        )
        return state
