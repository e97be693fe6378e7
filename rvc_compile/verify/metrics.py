"""Accuracy metrics of compiled output against the fp32 reference, accuracy budgets, latency statistics.

numpy only: ``verify`` and the runtime use these without torch. All metrics compare two mono signals at
the same sample rate; every value carries its unit in its name (``_db``, ``_cents``, ``_ms``).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np

MRSTFT_RESOLUTIONS = ((512, 128), (1024, 256), (2048, 512))  # (n_fft, hop)
N_MELS = 80
F0_MIN_HZ, F0_MAX_HZ = 50.0, 1100.0  # RVC's pitch range
YIN_THRESHOLD = 0.15


# -- spectra -------------------------------------------------------------------------------------

def stft_magnitude(audio: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT| [frames, n_fft // 2 + 1] with a Hann window and reflect padding (centered frames)."""
    audio = np.asarray(audio, dtype=np.float64)
    pad = n_fft // 2
    mode = "reflect" if audio.shape[0] > pad else "constant"
    padded = np.pad(audio, (pad, pad), mode=mode)
    frames = 1 + (padded.shape[0] - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    window = np.hanning(n_fft + 1)[:-1]
    return np.abs(np.fft.rfft(padded[index] * window, axis=1))


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int = N_MELS) -> np.ndarray:
    """Triangular HTK-mel filters [n_mels, n_fft // 2 + 1] from 0 Hz to Nyquist."""
    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = _mel_to_hz(np.linspace(0.0, _hz_to_mel(sample_rate / 2.0), n_mels + 2))
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / np.maximum(center - lower, 1e-9)
    falling = (upper - bins[None, :]) / np.maximum(upper - center, 1e-9)
    return np.maximum(0.0, np.minimum(rising, falling))


def log_mel_db(audio: np.ndarray, sample_rate: int, floor_db: float | None = None) -> np.ndarray:
    """Log-mel power spectrogram in dB [n_mels, frames] (n_fft 2048, hop 10 ms)."""
    hop = sample_rate // 100
    n_fft = 2048
    power = stft_magnitude(audio, n_fft, hop) ** 2
    mel = mel_filterbank(sample_rate, n_fft) @ power.T
    db = 10.0 * np.log10(np.maximum(mel, 1e-20))
    if floor_db is not None:
        db = np.maximum(db, floor_db)
    return db


# -- metrics -------------------------------------------------------------------------------------

