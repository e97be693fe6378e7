"""The fp32 eager PyTorch reference: what every compiled artifact is compared against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import Checkpoint, load_checkpoint
from .inputs import NoiseSpec, make_noise, validate_inputs
from .spec import ModelSpec


class ReferenceModel:
    """Runs a checkpoint in eager fp32 PyTorch with the same ``infer`` interface as compiled artifacts."""

    def __init__(self, checkpoint: Checkpoint, threads: int | None = None):
        import torch

        from .model import build_model

        if threads:
            torch.set_num_threads(threads)
        self.checkpoint = checkpoint
        self.spec: ModelSpec = checkpoint.spec
        self.model = build_model(checkpoint.spec, checkpoint.state_dict)
        self.source = str(checkpoint.path)

    @classmethod
    def from_path(cls, path: str | Path, threads: int | None = None, **load_options: Any) -> "ReferenceModel":
        return cls(load_checkpoint(path, **load_options), threads=threads)

    def blocks(self, block: float, context: float, crossfade: float, search: float = 0.01) -> "ReferenceModel":
        """The eager reference of a real-time block artifact with this geometry (seconds): renders only
        the frames after the context, as the ``stream_block`` pass makes the graph do."""
        import copy

        from .model import build_model
        from .spec import with_skip

        other = copy.copy(self)
        frames = {key: int(round(value * 100)) for key, value in (("block", block), ("context", context), ("crossfade", crossfade), ("search", search))}
        other.spec = with_skip(self.spec, frames["context"], source=self.source)
        other.model = build_model(other.spec, self.checkpoint.state_dict)
        other.stream = {**frames, "window": sum(frames.values())}
        return other

    @property
    def sample_rate(self) -> int:
        return self.spec.sampling_rate

    @property
    def has_f0(self) -> bool:
        return self.spec.f0

    def graph_inputs(
        self, features: np.ndarray, f0: np.ndarray | None, speaker: int, noise: NoiseSpec, labels: dict[str, str] | None = None
    ) -> list[np.ndarray]:
        """Validated inputs in the graph's order (see ``model.input_names``), batch dimension added."""
        features, f0 = validate_inputs(
            features, f0, feature_dim=self.spec.feature_dim, has_f0=self.spec.f0,
            speaker=speaker, n_speakers=self.spec.n_speakers, source=self.source, labels=labels,
            sample_rate=self.spec.sampling_rate,
        )
        draws = make_noise(
            noise, features.shape[0], inter_channels=self.spec.inter_channels,
            hop_length=self.spec.hop_length, has_f0=self.spec.f0,
        )
        speaker_array = np.array([speaker], dtype=np.int64)
        if self.spec.f0:
            return [features[None], f0[None], speaker_array, draws["prior_noise"], draws["source_noise"]]
        return [features[None], speaker_array, draws["prior_noise"]]

    def infer(
        self, features: np.ndarray, f0: np.ndarray | None = None, speaker: int = 0, noise: NoiseSpec = "zero",
        labels: dict[str, str] | None = None,
    ) -> np.ndarray:
        """Audio [T*hop] float32 at ``sample_rate``."""
        import torch

        inputs = [torch.from_numpy(np.ascontiguousarray(a)) for a in self.graph_inputs(features, f0, speaker, noise, labels)]
        with torch.inference_mode():
            return self.model(*inputs)[0].numpy()


def flops_per_second(spec: ModelSpec, state_dict: dict[str, Any] | None = None) -> dict[str, float]:
    """FLOPs (2 per multiply-add) for one second of audio, per top-level module and ``total``
    (``measure.flops.synthesizer_flops`` at one second's frames)."""
    from ...measure.flops import synthesizer_flops

    return synthesizer_flops(spec, int(round(spec.frames_per_second)), state_dict)


def parameter_counts(state_dict: dict[str, Any]) -> dict[str, int]:
    """Parameters per top-level module and ``total`` (``measure.flops.parameter_counts``)."""
    from ...measure.flops import parameter_counts

    return parameter_counts(state_dict)
