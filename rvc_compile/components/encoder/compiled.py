"""A loaded content encoder artifact: what ``rvc_compile.runtime.load`` returns for one. numpy only.

    encoder = rvc_compile.runtime.load("out/artifacts/contentvec-int8/1.0.0")
    features = encoder.encode(audio16k)   # float32 [(n - 400) // 320 + 1, encoder.feature_dim]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ...errors import InputError
from ...runtime.model import CompiledModel


class CompiledEncoder(CompiledModel):
    """16 kHz mono audio -> content features, as RVC's pipeline feeds them to a voice (v1: 256 wide,
    layer 9 through final_proj; v2: 768 wide, layer 12). ``encode`` may be called from several threads."""

    @property
    def feature_dim(self) -> int:
        return int(self.spec.feature_dim)

    @property
    def version(self) -> str:
        return str(self.spec.version)

    @property
    def sample_rate(self) -> int:
        return 16000

    @property
    def hop_length(self) -> int:
        """Input samples per feature frame (320: 50 frames per second)."""
        return int(self.spec.hop)

    @property
    def min_samples(self) -> int:
        """The shortest input: one frame's receptive field (400 samples), or the artifact's own minimum."""
        return max(int(self.spec.receptive_field), int(self.min_frames))

    def frames_of(self, samples: int) -> int:
        """Feature frames of ``samples`` input samples: (samples - 400) // 320 + 1."""
        return int(self.spec.frames_of(samples))

    def encode(self, audio16k: Any) -> np.ndarray:
        """``audio16k``: float samples at 16 kHz, shape [n] (or [1, n]) -> features float32 [frames, feature_dim]."""
        audio = np.asarray(audio16k)
        if audio.ndim == 2 and audio.shape[0] == 1:
            audio = audio[0]
        if audio.ndim != 1:
            raise InputError(f"{self.path}: audio must be mono samples, shape [n] or [1, n]; got {list(audio.shape)}")
        if not (np.issubdtype(audio.dtype, np.floating) or np.issubdtype(audio.dtype, np.integer)):
            raise InputError(f"{self.path}: audio must be numbers, got dtype {audio.dtype}")
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        if not np.isfinite(audio).all():
            raise InputError(f"{self.path}: the audio has NaN or Inf samples")
        if audio.size < self.min_samples:
            raise InputError(f"{self.path}: {audio.size} samples; the content encoder needs at least {self.min_samples} "
                             f"({self.min_samples / 16:.0f} ms at 16 kHz)")
        if self.max_frames is not None and audio.size > self.max_frames:
            raise InputError(f"{self.path}: {audio.size} samples ({audio.size / 16000:.1f} s); this artifact takes at most "
                             f"{self.max_frames} ({self.max_frames / 16000:.1f} s): cut longer audio into segments, as RVC's pipeline does")
        return self.run_case({"audio": audio[None]}).reshape(-1, self.feature_dim)
