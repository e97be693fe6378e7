"""A loaded RMVPE artifact: ``estimate(audio16k) -> f0`` as RVC's ``RMVPE.infer_from_audio``. numpy only.

    pitch = rvc_compile.runtime.load("out/artifacts/rmvpe-int8-openvino/1.0.0")
    f0 = pitch.estimate(audio16k)             # Hz [len // 160 + 1], 0 where unvoiced

The log-mel and the decoding run on the host (``host``), the network in the artifact's backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ...errors import InputError
from ...runtime.model import CompiledModel
from .host import MIN_SAMPLES, THRESHOLD, rmvpe_f0, windowed
from .spec import CLASSES, FRAMES_PER_SECOND, HOP, MELS


class CompiledPitch(CompiledModel):
    """A loaded RMVPE artifact. ``estimate`` and ``salience`` may be called from several threads at once."""

    def __init__(self, path: Path, manifest: Mapping[str, Any], runner: Any, load_time_s: float, *, component: Any = None):
        super().__init__(path, manifest, runner, load_time_s, component=component)
        self.sample_rate: int = int(self.manifest.model["sample_rate"])
        self.hop_length: int = int(self.manifest.model["hop_length"])

    def salience(self, mel: np.ndarray) -> np.ndarray:
        """The network: log-mel [1, 128, T] float32 -> salience [1, T, 360]."""
        mel = np.asarray(mel, dtype=np.float32)
        if mel.ndim != 3 or mel.shape[:2] != (1, MELS):
            raise InputError(f"{self.path}: mel must be [1, {MELS}, frames], got {list(mel.shape)}")
        frames = mel.shape[2]
        return self.run_case({"mel": np.ascontiguousarray(mel)}).reshape(1, frames, CLASSES)

    def estimate(self, audio16k: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
        """f0 in Hz [len // 160 + 1] (float64, 0 where unvoiced) of 16 kHz mono float audio of any length
        (past the artifact's ``max_frames``: overlapping windows, ``host.windowed``); ``threshold``: the
        salience a frame's peak must exceed to be voiced (RVC's pipeline: 0.03)."""
        audio = np.asarray(audio16k)
        if audio.ndim == 2 and audio.shape[0] == 1:
            audio = audio[0]
        if audio.ndim != 1 or not np.issubdtype(audio.dtype, np.floating):
            raise InputError(f"{self.path}: audio must be a 1-D float array of 16 kHz samples, got {audio.dtype} {list(audio.shape)}")
        if not np.isfinite(audio).all():
            raise InputError(f"{self.path}: the audio has NaN or Inf samples")
        if not np.isfinite(threshold):
            raise InputError(f"{self.path}: threshold {threshold} must be a finite number")
        shortest = max(MIN_SAMPLES, (self.min_frames - 1) * HOP)
        if audio.size < shortest:
            raise InputError(f"{self.path}: {audio.size} samples ({audio.size / self.sample_rate:.3f} s) of audio; this artifact needs at least {shortest} "
                             f"({shortest / self.sample_rate:.3f} s at {self.sample_rate} Hz)")
        # Longer than the graph takes: overlapping windows with 2 s of context (host.windowed).
        return rmvpe_f0(audio, windowed(self.salience, self.max_frames), threshold)
