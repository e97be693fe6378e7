"""The content encoder's inputs: real speech at 16 kHz (numpy at the top; soundfile and soxr inside).

Example, check, golden and timing inputs are crops of the bundled speech clips (``calibration/data``, see
its README: the CMU ARCTIC and LibriTTS clips; ``LJ001-0006.wav`` there is a DC offset with almost no
signal and is not used), resampled to 16 kHz with soxr and cut deterministically by seed to the asked
number of samples (tiled when the clip is shorter). Where the clips are not installed (a wheel without
the repository's ``calibration`` folder) a seeded synthetic vowel stands in, so ``bench`` still runs.

Calibration (``calibration_cases``) reads the recipe's ``calibration.source``:

- ``generated``: ``count`` crops of ``seconds`` each from ``calibration.speech`` (any rate, any format
  soundfile reads) or the bundled clips, clip ``i % clips`` at a seeded offset (``calibration.seed + i``);
- ``rvc-logs``: the RVC experiment folder's ``1_16k_wavs/*.wav`` (the 16 kHz audio RVC's preprocessing
  wrote and its feature extraction read: the voice's own training data, the best calibration there is),
  at most ``count`` files spread evenly over the sorted names, each cut to its middle ``seconds``;
- ``npz``: ``.npz`` files in ``calibration.path``, each with an ``audio`` array (mono) and optionally a
  ``sample_rate`` (default 16000; others are resampled), chosen and cut as for rvc-logs.

Lengths. A static int8 graph's activation ranges depend on the input's length: the attention
probabilities (one output frame attends with probability 1, 500 frames with a few hundredths), the
group norm over time after the first convolution. Calibrated on 2 s cases only, a random-weight encoder
measured cosine similarity -0.06 at 400 samples and 0.63 at 1 s; with lengths spread, 0.98 and 0.995
(ONNX Runtime, tiny model). So case ``i`` of ``n`` is at most ``lengths(n)[i]`` samples long: geometrically
spread from the graph's shortest input to ``calibration.seconds`` (a static graph: its chunk, always).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ...errors import CalibrationError

SAMPLE_RATE = 16000
BUNDLED_DIR = Path(__file__).resolve().parents[3] / "calibration" / "data"
BUNDLED_CLIPS = ("arctic_a0001.wav", "libritts_6294_86679_000035_000004.wav")
RVC_WAVS = "1_16k_wavs"  # what RVC's preprocessing writes in logs/<experiment>/


def read_audio(path: Path, error: type = CalibrationError) -> np.ndarray:
    """Mono float32 audio at 16 kHz from any file soundfile reads (channels averaged, soxr resampling)."""
    import soundfile

    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except FileNotFoundError:
        raise error(f"{path}: no such audio file") from None
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError for unreadable files
        raise error(f"{path}: not a readable audio file ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})") from None
    return resample(data.mean(axis=1), int(rate))


def resample(audio: np.ndarray, rate: int) -> np.ndarray:
    audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
    if rate == SAMPLE_RATE:
        return audio
    import soxr

    return np.ascontiguousarray(soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ"), dtype=np.float32)


@lru_cache(maxsize=None)
def bundled_speech() -> tuple[np.ndarray, ...]:
    """The bundled clips at 16 kHz (empty when they are not installed)."""
    paths = [BUNDLED_DIR / name for name in BUNDLED_CLIPS]
    if not all(path.is_file() for path in paths):
        return ()
    clips = tuple(read_audio(path) for path in paths)
    for clip in clips:
        clip.setflags(write=False)
    return clips


def synthetic_vowel(samples: int, seed: int) -> np.ndarray:
    """A seeded voiced signal (harmonics of a gliding f0 under formant-like weights, plus breath noise),
    the stand-in where the bundled clips are missing."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / SAMPLE_RATE
    f0 = rng.uniform(100, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    formants = rng.uniform([500, 1200, 2400], [900, 2000, 3200])
    audio = np.zeros(samples)
    for k in range(1, 30):
        weight = sum(np.exp(-((k * f0.mean() - f) / 150.0) ** 2) for f in formants) + 0.02
        audio += weight / k * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    audio += 0.02 * rng.standard_normal(samples)
    return (0.3 * audio / np.abs(audio).max()).astype(np.float32)


def crop(clip: np.ndarray, samples: int, seed: int) -> np.ndarray:
    """``samples`` of ``clip`` from a seeded offset, tiling the clip when it is shorter."""
    rng = np.random.default_rng(seed)
    if clip.size >= samples:
        offset = int(rng.integers(0, clip.size - samples + 1))
        return np.array(clip[offset:offset + samples], dtype=np.float32)
    tiled = np.tile(clip, -(-samples // clip.size) + 1)  # long enough for any offset within the clip
    offset = int(rng.integers(0, clip.size))
    return np.ascontiguousarray(tiled[offset:offset + samples], dtype=np.float32)


def middle(audio: np.ndarray, samples: int) -> np.ndarray:
    """At most ``samples`` of ``audio``: its middle."""
    if audio.size <= samples:
        return audio
    start = (audio.size - samples) // 2
    return audio[start:start + samples]


def fit(audio: np.ndarray, low: int, high: int) -> np.ndarray:
    """``audio`` tiled up to ``low`` samples or cut to ``high``."""
    if audio.size < low:
        audio = np.tile(audio, -(-low // audio.size))[:low]
    return np.ascontiguousarray(audio[:high], dtype=np.float32)


def example_audio(samples: int, seed: int) -> np.ndarray:
    """[1, samples] float32 speech: a seeded crop of a bundled clip (a synthetic vowel without them)."""
    clips = bundled_speech()
    if not clips:
        return synthetic_vowel(samples, seed)[None]
    return crop(clips[seed % len(clips)], samples, seed)[None]


def _spread(paths: list[Path], count: int) -> list[Path]:
    """At most ``count`` of the sorted ``paths``, evenly spread (first and last included)."""
    paths = sorted(paths)
    if len(paths) <= count:
        return paths
    picks = np.linspace(0, len(paths) - 1, count).round().astype(int)
    return [paths[i] for i in sorted(set(picks.tolist()))]


def _npz_audio(path: Path) -> np.ndarray:
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as data:
            if "audio" not in data.files:
                raise CalibrationError(f"{path}: no 'audio' array (a content encoder calibrates on audio: .npz files with an 'audio' key, 16 kHz unless 'sample_rate' says otherwise)")
            audio = np.asarray(data["audio"], dtype=np.float32)
            rate = int(data["sample_rate"]) if "sample_rate" in data.files else SAMPLE_RATE
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise CalibrationError(f"{path}: not a readable .npz file ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})") from None
    if audio.ndim == 2 and 1 in audio.shape:
        audio = audio.reshape(-1)
    if audio.ndim != 1:
        raise CalibrationError(f"{path}: 'audio' must be mono (1-D), got shape {list(audio.shape)}")
    if not 1000 <= rate <= 384000:
        raise CalibrationError(f"{path}: sample_rate {rate} is not an audio rate")
    return resample(audio, rate)


def case_lengths(count: int, low: int, longest: int) -> list[int]:
    """``count`` lengths from ``low`` to ``longest`` samples, geometrically spread (the longest last)."""
    longest = max(low, longest)
    if count == 1:
        return [longest]
    return [int(round(n)) for n in np.geomspace(low, longest, count)]


def calibration_cases(calibration: Any, *, low: int, high: int, log: Callable[[str], None]) -> tuple[list[np.ndarray], str]:
    """The recipe's calibration audio as 16 kHz cases of ``low`` to ``high`` samples (lengths spread, see
    the module docstring), and a description."""
    seconds, count = float(calibration.seconds), int(calibration.count)
    samples = min(max(1, int(round(seconds * SAMPLE_RATE))), high)
    if calibration.source == "generated":
        if calibration.speech:
            clips = [read_audio(Path(path)) for path in calibration.speech]
            what = f"{len(clips)} clip(s) from calibration.speech"
        else:
            clips = list(bundled_speech())
            if not clips:
                raise CalibrationError(f"{BUNDLED_DIR}: the bundled speech clips are not installed; set calibration.speech or use rvc-logs")
            what = f"the bundled speech clips ({', '.join(BUNDLED_CLIPS)})"
        for path, clip in zip(calibration.speech or BUNDLED_CLIPS, clips):
            if clip.size == 0 or not np.isfinite(clip).all():
                raise CalibrationError(f"{path}: empty, or has NaN or Inf samples")
        cases = [crop(clips[i % len(clips)], samples, int(calibration.seed) + i) for i in range(count)]
        description = f"generated: {count} crops of up to {seconds:g} s from {what} (for tests and demos; use rvc-logs for a release)"
    elif calibration.source in ("rvc-logs", "npz"):
        folder = Path(calibration.path)
        if calibration.source == "rvc-logs":
            wavs = folder / RVC_WAVS
            if not wavs.is_dir():
                raise CalibrationError(f"{folder}: no {RVC_WAVS} folder (calibration.source rvc-logs reads the 16 kHz audio RVC's preprocessing writes in logs/<experiment>/)")
            files = _spread(list(wavs.glob("*.wav")), count)
            if not files:
                raise CalibrationError(f"{wavs}: no .wav files")
            cases = []
            for path in files:
                audio = read_audio(path)
                cases.append(middle(audio, samples))
            description = f"rvc-logs {wavs}: {len(files)} utterance(s), at most {seconds:g} s each"
        else:
            if not folder.is_dir():
                raise CalibrationError(f"{folder}: no such folder (calibration.path)")
            files = _spread(list(folder.glob("*.npz")), count)
            if not files:
                raise CalibrationError(f"{folder}: no .npz files")
            cases = [middle(_npz_audio(path), samples) for path in files]
            description = f"npz {folder}: {len(files)} file(s) of audio, at most {seconds:g} s each"
        for path, case in zip(files, cases):
            if case.size == 0 or not np.isfinite(case).all():
                raise CalibrationError(f"{path}: empty, or has NaN or Inf samples")
    else:
        raise CalibrationError(f"calibration.source {calibration.source!r}: int8 needs calibration audio (generated, rvc-logs or npz)")
    cases = [fit(middle(case, length), low, high) for case, length in zip(cases, case_lengths(len(cases), low, samples))]
    description += f"; lengths {cases[0].size} to {cases[-1].size} samples"
    log(f"calibration: {description} ({len(cases)} cases)")
    return cases, description


def cases_sha256(cases: list[np.ndarray]) -> str:
    digest = hashlib.sha256(b"rvc-compile content-encoder calibration\0")
    for case in cases:
        array = np.ascontiguousarray(case, dtype="<f4")
        digest.update(f"{list(array.shape)}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
