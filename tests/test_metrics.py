"""Accuracy metrics and budgets, checked on signals whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from rvc_compile.verify.metrics import check_budget, compare, estimate_f0, latency_stats, smallest_passing_budget, snr_db

SR = 40000


def tone(hz: float, seconds: float = 1.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (amplitude * np.sin(2 * np.pi * hz * t) + 0.5 * amplitude * np.sin(2 * np.pi * 2 * hz * t)).astype(np.float32)


def test_snr_of_known_noise_level():
    rng = np.random.default_rng(0)
    signal = rng.standard_normal(100_000)
    noise = 0.01 * rng.standard_normal(100_000)
    assert snr_db(signal, signal + noise) == pytest.approx(40.0, abs=0.2)
    assert snr_db(signal, signal) == float("inf")


@pytest.mark.parametrize("hz", [80.0, 150.0, 440.0, 900.0])
def test_yin_tracks_the_pitch_of_a_harmonic_tone(hz):
    f0 = estimate_f0(tone(hz), SR)
    voiced = f0[f0 > 0]
    assert voiced.size > 0.9 * f0.size
    assert np.median(np.abs(1200 * np.log2(voiced / hz))) < 5


def test_silence_and_noise_are_unvoiced():
    assert (estimate_f0(np.zeros(SR), SR) == 0).all()
    noise = np.random.default_rng(1).standard_normal(SR)
    assert np.mean(estimate_f0(noise, SR) > 0) < 0.2


def test_compare_identical_is_exact_and_a_detuned_copy_shows_in_cents():
    reference = tone(200.0)
    same = compare(reference, reference.copy(), SR)
    assert same["snr_db"] is None and same["max_abs_error"] == 0 and same["log_mel_db"] == 0 and same["mrstft"] == 0
    detuned = compare(reference, tone(200.0 * 2 ** (20 / 1200)), SR)  # 20 cents sharp
    assert detuned["f0_cents"] == pytest.approx(20, abs=4)
    assert detuned["snr_db"] < 10 and detuned["mrstft"] > 0.05
    failures = check_budget(detuned, {"min_snr_db": 40, "max_f0_cents": 10, "max_log_mel_db": None})
    assert any("snr_db" in f for f in failures) and any("f0_cents" in f for f in failures)


def test_small_perturbation_passes_default_budget_and_length_or_nan_fail():
    reference = tone(150.0)
    noisy = reference + 1e-4 * np.random.default_rng(2).standard_normal(reference.shape).astype(np.float32)
    metrics = compare(reference, noisy, SR)
    budget = {"min_snr_db": 40, "max_log_mel_db": 0.5, "max_mrstft": 0.05, "max_f0_cents": 10}
    assert check_budget(metrics, budget) == [], metrics
    assert check_budget(compare(reference, reference[:-10], SR), budget)[0].startswith("output has -10 samples")
    broken = reference.copy()
    broken[5] = np.nan
    assert "NaN" in check_budget(compare(reference, broken, SR), budget)[0]


def test_smallest_passing_budget_is_the_worst_case():
    cases = [{"snr_db": 50.0, "log_mel_db": 0.1, "mrstft": 0.01, "f0_cents": 2.0, "max_abs_error": 0.1},
             {"snr_db": 45.0, "log_mel_db": 0.3, "mrstft": 0.02, "f0_cents": None, "max_abs_error": 0.2}]
    tightest = smallest_passing_budget(cases)
    assert tightest == {"min_snr_db": 45.0, "max_log_mel_db": 0.3, "max_mrstft": 0.02, "max_f0_cents": 2.0, "max_abs_error": 0.2}
    assert all(check_budget(case, tightest) == [] for case in cases)


def test_latency_stats_units():
    stats = latency_stats([0.1, 0.2, 0.3], audio_seconds=2.0)
    assert stats["p50_ms"] == pytest.approx(200.0) and stats["rtf_p50"] == pytest.approx(0.1) and stats["runs"] == 3
