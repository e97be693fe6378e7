"""Real speech as RMVPE inputs: clips read with soundfile, resampled to 16 kHz with soxr (both imported
on use), turned into RVC's log-mel (``host.log_mel``) and cut into deterministic crops.

The example, check, golden and timing inputs of an RMVPE graph are crops of the bundled clips in
``calibration/data`` (``LJ001-0006.wav`` is left out: a DC offset with no voice on it); int8 calibration
takes crops of the same clips, of the recipe's ``calibration.speech`` files, or of an RVC training
folder's ``1_16k_wavs/*.wav``.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import InputError
from .host import MIN_SAMPLES, log_mel
from .spec import SAMPLE_RATE

BUNDLED_DIR = Path(__file__).resolve().parents[3] / "calibration" / "data"
BUNDLED = ("arctic_a0001.wav", "libritts_6294_86679_000035_000004.wav")


def read_speech(path: str | Path) -> np.ndarray:
    """float32 mono 16 kHz audio of a file soundfile reads (channels averaged, soxr "HQ" resampling)."""
    import soundfile
    import soxr

    path = Path(path)
    if not path.is_file():
        raise InputError.about(path, "no such audio file")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, TypeError, ValueError) as exc:
        raise InputError.about(path, f"not a readable audio file ({type(exc).__name__})") from None
    audio = data.mean(axis=1)
    if rate != SAMPLE_RATE and audio.size:
        audio = soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ")
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    if not np.isfinite(audio).all():
        raise InputError.about(path, "the audio has NaN or Inf samples")
    if audio.size < MIN_SAMPLES:
        raise InputError.about(path, f"{audio.size} samples at 16 kHz; RMVPE needs at least {MIN_SAMPLES}")
    return audio


@lru_cache(maxsize=8)
def _mel_of(path: str, digest: str) -> np.ndarray:
    mel = log_mel(read_speech(path))
    mel.flags.writeable = False
    return mel


def speech_mels(paths: Sequence[str | Path]) -> list[np.ndarray]:
    """Log-mel [128, T] of every file (memoised per content)."""
    from ...hashing import sha256_file

    return [_mel_of(str(path), sha256_file(path)) for path in paths]


def bundled_clips() -> list[Path]:
    clips = [BUNDLED_DIR / name for name in BUNDLED]
    missing = [clip for clip in clips if not clip.is_file()]
    if missing:
        raise InputError.about(missing[0], "the bundled speech clip is missing (an install without the source tree?)")
    return clips


def mel_crop(mels: Sequence[np.ndarray], frames: int, seed: int) -> np.ndarray:
    """``frames`` consecutive mel frames [1, 128, frames] float32: the clips in a seeded order, joined
    end to end (and repeated when shorter), from a seeded start."""
    rng = np.random.default_rng(seed)
    joined = np.concatenate([mels[index] for index in rng.permutation(len(mels))], axis=1)
    start = int(rng.integers(joined.shape[1]))
    index = (start + np.arange(frames)) % joined.shape[1]
    return np.ascontiguousarray(joined[:, index][None], dtype=np.float32)


def feeds_digest(feeds: Sequence[dict[str, np.ndarray]]) -> str:
    digest = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(feed[name]).tobytes())
    return digest.hexdigest()
