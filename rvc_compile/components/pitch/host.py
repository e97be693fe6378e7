"""RMVPE's host side, numpy only: RVC's log-mel input and its salience decoding.

The maths follow RVC's ``infer/lib/rmvpe.py`` exactly (``MelSpectrogram`` with the settings ``RMVPE``
gives it, ``to_local_average_cents``, ``decode``):

- mel: STFT with n_fft 1024, a periodic Hann window of 1024, hop 160 (100 frames/s at 16 kHz), frames
  centred by reflect padding 512 samples each side; magnitude sqrt(re^2 + im^2); librosa's mel basis
  (``librosa.filters.mel(sr=16000, n_fft=1024, n_mels=128, fmin=30, fmax=8000, htk=True)``: HTK mel
  scale, Slaney area normalisation) written out here; natural log of the mel energies clamped at 1e-5.
- decoding: per frame the argmax bin, the salience-weighted average of the cents of the 9 bins around
  it (cents = 20 * bin + 1997.379..., zero-padded by 4 bins at both ends), 0 (unvoiced) where the
  largest salience is at most the threshold (RVC's pipeline uses 0.03); f0 = 10 * 2**(cents / 1200) Hz,
  with 10 Hz (zero cents) mapped to 0.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np

from .spec import CLASSES, HOP, MELS, SAMPLE_RATE

N_FFT = 1024
WIN_LENGTH = 1024
FMIN_HZ, FMAX_HZ = 30.0, 8000.0
LOG_FLOOR = 1e-5
THRESHOLD = 0.03  # RVC's pipeline: infer_from_audio(x, thred=0.03)
CENTS_OFFSET = 1997.3794084376191  # cents of bin 0 (relative to 10 Hz): about 31.7 Hz
CENTS_PER_BIN = 20.0
MIN_SAMPLES = N_FFT // 2 + 1  # the centre padding reflects 512 samples: the audio must be longer


def hz_to_mel_htk(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz_htk(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = MELS,
                   fmin: float = FMIN_HZ, fmax: float = FMAX_HZ) -> np.ndarray:
    """librosa's ``filters.mel(..., htk=True)`` (norm "slaney") as float32 [n_mels, n_fft // 2 + 1]:
    triangles between n_mels + 2 points equally spaced on the HTK mel scale, each scaled by
    2 / (its upper - its lower edge in Hz) so that every filter has unit area in Hz."""
    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = mel_to_hz_htk(np.linspace(hz_to_mel_htk(fmin), hz_to_mel_htk(fmax), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


@lru_cache(maxsize=1)
def _basis() -> np.ndarray:
    basis = mel_filterbank()
    basis.flags.writeable = False
    return basis


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WIN_LENGTH) / WIN_LENGTH)  # periodic, as torch.hann_window
    window.flags.writeable = False
    return window


def frames_of(samples: int) -> int:
    """Mel (and f0) frames of ``samples`` of 16 kHz audio: samples // 160 + 1."""
    return samples // HOP + 1


