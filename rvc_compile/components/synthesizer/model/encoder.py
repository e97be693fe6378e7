"""The content encoder (RVC's TextEncoder): phone + pitch embeddings, a relative-position transformer.

Written for graph capture: batch size 1 without padding, so the sequence masks of the training code are
all ones and are left out; the relative-position terms are gathers over an index built from
``arange(T)``, so nothing about the length is baked into the graph.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

# RVC's coarse pitch: mel scale between 50 and 1100 Hz mapped onto the embedding rows 1..255.
F0_MIN_HZ = 50.0
F0_MAX_HZ = 1100.0
F0_MEL_MIN = 1127.0 * math.log(1.0 + F0_MIN_HZ / 700.0)
F0_MEL_MAX = 1127.0 * math.log(1.0 + F0_MAX_HZ / 700.0)
ATTENTION_WINDOW = 10


def coarse_pitch(f0: torch.Tensor) -> torch.Tensor:
    """Hz -> RVC's coarse pitch index (1..255, 1 for unvoiced), as its inference pipeline computes it."""
    f0_mel = 1127.0 * torch.log(1.0 + f0 / 700.0)
    scaled = (f0_mel - F0_MEL_MIN) * 254.0 / (F0_MEL_MAX - F0_MEL_MIN) + 1.0
    f0_mel = torch.where(f0_mel > 0, scaled, f0_mel)
    return torch.round(torch.clamp(f0_mel, 1.0, 255.0)).to(torch.int64)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a [B, C, T] tensor (state-dict keys ``gamma``/``beta``)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)
        x = F.layer_norm(x, (self.gamma.shape[0],), self.gamma, self.beta, self.eps)
        return x.transpose(1, 2)


class RelativeAttention(nn.Module):
    """Multi-head self-attention with shared relative-position embeddings for keys and values."""

    def __init__(self, channels: int, n_heads: int, window_size: int = ATTENTION_WINDOW):
        super().__init__()
        self.n_heads = n_heads
        self.head_channels = channels // n_heads
        self.window_size = window_size
        self.conv_q = nn.Conv1d(channels, channels, 1)
        self.conv_k = nn.Conv1d(channels, channels, 1)
        self.conv_v = nn.Conv1d(channels, channels, 1)
        self.conv_o = nn.Conv1d(channels, channels, 1)
        rel_shape = (1, 2 * window_size + 1, self.head_channels)
        self.emb_rel_k = nn.Parameter(torch.randn(rel_shape) * self.head_channels**-0.5)
        self.emb_rel_v = nn.Parameter(torch.randn(rel_shape) * self.head_channels**-0.5)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, length = x.shape
        return x.reshape(batch, self.n_heads, self.head_channels, length).transpose(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, length = x.shape
        window = self.window_size
        query = self._heads(self.conv_q(x)) / math.sqrt(self.head_channels)  # [B, H, T, D]
        key = self._heads(self.conv_k(x))
        value = self._heads(self.conv_v(x))

        positions = torch.arange(length, device=x.device)
        # Key term: score[i, k] += q_i . emb_rel_k[k - i + w] for |k - i| <= w, else nothing.
        rel_logits = torch.matmul(query, self.emb_rel_k.unsqueeze(0).transpose(-2, -1))  # [B, H, T, 2w+1]
        offset = positions.unsqueeze(0) - positions.unsqueeze(1)  # [T, T]: k - i
        in_band = (offset.abs() <= window).to(x.dtype)
        band_index = (offset.clamp(-window, window) + window).expand(batch, self.n_heads, length, length)
        scores = torch.matmul(query, key.transpose(-2, -1))
        scores = scores + torch.gather(rel_logits, 3, band_index) * in_band
        weights = torch.softmax(scores, dim=-1)
        output = torch.matmul(weights, value)

        # Value term: out_i += sum_r weights[i, i + r] * emb_rel_v[r + w] for |r| <= w inside the sequence.
        relative = torch.arange(-window, window + 1, device=x.device)
        columns = positions.unsqueeze(1) + relative.unsqueeze(0)  # [T, 2w+1]
        inside = ((columns >= 0) & (columns < length)).to(x.dtype)
        column_index = columns.clamp(min=0).clamp(max=length - 1)
        column_index = column_index.expand(batch, self.n_heads, length, 2 * window + 1)
        relative_weights = torch.gather(weights, 3, column_index) * inside
        output = output + torch.matmul(relative_weights, self.emb_rel_v.unsqueeze(0))

        output = output.transpose(2, 3).reshape(batch, channels, length)
        return self.conv_o(output)


class FeedForward(nn.Module):
    def __init__(self, channels: int, filter_channels: int, kernel_size: int):
        super().__init__()
        self.pad = ((kernel_size - 1) // 2, kernel_size // 2)
        self.conv_1 = nn.Conv1d(channels, filter_channels, kernel_size)
        self.conv_2 = nn.Conv1d(filter_channels, channels, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv_1(F.pad(x, self.pad)))
        return self.conv_2(F.pad(x, self.pad))


class AttentionEncoder(nn.Module):
    """``filter_widths[l]``: layer l's feed-forward width (pruned models), else ``filter_channels``."""

    def __init__(
        self,
        hidden_channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int,
        filter_widths: Sequence[int] | None = None,
    ):
        super().__init__()
        filter_widths = list(filter_widths) if filter_widths is not None else [filter_channels] * n_layers
        self.attn_layers = nn.ModuleList(RelativeAttention(hidden_channels, n_heads) for _ in range(n_layers))
        self.norm_layers_1 = nn.ModuleList(ChannelLayerNorm(hidden_channels) for _ in range(n_layers))
        self.ffn_layers = nn.ModuleList(
            FeedForward(hidden_channels, filter_widths[i], kernel_size) for i in range(n_layers)
        )
        self.norm_layers_2 = nn.ModuleList(ChannelLayerNorm(hidden_channels) for _ in range(n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, norm_1, ffn, norm_2 in zip(self.attn_layers, self.norm_layers_1, self.ffn_layers, self.norm_layers_2):
            x = norm_1(x + attn(x))
            x = norm_2(x + ffn(x))
        return x


class ContentEncoder(nn.Module):
    """Features [B, T, C] (+ f0 [B, T] in Hz) -> prior mean and log-scale, each [B, inter, T]."""

    def __init__(
        self,
        feature_dim: int,
        out_channels: int,
        hidden_channels: int,
        filter_channels: int,
        n_heads: int,
        n_layers: int,
        kernel_size: int,
        use_pitch: bool,
        filter_widths: Sequence[int] | None = None,
    ):
        super().__init__()
        self.out_channels = out_channels
        self.hidden_channels = hidden_channels
        self.emb_phone = nn.Linear(feature_dim, hidden_channels)
        self.emb_pitch = nn.Embedding(256, hidden_channels) if use_pitch else None
        self.encoder = AttentionEncoder(hidden_channels, filter_channels, n_heads, n_layers, kernel_size, filter_widths)
        self.proj = nn.Conv1d(hidden_channels, out_channels * 2, 1)

    def forward(self, features: torch.Tensor, f0: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.emb_phone(features)
        if self.emb_pitch is not None:
            x = x + self.emb_pitch(coarse_pitch(f0))
        x = F.leaky_relu(x * math.sqrt(self.hidden_channels), 0.1)
        x = self.encoder(x.transpose(1, 2))
        mean, log_scale = torch.split(self.proj(x), self.out_channels, dim=1)
        return mean, log_scale
