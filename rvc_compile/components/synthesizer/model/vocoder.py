"""HiFi-GAN decoders: the NSF variant (pitch models) and the plain one (f0=0 models)."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .source import HarmonicSource

LRELU_SLOPE = 0.1


def _same_padding(kernel_size: int, dilation: int) -> int:
    return (kernel_size * dilation - dilation) // 2


class ResBlock1(nn.Module):
    """``middle[j]``: the width between convs1[j] and convs2[j] (pruned models), else ``channels``."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...], middle: Sequence[int] | None = None):
        super().__init__()
        middle = list(middle) if middle is not None else [channels] * len(dilations)
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, m, kernel_size, dilation=d, padding=_same_padding(kernel_size, d)) for d, m in zip(dilations, middle)
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(m, channels, kernel_size, padding=_same_padding(kernel_size, 1)) for m in middle
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv1, conv2 in zip(self.convs1, self.convs2):
            xt = conv2(F.leaky_relu(conv1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
            x = x + xt
        return x


class ResBlock2(nn.Module):
    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...], middle: Sequence[int] | None = None):
        super().__init__()
        if middle is not None:
            raise ValueError("ResBlock2 has no internal width to prune")
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=_same_padding(kernel_size, d)) for d in dilations[:2]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = x + conv(F.leaky_relu(x, LRELU_SLOPE))
        return x


class HiFiGAN(nn.Module):
    """Latent z [B, inter, T] (+ NSF source [B, 1, T*hop]) -> audio [B, 1, T*hop]."""

    def __init__(
        self,
        initial_channel: int,
        resblock: str,
        resblock_kernel_sizes: tuple[int, ...],
        resblock_dilation_sizes: tuple[tuple[int, ...], ...],
        upsample_rates: tuple[int, ...],
        upsample_initial_channel: int,
        upsample_kernel_sizes: tuple[int, ...],
        gin_channels: int,
        sampling_rate: int | None = None,
        middle_widths: Mapping[int, Sequence[int]] | None = None,
    ):
        """``middle_widths[b]``: ResBlock1 b's middle widths (pruned models)."""
        super().__init__()
        middle_widths = middle_widths or {}
        self.num_kernels = len(resblock_kernel_sizes)
        self.num_upsamples = len(upsample_rates)
        self.nsf = sampling_rate is not None
        hop_length = math.prod(upsample_rates)
        if self.nsf:
            self.m_source = HarmonicSource(sampling_rate, hop_length)
            self.noise_convs = nn.ModuleList()
        self.conv_pre = nn.Conv1d(initial_channel, upsample_initial_channel, 7, 1, padding=3)
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        block = ResBlock1 if resblock == "1" else ResBlock2
        channels = upsample_initial_channel
        for i, (rate, kernel) in enumerate(zip(upsample_rates, upsample_kernel_sizes)):
            channels = upsample_initial_channel // (2 ** (i + 1))
            self.ups.append(
                nn.ConvTranspose1d(2 * channels, channels, kernel, rate, padding=(kernel - rate) // 2)
            )
            if self.nsf:
                if i + 1 < len(upsample_rates):
                    stride = math.prod(upsample_rates[i + 1 :])
                    self.noise_convs.append(nn.Conv1d(1, channels, stride * 2, stride=stride, padding=stride // 2))
                else:
                    self.noise_convs.append(nn.Conv1d(1, channels, 1))
            for k, d in zip(resblock_kernel_sizes, resblock_dilation_sizes):
                self.resblocks.append(block(channels, k, d, middle_widths.get(len(self.resblocks))))
        self.conv_post = nn.Conv1d(channels, 1, 7, 1, padding=3, bias=False)
        self.cond = nn.Conv1d(gin_channels, upsample_initial_channel, 1)

    def forward(
        self,
        z: torch.Tensor,
        g: torch.Tensor,
        source: torch.Tensor | None = None,
        *,
        f0: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        excitation: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``source``: the NSF source [B, 1, T*hop] already made; else ``m_source`` makes it here (inside
        the decoder's scope, so exported nodes are named dec.m_source.*) from f0 [B, T] and noise
        [B, T*hop], or from the host's sine ``excitation`` [B, T*hop]."""
        if source is None and self.nsf and (excitation is not None or f0 is not None):
            source = self.m_source(f0, noise, excitation=excitation)
        x = self.conv_pre(z) + self.cond(g)
        for i in range(self.num_upsamples):
            x = self.ups[i](F.leaky_relu(x, LRELU_SLOPE))
            if source is not None:
                x = x + self.noise_convs[i](source)
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            total = blocks[0](x)
            for block in blocks[1:]:
                total = total + block(x)
            x = total / self.num_kernels
        # The final activation uses PyTorch's default slope (0.01), as HiFi-GAN and RVC do.
        return torch.tanh(self.conv_post(F.leaky_relu(x)))
