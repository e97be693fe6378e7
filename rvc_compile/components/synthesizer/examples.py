"""The synthesizer's deterministic example inputs (golden sets, multi-length checks, latency runs). numpy only.

Features are real RVC content features (``rvc_compile/data``) tiled to the wanted length with a small
seeded perturbation, so consecutive frames differ as in speech; f0 is a synthesized phrase contour
(declination, vibrato, unvoiced gaps) in a normal singing/speaking range.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent.parent.parent / "data"


def real_features(feature_dim: int) -> np.ndarray:
    """Real content features at 100 frames/s for the given width (768: v2, 256: v1)."""
    if feature_dim == 256:
        return np.load(DATA / "synthesizer_inputs_v1.npz")["phone"][0].astype(np.float32)
    features = np.load(DATA / "mute_feature768.npy").astype(np.float32)
    return np.repeat(features, 2, axis=0)  # 50 -> 100 frames/s, as RVC's pipeline does


def example_features(feature_dim: int, frames: int, seed: int = 0) -> np.ndarray:
    base = real_features(feature_dim)
    rng = np.random.default_rng(seed)
    start = int(rng.integers(0, base.shape[0]))
    index = (start + np.arange(frames)) % base.shape[0]
    scale = base.std(axis=0, keepdims=True) + 1e-3
    return (base[index] + 0.5 * scale * rng.standard_normal((frames, feature_dim))).astype(np.float32)


def example_f0(frames: int, seed: int = 0, base_hz: float | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    base_hz = base_hz or float(rng.uniform(110.0, 260.0))
    t = np.arange(frames) / 100.0
    contour = base_hz * (1.0 - 0.08 * t / max(t[-1], 1e-3) if frames > 1 else 1.0)
    contour = contour * (1.0 + 0.02 * np.sin(2 * np.pi * 5.5 * t + rng.uniform(0, 6.28)))
    f0 = contour.astype(np.float32)
    # Unvoiced gaps of 60-200 ms roughly every 0.7 s, never at the very start of short inputs.
    position = int(rng.integers(20, 70))
    while position < frames:
        f0[position : position + int(rng.integers(6, 20))] = 0.0
        position += int(rng.integers(50, 90))
    return f0


def example_case(feature_dim: int, frames: int, seed: int = 0) -> dict[str, np.ndarray]:
    return {"features": example_features(feature_dim, frames, seed), "f0": example_f0(frames, seed)}
