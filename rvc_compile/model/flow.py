"""The residual-coupling flow (VITS/RVC ``ResidualCouplingBlock``), run in reverse for inference."""

from __future__ import annotations

import torch
from torch import nn


class WaveNet(nn.Module):
    """Gated dilated-conv stack with global conditioning (RVC's ``modules.WN``)."""

    def __init__(self, hidden_channels: int, kernel_size: int, dilation_rate: int, n_layers: int, gin_channels: int):
        super().__init__()
        self.hidden_channels = hidden_channels
        self.n_layers = n_layers
        self.cond_layer = nn.Conv1d(gin_channels, 2 * hidden_channels * n_layers, 1)
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        for i in range(n_layers):
            dilation = dilation_rate**i
            padding = (kernel_size * dilation - dilation) // 2
            self.in_layers.append(
                nn.Conv1d(hidden_channels, 2 * hidden_channels, kernel_size, dilation=dilation, padding=padding)
            )
            res_skip_channels = 2 * hidden_channels if i < n_layers - 1 else hidden_channels
            self.res_skip_layers.append(nn.Conv1d(hidden_channels, res_skip_channels, 1))

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        hidden = self.hidden_channels
        cond = self.cond_layer(g)
        output = torch.zeros_like(x)
        for i, (in_layer, res_skip_layer) in enumerate(zip(self.in_layers, self.res_skip_layers)):
            x_in = in_layer(x) + cond[:, i * 2 * hidden : (i + 1) * 2 * hidden]
            acts = torch.tanh(x_in[:, :hidden]) * torch.sigmoid(x_in[:, hidden:])
            res_skip = res_skip_layer(acts)
            if i < self.n_layers - 1:
                x = x + res_skip[:, :hidden]
                output = output + res_skip[:, hidden:]
            else:
                output = output + res_skip
        return output


class MeanOnlyCoupling(nn.Module):
    def __init__(self, channels: int, hidden_channels: int, kernel_size: int, dilation_rate: int, n_layers: int, gin_channels: int):
        super().__init__()
        self.half_channels = channels // 2
        self.pre = nn.Conv1d(self.half_channels, hidden_channels, 1)
        self.enc = WaveNet(hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels)
        self.post = nn.Conv1d(hidden_channels, self.half_channels, 1)

    def reverse(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        x0, x1 = torch.split(x, [self.half_channels, self.half_channels], dim=1)
        mean = self.post(self.enc(self.pre(x0), g))
        return torch.cat([x0, x1 - mean], dim=1)


class Flip(nn.Module):
    def reverse(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return torch.flip(x, [1])


class CouplingFlow(nn.Module):
    """Four mean-only couplings with channel flips between them; state-dict keys ``flows.{0,2,4,6}``.

    Only the inverse is needed at inference, so ``forward`` runs it (module hooks and profilers see it).
    """

    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        gin_channels: int,
        kernel_size: int = 5,
        dilation_rate: int = 1,
        n_layers: int = 3,
        n_flows: int = 4,
    ):
        super().__init__()
        self.flows = nn.ModuleList()
        for _ in range(n_flows):
            self.flows.append(MeanOnlyCoupling(channels, hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels))
            self.flows.append(Flip())

    def forward(self, z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The inference direction (the training code's ``reverse=True``): prior sample -> latent."""
        for flow in reversed(self.flows):
            z = flow.reverse(z, g)
        return z
