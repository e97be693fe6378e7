"""A loaded synthesizer artifact: ``infer(features, f0, speaker, noise) -> audio``. numpy only."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..components.synthesizer.inputs import USER_INPUTS, NoiseSpec, make_noise, validate_inputs
from ..errors import ArtifactError, InputError
from .model import CompiledModel
from .windows import WindowPlan, run_windowed

GRAPH_INPUTS = (*USER_INPUTS, "excitation")


class CompiledVoice(CompiledModel):
    """A loaded synthesizer artifact. ``infer`` may be called from several threads at once.

    ``manifest``: the artifact's typed manifest (``artifact.schema.Manifest``), or its JSON dict (the
    build's draft), which is parsed and checked here."""

    def __init__(self, path: Path, manifest: Mapping[str, Any], runner: Any, load_time_s: float):
        from ..components import get_component

        super().__init__(path, manifest, runner, load_time_s, component=get_component("synthesizer", for_build=False))
        model = self.manifest.model
        self.sample_rate: int = int(model["sample_rate"])
        self.hop_length: int = int(model["hop_length"])
        self.feature_dim: int = int(model["feature_dim"])
        self.has_f0: bool = bool(model["f0"])
        self.inter_channels: int = int(model["inter_channels"])
        self.n_speakers: int = int(model["n_speakers"])
        self.fixed_speaker: int | None = model.get("fixed_speaker")
        window = model.window
        try:
            self.window: WindowPlan | None = WindowPlan(**window) if window else None
            if self.window is not None:
                self.window.validate()
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"{path}: manifest.json: unusable model.window {window!r} ({exc})") from None
        # With windows, any length runs (each graph call is at most a window); without, the graph's range.
        self.max_frames = None if self.window else model.frames.max
        unknown = [name for name in self.input_names if name not in GRAPH_INPUTS]
        if unknown:
            raise ArtifactError(f"{path}: the manifest's signature names unknown input {unknown[0]!r} (known: {', '.join(GRAPH_INPUTS)})")
        pitched = [name for name in self.input_names if name in ("f0", "source_noise", "excitation")]
        if pitched and not self.has_f0:
            raise ArtifactError(f"{path}: the manifest's signature has pitch input {pitched[0]!r} but model.f0 is false")

    def output_seconds(self, frames: int) -> float:
        return self.spec.rendered_frames(frames) / self.frames_per_second

    @property
    def default_speaker(self) -> int:
        return self.fixed_speaker or 0

    def graph_inputs(
        self, features: np.ndarray, f0: np.ndarray | None, speaker: int, noise: NoiseSpec, labels: dict[str, str] | None = None
    ) -> dict[str, np.ndarray]:
        source = str(self.path)
        features, f0 = validate_inputs(
            features, f0, feature_dim=self.feature_dim, has_f0=self.has_f0, speaker=speaker, n_speakers=self.n_speakers,
            source=source, min_frames=self.min_frames, max_frames=self.max_frames, labels=labels, sample_rate=self.sample_rate,
        )
        if self.fixed_speaker is not None and speaker != self.fixed_speaker:
            raise InputError(f"{source}: this artifact was built for speaker {self.fixed_speaker} only, not {speaker}")
        arrays = {
            "features": features[None],
            "speaker": np.array([speaker], dtype=np.int64),
            **make_noise(noise, features.shape[0], inter_channels=self.inter_channels, hop_length=self.hop_length, has_f0=self.has_f0),
        }
        if f0 is not None:
            arrays["f0"] = f0[None]
        return self.component.graph_feed(self.spec, arrays, self.input_names)

    def infer(
        self, features: np.ndarray, f0: np.ndarray | None = None, speaker: int = 0, noise: NoiseSpec = "zero",
        labels: dict[str, str] | None = None,
    ) -> np.ndarray:
        """Audio float32 [T * hop] at ``sample_rate`` for features [T, C] and f0 [T] (Hz, 0 = unvoiced).

        ``labels`` optionally maps ``features``/``f0`` to the files they came from, for error messages.
        """
        inputs = self.graph_inputs(features, f0, speaker, noise, labels)
        if self.window is not None:
            audio = run_windowed(self.run_graph, inputs, self.window, self.hop_length, self.min_frames)
        else:
            audio = self.run_graph(inputs)
        if not np.isfinite(audio).all():
            # Never hand back silent garbage: inputs far outside what the model saw overflow inside it.
            largest = float(np.abs(inputs["features"]).max())
            raise InputError(f"{labels.get('features', self.path) if labels else self.path}: the output has NaN or Inf for these inputs (features reach {largest:.3g} in magnitude; content features are normally within +-100)")
        return audio

    def run_case(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """A stored case (user-level inputs with batch dimensions) through ``infer``'s whole path."""
        noise = {name: arrays[name] for name in ("prior_noise", "source_noise") if name in arrays}
        f0 = arrays["f0"][0] if "f0" in arrays else None
        return self.infer(arrays["features"][0], f0, speaker=int(arrays["speaker"][0]), noise=noise)
