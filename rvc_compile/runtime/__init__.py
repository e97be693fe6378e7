"""Load and run compiled artifacts in downstream apps: numpy + the backend's library, never torch.

    voice = rvc_compile.runtime.load("out/artifacts/demo-voice/1.0.0")
    audio = voice.infer(features, f0, speaker=0, noise="zero")   # float32 [T * hop] at voice.sample_rate
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact import verify_or_raise
from ..backends import get_backend
from ..errors import ArtifactError, InputError
from ..inputs import NoiseSpec, graph_feed, make_noise, validate_inputs
from .windows import WindowPlan, run_windowed


class CompiledVoice:
    """A loaded artifact. ``infer`` may be called from several threads at once."""

    def __init__(self, path: Path, manifest: dict[str, Any], runner: Any, load_time_s: float):
        self.path = path
        self.manifest = manifest
        self.runner = runner
        self.load_time_s = load_time_s
        model = manifest["model"]
        self.sample_rate: int = int(model["sample_rate"])
        self.hop_length: int = int(model["hop_length"])
        self.feature_dim: int = int(model["feature_dim"])
        self.has_f0: bool = bool(model["f0"])
        self.inter_channels: int = int(model["inter_channels"])
        self.n_speakers: int = int(model["n_speakers"])
        self.fixed_speaker: int | None = model.get("fixed_speaker")
        self.min_frames: int = int(model["frames"]["min"])
        window = model.get("window")
        try:
            self.window: WindowPlan | None = WindowPlan(**window) if window else None
            if self.window is not None:
                self.window.validate()
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"{path}: manifest.json: unusable model.window {window!r} ({exc})") from None
        # With windows, any length runs (each graph call is at most a window); without, the graph's range.
        self.max_frames: int | None = None if self.window else int(model["frames"]["max"])
        self.input_names: list[str] = [item["name"] for item in manifest["signature"]["inputs"]]
        self._lock = threading.Lock()

    def graph_inputs(
        self, features: np.ndarray, f0: np.ndarray | None, speaker: int, noise: NoiseSpec, labels: dict[str, str] | None = None
    ) -> dict[str, np.ndarray]:
        source = str(self.path)
        features, f0 = validate_inputs(
            features, f0, feature_dim=self.feature_dim, has_f0=self.has_f0, speaker=speaker, n_speakers=self.n_speakers,
            source=source, min_frames=self.min_frames, max_frames=self.max_frames, labels=labels,
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
        return graph_feed(arrays, self.input_names, hop_length=self.hop_length, sample_rate=self.sample_rate)

    def infer(
        self, features: np.ndarray, f0: np.ndarray | None = None, speaker: int = 0, noise: NoiseSpec = "zero",
        labels: dict[str, str] | None = None,
    ) -> np.ndarray:
        """Audio float32 [T * hop] at ``sample_rate`` for features [T, C] and f0 [T] (Hz, 0 = unvoiced).

        ``labels`` optionally maps ``features``/``f0`` to the files they came from, for error messages.
        """
        inputs = self.graph_inputs(features, f0, speaker, noise, labels)
        if self.window is not None:
            return run_windowed(self.runner.run, inputs, self.window, self.hop_length, self.min_frames)
        return np.asarray(self.runner.run(inputs), dtype=np.float32).reshape(-1)

    def run_graph(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Run the graph on prepared inputs (names as in the manifest's signature)."""
        return np.asarray(self.runner.run(inputs), dtype=np.float32).reshape(-1)


def compile_cache_dir(path: Path, manifest: dict[str, Any], override: str | Path | None = None) -> Path | None:
    """Where the backend keeps compiled blobs for this artifact: ``override`` ("none" disables), else the
    artifact's recorded policy (target.compile_cache): the user's build cache, beside the artifact, none."""
    if override is not None:
        return None if str(override) == "none" else Path(override)
    policy = manifest.get("target", {}).get("compile_cache", "none")
    if policy == "user":
        from ..cache import resolve_cache_dir

        return resolve_cache_dir(None) / "compiled" / manifest["backend"]["name"]
    if policy == "beside":
        return path.parent / f"{path.name}.compile-cache"
    return None


def load(
    path: str | Path, *, threads: int | None = None, allow_tampered: bool = False, compile_cache: str | Path | None = None,
) -> CompiledVoice:
    """Load an artifact folder after checking every file's hash (``allow_tampered`` skips the refusal).

    ``compile_cache``: a folder for the backend's compiled blobs, or "none"; by default the artifact's
    recorded policy. The first load compiles and fills it; later loads read the compiled model."""
    path = Path(path)
    start = time.perf_counter()
    manifest = verify_or_raise(path, allow_tampered=allow_tampered)
    backend = get_backend(manifest["backend"]["name"], for_build=False)
    runner = backend.load(path, manifest["backend"], threads=threads, cache_dir=compile_cache_dir(path, manifest, compile_cache))
    return CompiledVoice(path, manifest, runner, time.perf_counter() - start)


__all__ = ["CompiledVoice", "load"]
