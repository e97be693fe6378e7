"""The residual-coupling flow (VITS/RVC ``ResidualCouplingBlock``), run in reverse for inference."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..spec import FLOW_COUPLINGS, FLOW_KERNEL_SIZE, FLOW_LAYERS


class WaveNet(nn.Module):
    """Gated dilated-conv stack with global conditioning (RVC's ``modules.WN``).

    ``gate_widths[i]`` is layer i's gate width (``hidden_channels`` unless pruned): its in-layer gives
    tanh and sigmoid halves of that width, the shared conditioning conv holds 2 * width rows for it,
    and its res/skip conv reads that many channels.
    """

    def __init__(
        self,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        gin_channels: int,
        gate_widths: Sequence[int] | None = None,
    ):
        super().__init__()
        self.hidden_channels = hidden_channels
        self.n_layers = n_layers
        self.gate_widths = list(gate_widths) if gate_widths is not None else [hidden_channels] * n_layers
        self.cond_layer = nn.Conv1d(gin_channels, 2 * sum(self.gate_widths), 1)
        self.in_layers = nn.ModuleList()
        self.res_skip_layers = nn.ModuleList()
        for i in range(n_layers):
            dilation = dilation_rate**i
            padding = (kernel_size * dilation - dilation) // 2
            gate = self.gate_widths[i]
            self.in_layers.append(nn.Conv1d(hidden_channels, 2 * gate, kernel_size, dilation=dilation, padding=padding))
            res_skip_channels = 2 * hidden_channels if i < n_layers - 1 else hidden_channels
            self.res_skip_layers.append(nn.Conv1d(gate, res_skip_channels, 1))

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        hidden = self.hidden_channels
        cond = self.cond_layer(g)
        output = torch.zeros_like(x)
        offset = 0
        for i, (in_layer, res_skip_layer) in enumerate(zip(self.in_layers, self.res_skip_layers)):
            gate = self.gate_widths[i]
            x_in = in_layer(x) + cond[:, offset : offset + 2 * gate]
            offset += 2 * gate
            acts = torch.tanh(x_in[:, :gate]) * torch.sigmoid(x_in[:, gate:])
            res_skip = res_skip_layer(acts)
            if i < self.n_layers - 1:
                x = x + res_skip[:, :hidden]
                output = output + res_skip[:, hidden:]
            else:
                output = output + res_skip
        return output


class MeanOnlyCoupling(nn.Module):
    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        kernel_size: int,
        dilation_rate: int,
        n_layers: int,
        gin_channels: int,
        gate_widths: Sequence[int] | None = None,
    ):
        super().__init__()
        self.half_channels = channels // 2
        self.pre = nn.Conv1d(self.half_channels, hidden_channels, 1)
        self.enc = WaveNet(hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels, gate_widths)
        self.post = nn.Conv1d(hidden_channels, self.half_channels, 1)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The inverse coupling (inference only needs this direction)."""
        x0, x1 = torch.split(x, [self.half_channels, self.half_channels], dim=1)
        mean = self.post(self.enc(self.pre(x0), g))
        return torch.cat([x0, x1 - mean], dim=1)


class Flip(nn.Module):
    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return torch.flip(x, [1])


class CouplingFlow(nn.Module):
    """Four mean-only couplings with channel flips between them; state-dict keys ``flows.{0,2,4,6}``.

    Only the inverse is needed at inference, so every ``forward`` here runs it (module hooks, profilers
    and exporters' name scopes see each coupling).
    ``gate_widths[k]``: the WaveNet gate widths of coupling k (pruned models), else ``hidden_channels``.
    """

    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        gin_channels: int,
        kernel_size: int = FLOW_KERNEL_SIZE,
        dilation_rate: int = 1,
        n_layers: int = FLOW_LAYERS,
        n_flows: int = FLOW_COUPLINGS,
        gate_widths: Sequence[Sequence[int]] | None = None,
    ):
        super().__init__()
        self.flows = nn.ModuleList()
        for k in range(n_flows):
            widths = gate_widths[k] if gate_widths is not None else None
            self.flows.append(MeanOnlyCoupling(channels, hidden_channels, kernel_size, dilation_rate, n_layers, gin_channels, widths))
            self.flows.append(Flip())

    def forward(self, z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The inference direction (the training code's ``reverse=True``): prior sample -> latent."""
        # Called as modules (not a method) so exporters scope every node under its module path.
        for flow in reversed(self.flows):
            z = flow(z, g)
        return z
