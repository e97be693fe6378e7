"""RVC's classic pitch trackers, as its pipeline's ``get_f0`` computes them: 16 kHz audio, 10 ms frames
(window 160), f0 searched in 50-1100 Hz; numpy, with pyworld and parselmouth imported on use.

- ``pm``: Praat's autocorrelation pitch (parselmouth ``to_pitch_ac``: time step 0.01 s, voicing
  threshold 0.6), whose first frame sits half an analysis window in, centred by RVC's zero padding to
  ``p_len`` frames;
- ``harvest``: pyworld harvest (frame period 10 ms), refined by stonemask, then a 3-point median filter
  when ``filter_radius`` > 2 (RVC applies ``scipy.signal.medfilt(f0, 3)`` whatever the radius);
- ``dio``: pyworld dio + stonemask with the same frame period (RVC's training extraction).

Every tracker returns exactly ``p_len`` frames (RVC's pipeline cuts the trackers' n // 160 + 1 frames to
``p_len = len // 160``), float64 Hz, 0 where unvoiced.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ...errors import InputError

SAMPLE_RATE = 16000
WINDOW = 160  # samples per frame: 10 ms
F0_MIN_HZ, F0_MAX_HZ = 50.0, 1100.0
METHODS = ("pm", "harvest", "dio")


def _import(module: str, package: str) -> Any:
    import importlib

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pyworld imports pkg_resources, which warns
            return importlib.import_module(module)
    except ImportError:
        raise InputError(f"{module} is not installed (pip install {package})") from None


def _fit(f0: np.ndarray, p_len: int) -> np.ndarray:
    f0 = np.asarray(f0, dtype=np.float64)[:p_len]
    return np.pad(f0, (0, p_len - f0.size)) if f0.size < p_len else f0


def track(audio16k: np.ndarray, method: str, p_len: int, filter_radius: int = 3) -> np.ndarray:
    """f0 in Hz [p_len] of 16 kHz mono ``audio16k`` by ``method`` (pm, harvest or dio), as RVC computes it."""
    if method not in METHODS:
        raise InputError(f"f0 method {method!r}: expected one of {', '.join(METHODS)} (or rmvpe, a compiled artifact)")
    audio = np.asarray(audio16k, dtype=np.float64).reshape(-1)
    if p_len < 0:
        raise InputError(f"p_len {p_len}: must be 0 or more")
    if not np.isfinite(audio).all():
        raise InputError("the audio has NaN or Inf samples")
    if method == "pm":
        parselmouth = _import("parselmouth", "praat-parselmouth")
        f0 = parselmouth.Sound(audio, SAMPLE_RATE).to_pitch_ac(
            time_step=WINDOW / SAMPLE_RATE, voicing_threshold=0.6, pitch_floor=F0_MIN_HZ, pitch_ceiling=F0_MAX_HZ,
        ).selected_array["frequency"]
        before = (p_len - len(f0) + 1) // 2
        f0 = np.pad(f0, (max(before, 0), max(p_len - len(f0) - before, 0)))
        return _fit(f0, p_len)
    pyworld = _import("pyworld", "pyworld")
    analyse = pyworld.harvest if method == "harvest" else pyworld.dio
    coarse, times = analyse(audio, fs=SAMPLE_RATE, f0_ceil=F0_MAX_HZ, f0_floor=F0_MIN_HZ, frame_period=1000.0 * WINDOW / SAMPLE_RATE)
    f0 = pyworld.stonemask(audio, coarse, times, SAMPLE_RATE)
    if method == "harvest" and filter_radius > 2:
        from scipy.signal import medfilt

        f0 = medfilt(f0, 3)
    return _fit(f0, p_len)


def shift(f0: np.ndarray, semitones: float) -> np.ndarray:
    """f0 transposed by ``semitones`` (RVC's ``f0_up_key``): f0 * 2**(semitones / 12); 0 stays 0."""
    return np.asarray(f0, dtype=np.float64) * 2.0 ** (semitones / 12.0)
