"""RMVPE in torch: the official ``rmvpe.pt`` layout (RVC's ``E2E(4, 1, (2, 2))``), export-friendly.

Parameter names match the official file exactly (``unet.encoder.layers.0.conv.0.conv.0.weight`` ...,
``cnn.*``, ``fc.0.gru.*``, ``fc.1.*``), so a user's file loads with ``strict=True``. The widths
(``RmvpeSpec``) are read from the file's tensor shapes; the official file is the default spec.

``Rmvpe.forward(mel [1, 128, T]) -> salience [1, T, 360]`` includes RVC's ``mel2hidden``: the frame
axis is padded on the right with zeros to a multiple of 2**levels (32) and the output sliced back to
``T`` frames (``F.pad(mel, (0, n_pad), mode="constant")``, as RVC's ``infer/lib/rmvpe.py`` does since
it dropped the reflect padding, which fails for T < 17). The padding is a gather from the mel with one
zero frame appended, so the graph needs no Pad with a data-dependent amount.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from .spec import CLASSES, MELS, RmvpeSpec


class ConvBlockRes(nn.Module):
    """Two 3x3 conv + BatchNorm + ReLU, plus the input (through a 1x1 conv when the width changes)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, (3, 3), padding=(1, 1), bias=False),
            nn.BatchNorm2d(out_channels, momentum=0.01),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, (3, 3), padding=(1, 1), bias=False),
            nn.BatchNorm2d(out_channels, momentum=0.01),
            nn.ReLU(),
        )
        self.shortcut = nn.Conv2d(in_channels, out_channels, (1, 1)) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + (x if self.shortcut is None else self.shortcut(x))


class ResEncoderBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, blocks: int, pool: bool):
        super().__init__()
        self.conv = nn.ModuleList([ConvBlockRes(in_channels if i == 0 else out_channels, out_channels) for i in range(blocks)])
        self.pool = nn.AvgPool2d(kernel_size=(2, 2)) if pool else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.conv:
            x = block(x)
        return x


class Encoder(nn.Module):
    def __init__(self, spec: RmvpeSpec):
        super().__init__()
        self.bn = nn.BatchNorm2d(1, momentum=0.01)
        widths = [1] + [spec.channels * 2**i for i in range(spec.levels)]
        self.layers = nn.ModuleList([ResEncoderBlock(widths[i], widths[i + 1], spec.blocks, pool=True) for i in range(spec.levels)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        x = self.bn(x)
        for layer in self.layers:
            x = layer(x)
            skips.append(x)
            x = layer.pool(x)
        return x, skips


class Intermediate(nn.Module):
    def __init__(self, spec: RmvpeSpec):
        super().__init__()
        inner = spec.channels * 2 ** (spec.levels - 1)
        self.layers = nn.ModuleList(
            [ResEncoderBlock(inner if i == 0 else 2 * inner, 2 * inner, spec.blocks, pool=False) for i in range(spec.inter_layers)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class ResDecoderBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, blocks: int):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.ConvTranspose2d(in_channels, out_channels, (3, 3), stride=(2, 2), padding=(1, 1), output_padding=(1, 1), bias=False),
            nn.BatchNorm2d(out_channels, momentum=0.01),
            nn.ReLU(),
        )
        self.conv2 = nn.ModuleList([ConvBlockRes(2 * out_channels if i == 0 else out_channels, out_channels) for i in range(blocks)])

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = torch.cat((self.conv1(x), skip), dim=1)
        for block in self.conv2:
            x = block(x)
        return x


class Decoder(nn.Module):
    def __init__(self, spec: RmvpeSpec):
        super().__init__()
        widths = [spec.channels * 2 ** (spec.levels - i) for i in range(spec.levels + 1)]
        self.layers = nn.ModuleList([ResDecoderBlock(widths[i], widths[i + 1], spec.blocks) for i in range(spec.levels)])

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x, skips[-1 - index])
        return x


class DeepUnet(nn.Module):
    def __init__(self, spec: RmvpeSpec):
        super().__init__()
        self.encoder = Encoder(spec)
        self.intermediate = Intermediate(spec)
        self.decoder = Decoder(spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = self.encoder(x)
        return self.decoder(self.intermediate(x), skips)


class BiGRU(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, layers: int):
        super().__init__()
        self.gru = nn.GRU(input_size, hidden_size, num_layers=layers, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[0]


def padding_index(frames: torch.Tensor, padded: torch.Tensor | int) -> torch.Tensor:
    """Indices 0..padded-1 into a sequence of ``frames`` followed by one zero frame: the frames in
    order, then the zero frame (index ``frames``) for every padded position."""
    position = torch.arange(padded, device=frames.device)
    return torch.where(position < frames, position, frames)


class Rmvpe(nn.Module):
    """RVC's E2E network behind its ``mel2hidden``: mel [1, 128, T] -> salience [1, T, 360]."""

    input_names = ["mel"]

    def __init__(self, spec: RmvpeSpec):
        super().__init__()
        self.spec = spec
        self.unet = DeepUnet(spec)
        self.cnn = nn.Conv2d(spec.channels, 3, (3, 3), padding=(1, 1))
        self.fc = nn.Sequential(
            BiGRU(3 * MELS, spec.gru_hidden, spec.gru_layers),
            nn.Linear(2 * spec.gru_hidden, CLASSES),
            nn.Dropout(0.25),
            nn.Sigmoid(),
        )

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        frames = mel.shape[-1]
        multiple = 2**self.spec.levels
        padded = (frames + multiple - 1) // multiple * multiple
        index = padding_index(torch.tensor(frames, device=mel.device) if isinstance(frames, int) else frames, padded)
        with_zero = torch.cat((mel, torch.zeros_like(mel[:, :, :1])), dim=2)
        x = torch.index_select(with_zero, 2, index).transpose(-1, -2).unsqueeze(1)  # [1, 1, T', mels]
        x = self.cnn(self.unet(x)).transpose(1, 2).flatten(-2)  # [1, T', 3 * mels]
        return self.fc(x)[:, :frames]


def build_model(spec: RmvpeSpec, weights: Mapping[str, Any] | None) -> Rmvpe:
    model = Rmvpe(spec)
    if weights is not None:
        model.load_state_dict(dict(weights), strict=True)
    return model.eval().requires_grad_(False)
