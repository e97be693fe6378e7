"""The NSF harmonic source on the host, in numpy float64: f0 per frame -> excitation per output sample.

The same formulation as ``rvc_compile.components.synthesizer.model.source.sine_excitation`` (RVC's ``SineGen`` with one
harmonic): within a frame the phase advances by f0/sr per sample, and each frame starts where the
previous one ended. Compiled artifacts take this excitation as a graph input (the ``host_source``
pass), so the phase accumulation never runs in bf16/fp16/int8, and a long input processed in windows
keeps one continuous phase.
"""

from __future__ import annotations

import numpy as np

SINE_AMPLITUDE = 0.1
VOICED_NOISE_STD = 0.003
UNVOICED_NOISE_STD = SINE_AMPLITUDE / 3


def sine_excitation(f0: np.ndarray, noise: np.ndarray, *, hop_length: int, sample_rate: int) -> np.ndarray:
    """f0 [T] Hz (0 = unvoiced) and standard-normal noise [T*hop] -> excitation float32 [T*hop]."""
    f0 = np.asarray(f0, dtype=np.float64).reshape(-1, 1)
    steps = np.arange(1, hop_length + 1, dtype=np.float64)
    phase = f0 / sample_rate * steps  # [T, hop], in periods
    frame_advance = np.fmod(phase[:-1, -1:] + 0.5, 1.0) - 0.5
    frame_start = np.fmod(np.cumsum(frame_advance, axis=0), 1.0)
    phase[1:] += frame_start
    sines = np.sin(2.0 * np.pi * phase.reshape(-1)).astype(np.float32) * np.float32(SINE_AMPLITUDE)
    voiced = np.repeat(f0[:, 0] > 0, hop_length)
    noise = np.asarray(noise, dtype=np.float32).reshape(-1)
    noise_std = np.where(voiced, np.float32(VOICED_NOISE_STD), np.float32(UNVOICED_NOISE_STD))
    return np.where(voiced, sines, np.float32(0.0)) + noise_std * noise
