"""RMVPE's shape description (numpy-free, torch-free: the runtime reads it from the manifest)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from ...errors import CheckpointError

MELS = 128  # the network's input: 128 mel bands (host.py computes them)
CLASSES = 360  # salience bins, 20 cents apart (host.py decodes them)
SAMPLE_RATE = 16000
HOP = 160  # 100 frames per second
FRAMES_PER_SECOND = SAMPLE_RATE / HOP


@dataclass(frozen=True)
class RmvpeSpec:
    """The widths and depths of an RMVPE network; the defaults are the official ``rmvpe.pt``
    (RVC's ``E2E(n_blocks=4, n_gru=1, kernel_size=(2, 2))`` with en_de_layers 5, inter_layers 4,
    en_out_channels 16)."""

    channels: int = 16  # en_out_channels: the U-Net's first width (doubled at every level)
    blocks: int = 4  # n_blocks: ConvBlockRes per encoder, intermediate and decoder block
    levels: int = 5  # en_de_layers: encoder and decoder blocks (the frame axis is padded to 2**levels)
    inter_layers: int = 4
    gru_hidden: int = 256  # per direction
    gru_layers: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def frame_multiple(self) -> int:
        return 2**self.levels

    @property
    def official(self) -> bool:
        return self == RmvpeSpec()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> "RmvpeSpec":
        names = {item.name for item in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise CheckpointError(f"{source}: unknown RMVPE spec key {unknown[0]!r}")
        values = {}
        for name in names & set(data):
            value = data[name]
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65_536:
                raise CheckpointError(f"{source}: RMVPE spec {name} must be a positive integer, got {value!r}")
            values[name] = value
        spec = cls(**values)
        if MELS % spec.frame_multiple or spec.levels > 7:
            raise CheckpointError(f"{source}: RMVPE spec levels {spec.levels}: the {MELS} mel bands halve at every level, so at most 7")
        return spec
