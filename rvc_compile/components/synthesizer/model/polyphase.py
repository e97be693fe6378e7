"""Transposed convolutions rewritten as polyphase convolutions (an exact fp32 rewrite).

A ``ConvTranspose1d`` with stride s produces output sample ``q*s + r`` (phase r) from a few taps of the
kernel applied to nearby input frames. Grouping the phases whose taps cover the same input offsets gives
ordinary strided-by-one ``Conv1d``s with s*C_out channels in all, whose outputs interleave into the
upsampled signal. The FLOPs and weights stay (almost) those of the transposed convolution, but the work
becomes plain convolutions, which int8 and bf16 kernels run far faster than transposed ones (measured on
OpenVINO: the transposed convolutions stayed in fp32 gemm and cost a sixth of the int8 decoder's time).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def phase_taps(kernel_size: int, stride: int, padding: int) -> list[dict[int, int]]:
    """For each output phase r: {input offset d: kernel index k} with out[q*s + r] += w[k] * x[q + d]."""
    phases = []
    for r in range(stride):
        a, b = divmod(r + padding, stride)
        taps, i = {}, 0
        while i * stride + b < kernel_size:
            taps[a - i] = i * stride + b
            i += 1
        phases.append(taps)
    return phases


class PolyphaseUpsample(nn.Module):
    """Drop-in replacement for a ``ConvTranspose1d`` whose output length is exactly ``T * stride``."""

    def __init__(self, transposed: nn.ConvTranspose1d):
        super().__init__()
        (stride,), (kernel_size,), (padding,) = transposed.stride, transposed.kernel_size, transposed.padding
        if transposed.output_padding != (0,) or transposed.dilation != (1,) or transposed.groups != 1:
            raise ValueError("only plain transposed convolutions (no output padding, dilation or groups)")
        if kernel_size - 2 * padding != stride:
            raise ValueError(f"kernel {kernel_size}, stride {stride}, padding {padding}: output length is not T * stride")
        weight = transposed.weight.detach()  # [C_in, C_out, K]
        channels_in, channels_out, _ = weight.shape
        bias = transposed.bias.detach() if transposed.bias is not None else torch.zeros(channels_out, dtype=weight.dtype)
        self.stride, self.channels_out = stride, channels_out
        # Consecutive phases that use the same input offsets share one convolution.
        groups: list[tuple[list[int], list[int]]] = []
        for r, taps in enumerate(phase_taps(kernel_size, stride, padding)):
            offsets = sorted(taps)
            if groups and groups[-1][1] == offsets:
                groups[-1][0].append(r)
            else:
                groups.append(([r], offsets))
        self.convs = nn.ModuleList()
        self.pads: list[tuple[int, int]] = []
        taps_by_phase = phase_taps(kernel_size, stride, padding)
        for phases, offsets in groups:
            span = offsets[-1] - offsets[0] + 1
            conv = nn.Conv1d(channels_in, len(phases) * channels_out, span)
            with torch.no_grad():
                conv.weight.zero_()
                for j, r in enumerate(phases):
                    for d, k in taps_by_phase[r].items():
                        conv.weight[j * channels_out : (j + 1) * channels_out, :, d - offsets[0]] = weight[:, :, k].t()
                conv.bias.copy_(bias.repeat(len(phases)))
            self.convs.append(conv)
            self.pads.append((-offsets[0], offsets[-1]))  # out[q] sees x[q + offsets[0]] .. x[q + offsets[-1]]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [conv(F.pad(x, pad)) for conv, pad in zip(self.convs, self.pads)]
        y = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)  # [B, s*C_out, T], phase-major
        batch, _, frames = y.shape
        y = y.reshape(batch, self.stride, self.channels_out, frames).permute(0, 2, 3, 1)
        return y.reshape(batch, self.channels_out, frames * self.stride)
