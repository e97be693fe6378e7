"""The NSF harmonic source: f0 per frame -> an excitation signal per output sample.

Phase is accumulated per frame (RVC's ``SineGen._f02sine``): within a frame the phase advances by
f0/sr per sample, and each frame starts where the previous one ended (wrapped to one period). The
accumulation is the numerically delicate part of the whole model: it runs in float64 here, and compiled
artifacts compute it on the host (``rvc_compile.components.synthesizer.nsf``), outside any low-precision graph.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..nsf import SINE_AMPLITUDE, UNVOICED_NOISE_STD, VOICED_NOISE_STD


def sine_excitation(f0: torch.Tensor, hop_length: int, sampling_rate: int, noise: torch.Tensor) -> torch.Tensor:
    """f0 [B, T] Hz and standard-normal noise [B, T*hop] -> excitation [B, T*hop, 1].

    ``noise`` replaces the training code's ``randn_like``; zeros give the deterministic output.
    """
    batch = f0.shape[0]
    # The phase is computed in float64: an fp32 running sum over frames drifts by ~1e-4 of a period over
    # 30 s, and fp32 phases of several periods lose ~1e-6; both are error against any exact implementation
    # (the runtime computes this source on the host in float64, see rvc_compile/nsf.py).
    f0_64 = f0.double().unsqueeze(-1)  # [B, T, 1]
    steps = torch.arange(1, hop_length + 1, dtype=torch.float64, device=f0.device)
    phase = f0_64 / sampling_rate * steps  # [B, T, hop], in periods
    # Per-frame phase advance, wrapped to [-0.5, 0.5) before the running sum.
    frame_advance = torch.fmod(phase[:, :-1, -1:] + 0.5, 1.0) - 0.5
    frame_start = torch.fmod(torch.cumsum(frame_advance, dim=1), 1.0)
    phase = phase + nn.functional.pad(frame_start, (0, 0, 1, 0))
    phase = phase.reshape(batch, -1, 1)
    sines = (torch.sin(2.0 * math.pi * phase) * SINE_AMPLITUDE).to(f0.dtype)
    f0 = f0.unsqueeze(-1)
    voiced = (f0 > 0).to(f0.dtype).repeat_interleave(hop_length, dim=1)  # [B, T*hop, 1]
    noise_std = voiced * VOICED_NOISE_STD + (1.0 - voiced) * UNVOICED_NOISE_STD
    return sines * voiced + noise_std * noise.unsqueeze(-1)


class HarmonicSource(nn.Module):
    """RVC's ``SourceModuleHnNSF`` with one harmonic: excitation -> linear -> tanh."""

    def __init__(self, sampling_rate: int, hop_length: int):
        super().__init__()
        self.sampling_rate = sampling_rate
        self.hop_length = hop_length
        self.l_linear = nn.Linear(1, 1)

    def forward(self, f0: torch.Tensor | None = None, noise: torch.Tensor | None = None, excitation: torch.Tensor | None = None) -> torch.Tensor:
        """f0 [B, T] and noise [B, T*hop], or the excitation [B, T*hop] made on the host -> source [B, 1, T*hop]."""
        if excitation is None:
            excitation = sine_excitation(f0, self.hop_length, self.sampling_rate, noise).squeeze(-1)
        return torch.tanh(self.l_linear(excitation.unsqueeze(-1))).transpose(1, 2)