def stft_magnitude(audio: np.ndarray) -> np.ndarray:
    """|STFT| [513, frames_of(len)] as ``torch.stft(center=True, pad_mode="reflect")`` with RVC's settings."""
    audio = np.asarray(audio, dtype=np.float64).reshape(-1)
    if audio.size < MIN_SAMPLES:
        raise ValueError(f"{audio.size} samples; the centred STFT needs at least {MIN_SAMPLES}")
    padded = np.pad(audio, (N_FFT // 2, N_FFT // 2), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    spectrum = np.fft.rfft(frames * _window(), axis=1)
    return np.sqrt(spectrum.real**2 + spectrum.imag**2).T


def log_mel(audio: np.ndarray) -> np.ndarray:
    """RVC's RMVPE input: natural-log mel energies float32 [128, samples // 160 + 1] of 16 kHz audio."""
    mel = _basis().astype(np.float64) @ stft_magnitude(audio)
    return np.log(np.maximum(mel, LOG_FLOOR)).astype(np.float32)


@lru_cache(maxsize=1)
def _cents_mapping() -> np.ndarray:
    mapping = np.pad(CENTS_PER_BIN * np.arange(CLASSES) + CENTS_OFFSET, (4, 4))
    mapping.flags.writeable = False
    return mapping


def local_average_cents(salience: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """RVC's ``to_local_average_cents``: [frames, 360] salience -> cents per frame, 0 where unvoiced."""
    salience = np.asarray(salience)
    if salience.ndim != 2 or salience.shape[1] != CLASSES:
        raise ValueError(f"salience must be [frames, {CLASSES}], got {list(salience.shape)}")
    center = np.argmax(salience, axis=1)
    padded = np.pad(salience, ((0, 0), (4, 4)))
    window = center[:, None] + np.arange(9)[None, :]  # the 9 bins around the peak, in padded coordinates
    rows = np.arange(salience.shape[0])[:, None]
    weights = padded[rows, window]
    with np.errstate(invalid="ignore", divide="ignore"):
        cents = np.sum(weights * _cents_mapping()[window], axis=1) / np.sum(weights, axis=1)
    cents[np.max(padded, axis=1) <= threshold] = 0.0
    return cents


def decode(salience: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """RVC's ``decode``: [frames, 360] salience -> f0 in Hz per frame (float64), 0 where unvoiced."""
    f0 = 10.0 * 2.0 ** (local_average_cents(salience, threshold) / 1200.0)
    f0[f0 == 10.0] = 0.0
    return f0


WINDOW_CONTEXT = 200  # frames (2 s) of context either side of each window of a long input
ALIGN = 32  # the U-Net's five 2x poolings: RVC's mel2hidden pads to a multiple of 32 frames


def windows(frames: int, max_frames: int | None, context: int = WINDOW_CONTEXT) -> list[tuple[int, int, int, int]]:
    """How a salience function that takes at most ``max_frames`` covers ``frames``: (read start, read stop,
    keep start, keep stop) per window, each window reading at least ``context`` frames either side of what
    it keeps (fewer at the ends) from a multiple of 32 frames, the kept spans tiling 0..frames. One window
    when it fits."""
    if max_frames is None or frames <= max_frames:
        return [(0, frames, 0, frames)]
    context = min(context, max(0, (max_frames - ALIGN) // 4))
    step = max(1, max_frames - 2 * context - ALIGN)
    spans, start = [], 0
    while start < frames:
        stop = min(start + step, frames)
        low = max(0, start - context) // ALIGN * ALIGN  # the U-Net pools by 32: windows start where the whole input's pooling does
        spans.append((low, min(frames, stop + context, low + max_frames), start, stop))
        start = stop
    return spans


def windowed(salience_fn: Callable[[np.ndarray], np.ndarray], max_frames: int | None) -> Callable[[np.ndarray], np.ndarray]:
    """``salience_fn`` (mel [1, 128, T] -> [1, T, 360], at most ``max_frames``) over any T: overlapping
    windows with ``WINDOW_CONTEXT`` frames of context, the middle of each kept. RVC runs RMVPE over a
    whole input at once; its receptive field (the U-Net) is local and its BiGRU's memory of a frame 2 s
    away is small, so a window's middle matches the whole-input salience closely, not exactly."""

    def run(mel: np.ndarray) -> np.ndarray:
        frames = mel.shape[-1]
        spans = windows(frames, max_frames)
        if len(spans) == 1:
            return salience_fn(mel)
        out = np.empty((1, frames, CLASSES), dtype=np.float32)
        for low, high, start, stop in spans:
            part = np.asarray(salience_fn(np.ascontiguousarray(mel[..., low:high])), dtype=np.float32).reshape(1, high - low, CLASSES)
            out[:, start:stop] = part[:, start - low:stop - low]
        return out

    return run


def rmvpe_f0(audio16k: np.ndarray, salience_fn: Callable[[np.ndarray], np.ndarray], threshold: float = THRESHOLD) -> np.ndarray:
    """f0 in Hz [len // 160 + 1] of 16 kHz mono audio, RVC's ``RMVPE.infer_from_audio``.

    ``salience_fn`` maps mel [1, 128, T] float32 to salience [1, T, 360] (a compiled runner or the
    eager torch model)."""
    mel = log_mel(audio16k)[None]
    salience = np.asarray(salience_fn(mel), dtype=np.float32).reshape(mel.shape[-1], CLASSES)
    return decode(salience, threshold)