def snr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-noise ratio of candidate against reference; +inf when they are identical."""
    noise = float(np.sum((np.asarray(candidate, np.float64) - reference) ** 2))
    signal = float(np.sum(np.asarray(reference, np.float64) ** 2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def log_mel_distance_db(reference: np.ndarray, candidate: np.ndarray, sample_rate: int, dynamic_range_db: float = 80.0) -> float:
    """Mean absolute difference of log-mel spectrograms in dB.

    Both are floored at the reference's peak minus ``dynamic_range_db``, so differences far below
    audibility (in near-silence) do not dominate the mean.
    """
    reference_db = log_mel_db(reference, sample_rate)
    floor = float(reference_db.max()) - dynamic_range_db
    candidate_db = log_mel_db(candidate, sample_rate)
    return float(np.mean(np.abs(np.maximum(reference_db, floor) - np.maximum(candidate_db, floor))))


def mrstft_distance(reference: np.ndarray, candidate: np.ndarray, resolutions: Iterable[tuple[int, int]] = MRSTFT_RESOLUTIONS) -> float:
    """Multi-resolution STFT distance: mean over resolutions of spectral convergence + log-magnitude L1 (nats)."""
    scores = []
    eps = 1e-7
    for n_fft, hop in resolutions:
        ref = stft_magnitude(reference, n_fft, hop)
        cand = stft_magnitude(candidate, n_fft, hop)
        convergence = np.linalg.norm(ref - cand) / max(np.linalg.norm(ref), eps)
        # Floor both at the reference's peak minus 80 dB: log differences between bins that hold no
        # signal (a tone's empty bins, silence) are not audible and would otherwise dominate.
        floor = max(float(ref.max(initial=0.0)) * 1e-4, eps)
        log_magnitude = np.mean(np.abs(np.log(np.maximum(ref, floor)) - np.log(np.maximum(cand, floor))))
        scores.append(convergence + log_magnitude)
    return float(np.mean(scores))


def estimate_f0(audio: np.ndarray, sample_rate: int, hop_s: float = 0.01, threshold: float = YIN_THRESHOLD) -> np.ndarray:
    """YIN pitch track in Hz per 10 ms frame, 0 where unvoiced (no clear period in 50-1100 Hz, or silent)."""
    audio = np.asarray(audio, dtype=np.float64)
    min_lag = int(sample_rate / F0_MAX_HZ)
    max_lag = int(math.ceil(sample_rate / F0_MIN_HZ))
    window = max_lag  # one period of the lowest pitch fits in the integration window
    span = window + max_lag + 1
    hop = int(round(sample_rate * hop_s))
    if audio.shape[0] < span:
        audio = np.pad(audio, (0, span - audio.shape[0]))
    count = 1 + (audio.shape[0] - span) // hop
    index = np.arange(span)[None, :] + hop * np.arange(count)[:, None]
    frames = audio[index]  # [count, span]
    n = 1 << int(math.ceil(math.log2(span + window)))
    cross = np.fft.irfft(np.conj(np.fft.rfft(frames[:, :window], n)) * np.fft.rfft(frames, n), n)[:, : max_lag + 1]
    energy = np.cumsum(np.pad(frames**2, ((0, 0), (1, 0))), axis=1)
    lags = np.arange(max_lag + 1)
    window_energy = energy[:, lags + window] - energy[:, lags]  # sum of x_j^2 for j in [tau, tau + window)
    difference = np.maximum(window_energy[:, :1] + window_energy - 2.0 * cross, 0.0)
    cumulative = np.cumsum(difference[:, 1:], axis=1)
    cmndf = np.ones_like(difference)
    cmndf[:, 1:] = difference[:, 1:] * lags[1:] / np.maximum(cumulative, 1e-12)

    f0 = np.zeros(count)
    rms = np.sqrt(window_energy[:, 0] / window)
    loud = rms > max(1e-4, 0.03 * float(rms.max(initial=0.0)))
    for i in np.nonzero(loud)[0]:
        curve = cmndf[i]
        below = np.nonzero(curve[min_lag:max_lag] < threshold)[0]
        if below.size == 0:
            continue
        tau = int(below[0]) + min_lag
        while tau + 1 < max_lag and curve[tau + 1] < curve[tau]:
            tau += 1
        # Parabolic interpolation around the minimum for sub-sample period.
        left, mid, right = curve[tau - 1], curve[tau], curve[tau + 1]
        denominator = left - 2.0 * mid + right
        shift = 0.5 * (left - right) / denominator if denominator > 1e-12 else 0.0
        f0[i] = sample_rate / (tau + float(np.clip(shift, -0.5, 0.5)))
    return f0


def f0_error_cents(reference: np.ndarray, candidate: np.ndarray, sample_rate: int) -> tuple[float | None, float, int]:
    """(mean |pitch difference| in cents on frames voiced in both or None, voicing mismatch fraction, voiced frames)."""
    f0_reference = estimate_f0(reference, sample_rate)
    f0_candidate = estimate_f0(candidate, sample_rate)
    both = (f0_reference > 0) & (f0_candidate > 0)
    mismatch = float(np.mean((f0_reference > 0) != (f0_candidate > 0))) if f0_reference.size else 0.0
    if not both.any():
        return None, mismatch, 0
    cents = 1200.0 * np.abs(np.log2(f0_candidate[both] / f0_reference[both]))
    return float(np.mean(cents)), mismatch, int(both.sum())


def _finite_or_none(value: float) -> float | None:
    """Strict JSON has no infinities: an exact match (SNR = +inf) is reported as None ("exact")."""
    return None if value is None or not math.isfinite(value) else float(value)


def compare(reference: np.ndarray, candidate: np.ndarray, sample_rate: int) -> dict[str, Any]:
    """Every accuracy metric of ``candidate`` against ``reference`` (1-D float arrays)."""
    reference = np.asarray(reference, dtype=np.float64).reshape(-1)
    candidate = np.asarray(candidate, dtype=np.float64).reshape(-1)
    result: dict[str, Any] = {"samples": int(reference.shape[0]), "length_mismatch": int(candidate.shape[0] - reference.shape[0])}
    non_finite = int(np.count_nonzero(~np.isfinite(candidate)))
    result["non_finite"] = non_finite
    if result["length_mismatch"] or non_finite or reference.shape[0] == 0:
        result.update(snr_db=-1e9, log_mel_db=1e9, mrstft=1e9, f0_cents=None, voicing_mismatch=1.0, voiced_frames=0, max_abs_error=1e9)
        return result
    snr = snr_db(reference, candidate)
    cents, mismatch, voiced = f0_error_cents(reference, candidate, sample_rate)
    result.update(
        snr_db=_finite_or_none(snr) if snr > 0 else float(max(snr, -1e9)),
        log_mel_db=log_mel_distance_db(reference, candidate, sample_rate),
        mrstft=mrstft_distance(reference, candidate),
        f0_cents=cents,
        voicing_mismatch=mismatch,
        voiced_frames=voiced,
        max_abs_error=float(np.max(np.abs(candidate - reference))),
    )
    return result


# -- budgets -------------------------------------------------------------------------------------

# budget key -> (metric key, direction): "min" budgets are lower bounds, "max" budgets upper bounds.
BUDGET_KEYS = {
    "min_snr_db": ("snr_db", "min"),
    "max_log_mel_db": ("log_mel_db", "max"),
    "max_mrstft": ("mrstft", "max"),
    "max_f0_cents": ("f0_cents", "max"),
    "max_abs_error": ("max_abs_error", "max"),
}


# Default budgets per target precision, measured against the fp32 PyTorch reference (docs/PRECISION.md
# gives the measurements behind them). A recipe's accuracy section overrides any of them.
DEFAULT_BUDGETS: dict[str, dict[str, float | None]] = {
    "fp32": {"min_snr_db": 40.0, "max_log_mel_db": 0.5, "max_mrstft": 0.05, "max_f0_cents": 10.0, "max_abs_error": None},
    "fp16": {"min_snr_db": 35.0, "max_log_mel_db": 0.75, "max_mrstft": 0.3, "max_f0_cents": 10.0, "max_abs_error": None},
    "bf16": {"min_snr_db": 28.0, "max_log_mel_db": 1.5, "max_mrstft": 0.6, "max_f0_cents": 10.0, "max_abs_error": None},
    "int8": {"min_snr_db": 27.0, "max_log_mel_db": 2.0, "max_mrstft": 0.5, "max_f0_cents": 20.0, "max_abs_error": None},
}
# precision: auto takes the fp16 budget whichever precision wins: as close to the reference as an fp16
# artifact, so "auto" never trades away more accuracy than fp16 would.
DEFAULT_BUDGETS["auto"] = dict(DEFAULT_BUDGETS["fp16"])


def check_budget(metrics: dict[str, Any], budget: dict[str, Any], *, keys: Mapping[str, tuple[str, str]] | None = None) -> list[str]:
    """Every way ``metrics`` break ``budget`` (an empty list when they hold). None budgets are unchecked.

    ``keys``: the component's budget keys (``Component.BUDGET_KEYS``); the synthesizer's by default."""
    failures = []
    if metrics.get("length_mismatch"):
        failures.append(f"output has {metrics['length_mismatch']:+d} samples against the reference")
    if metrics.get("non_finite"):
        failures.append(f"output has {metrics['non_finite']} NaN/Inf samples")
    if failures:
        return failures
    for key, (metric, direction) in (BUDGET_KEYS if keys is None else keys).items():
        limit = budget.get(key)
        value = metrics.get(metric)
        if limit is None:
            continue
        if metric == "snr_db" and value is None:
            continue  # identical to the reference
        if value is None:
            continue  # e.g. no voiced frames: nothing to measure F0 error on
        if direction == "min" and value < limit:
            failures.append(f"{metric} {value:.4g} < {key} {limit}")
        if direction == "max" and value > limit:
            failures.append(f"{metric} {value:.4g} > {key} {limit}")
    return failures


def smallest_passing_budget(cases: list[dict[str, Any]], *, keys: Mapping[str, tuple[str, str]] | None = None) -> dict[str, float | None]:
    """The tightest budget every case would have passed (what Polygraphy calls the required tolerance)."""
    budget: dict[str, float | None] = {}
    for key, (metric, direction) in (BUDGET_KEYS if keys is None else keys).items():
        values = [case.get(metric) for case in cases]
        if metric == "snr_db":
            finite = [v for v in values if v is not None]
            budget[key] = min(finite) if finite else None  # None: every case identical
            continue
        values = [v for v in values if v is not None]
        budget[key] = (min(values) if direction == "min" else max(values)) if values else None
    return budget


# -- latency -------------------------------------------------------------------------------------

def latency_stats(times_s: Iterable[float], audio_seconds: float) -> dict[str, Any]:
    """Latency of repeated calls: the one summary of build reports, ``verify`` and ``bench``.

    ``runs``; ``min_ms``, ``p50_ms``, ``p90_ms``, ``p99_ms``, ``max_ms`` and ``mean_ms`` in milliseconds;
    ``rtf_p50``, ``rtf_p90``, ``rtf_p99``: real-time factors (compute time / ``audio_seconds`` of audio per
    call; per chunk in streaming). Percentiles interpolate linearly between runs (numpy's default).
    """
    times = np.asarray(list(times_s), dtype=np.float64)
    if times.size == 0:
        raise ValueError("latency_stats: no timed runs")
    if not audio_seconds > 0:
        raise ValueError(f"latency_stats: audio_seconds {audio_seconds} must be positive")
    p50, p90, p99 = (float(np.percentile(times, q)) for q in (50, 90, 99))
    return {
        "runs": int(times.size),
        "min_ms": float(times.min()) * 1e3,
        "p50_ms": p50 * 1e3,
        "p90_ms": p90 * 1e3,
        "p99_ms": p99 * 1e3,
        "max_ms": float(times.max()) * 1e3,
        "mean_ms": float(times.mean()) * 1e3,
        "rtf_p50": p50 / audio_seconds,
        "rtf_p90": p90 / audio_seconds,
        "rtf_p99": p99 / audio_seconds,
    }
