"""Audio in and out of the conversion pipeline: any format soundfile reads, any rate, mono or more
channels in; 16 kHz float32 mono with RVC's pre-scale out to the pipeline; WAV/FLAC/NPY written
atomically. numpy, soundfile and soxr (both imported on use).

RVC reads its input through ffmpeg (``infer/lib/audio.py``: decoded, mixed to mono and resampled to
16 kHz float32 in one step), then ``vc_single`` scales it down when it peaks above 0.95. Here soundfile
decodes, channels are averaged, soxr resamples (quality "HQ": a linear-phase filter, flat to 0.1 dB and
at least 96 dB of stop-band rejection) and ``prescale`` is RVC's step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError, first_line

SAMPLE_RATE = 16000  # the content encoder's and pitch estimators' rate
RESAMPLE_QUALITY = "HQ"
INPUT_PEAK = 0.95  # RVC's vc_single: input scaled down to this peak when it exceeds it


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """``(float32 mono [n], sample_rate)`` of any file soundfile reads (WAV, FLAC, OGG, MP3 with
    libsndfile >= 1.1...). More channels are mixed to mono by their mean; integer PCM is scaled to [-1, 1)."""
    import soundfile

    path = Path(path)
    if not path.exists():
        raise InputError.about(path, "no such audio file")
    if path.is_dir():
        raise InputError.about(path, "is a folder, not an audio file")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except OSError as exc:
        raise InputError.about(path, f"cannot be read ({exc.strerror or first_line(exc)})") from None
    except (RuntimeError, ValueError, TypeError) as exc:  # libsndfile: unknown or damaged format
        reason = first_line(exc, default="unknown format").replace(f"Error opening {str(path)!r}: ", "")
        raise InputError.about(path, f"not a readable audio file in a format soundfile supports ({reason})") from None
    audio = _mono(data, path)
    _check_samples(audio, path)
    return audio, int(rate)


def resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """``audio`` (float32 mono) from ``rate_in`` to ``rate_out`` Hz with soxr (quality "HQ"); the same array
    when the rates are equal. Output length: ``n * rate_out / rate_in`` rounded (soxr's one-shot length)."""
    rate_in, rate_out = _rate(rate_in, "rate_in"), _rate(rate_out, "rate_out")
    audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
    if rate_in == rate_out:
        return audio
    import soxr

    return np.ascontiguousarray(soxr.resample(audio, rate_in, rate_out, quality=RESAMPLE_QUALITY), dtype=np.float32)


def prescale(audio: np.ndarray) -> np.ndarray:
    """RVC's ``vc_single`` input step: ``audio /= max|audio| / 0.95`` when that exceeds 1 (a peak above 0.95
    comes down to 0.95; quieter audio is unchanged). Clipped input (full-scale samples) is scaled like any
    other loud input. Done in float32 with the divisor rounded to float32, as numpy 1.x (RVC's) computes
    ``float32_array /= float32_scalar / 0.95``."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if audio.size == 0:
        return audio.copy()
    divisor = np.float32(float(np.abs(audio).max()) / INPUT_PEAK)
    return audio / divisor if divisor > 1 else audio.copy()


def prepare_input(audio: np.ndarray, sample_rate: int, *, label: str = "input audio") -> np.ndarray:
    """What the pipeline converts: ``audio`` (mono [n], or [n, channels]; float, or integer PCM) at
    ``sample_rate`` -> float32 mono [m] at 16 kHz, pre-scaled as RVC does (``prescale``).

    Errors (``InputError`` naming ``label``): no samples, NaN or Inf samples, a bad rate or shape."""
    array = np.asarray(audio)
    if array.ndim not in (1, 2):
        raise InputError.about(label, f"audio must be [samples] or [samples, channels], not {array.ndim}-d")
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float64) / float(2 ** (8 * array.dtype.itemsize - 1))
    elif not np.issubdtype(array.dtype, np.floating):
        raise InputError.about(label, f"audio must be float or integer PCM samples, not {array.dtype}")
    if array.size == 0:
        raise InputError.about(label, "has no audio samples")
    mono = _mono(array if array.ndim == 2 else array[:, None], label)
    _check_samples(mono, label)
    return prescale(resample(mono, _rate(sample_rate, f"{label}: sample rate"), SAMPLE_RATE))


def to_16k(path: str | Path) -> np.ndarray:
    """A file's audio as the pipeline takes it: read, mixed to mono, resampled to 16 kHz, pre-scaled."""
    audio, rate = read_audio(path)
    return prepare_input(audio, rate, label=str(path))


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """``.wav`` and ``.flac``: 16-bit PCM mono; ``.npy``: float32 as is. Atomic (a temporary file renamed
    into place: an interrupted write leaves no partial file). The runtime's writer, which also serves
    ``rvc-compile infer``."""
    from ..runtime.audio import write_audio as write

    write(path, audio, _rate(sample_rate, f"{path}: sample rate"))


def _mono(data: np.ndarray, label: object) -> np.ndarray:
    """[n, channels] -> float32 [n], channels averaged (in float64)."""
    if data.ndim == 1 or data.shape[1] == 1:
        return np.ascontiguousarray(data.reshape(-1), dtype=np.float32)
    if data.shape[1] == 0:
        raise InputError.about(label, "has no channels")
    return data.mean(axis=1, dtype=np.float64).astype(np.float32)


def _check_samples(audio: np.ndarray, label: object) -> None:
    if audio.size == 0:
        raise InputError.about(label, "has no audio samples")
    if not np.isfinite(audio).all():
        raise InputError.about(label, "has NaN or Inf samples")


def _rate(rate: object, what: str) -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) and not (isinstance(rate, float) and rate.is_integer()):
        raise InputError(f"{what}: {rate!r} is not a whole number of Hz")
    if int(rate) <= 0:
        raise InputError(f"{what}: {rate} Hz must be positive")
    return int(rate)
