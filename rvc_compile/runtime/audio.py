"""Writing (and reading) audio: 16-bit PCM WAV through the stdlib, FLAC through soundfile (imported only
for a ``.flac`` output, so the runtime needs it only there)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from ..errors import InputError


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """``.npy`` keeps float32 exactly; ``.wav`` and ``.flac`` are 16-bit PCM mono (samples clipped to
    [-1, 1], scaled by 32767 and rounded). Written atomically: to a temporary file renamed into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    try:
        if path.suffix.lower() == ".npy":
            with open(tmp, "wb") as handle:
                np.save(handle, audio)
        elif path.suffix.lower() == ".wav":
            with wave.open(str(tmp), "wb") as handle:
                handle.setnchannels(1)
                handle.setsampwidth(2)
                handle.setframerate(int(sample_rate))
                handle.writeframes(_pcm16(audio).tobytes())
        elif path.suffix.lower() == ".flac":
            import soundfile

            with open(tmp, "wb") as handle:  # opened here so a missing folder or a refused write is an OSError
                soundfile.write(handle, _pcm16(audio), int(sample_rate), format="FLAC", subtype="PCM_16")
        else:
            raise InputError(f"{path}: output must end in .wav, .flac or .npy")
        tmp.replace(path)
    except OSError as exc:
        if exc.filename is None:  # the wave module's writes name no file: say which output failed
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def _pcm16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2")


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 audio in [-1, 1] and its sample rate (16-bit PCM WAV; channels are averaged)."""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as handle:
            if handle.getsampwidth() != 2:
                raise InputError(f"{path}: only 16-bit PCM WAV is supported")
            rate, channels = handle.getframerate(), handle.getnchannels()
            data = np.frombuffer(handle.readframes(handle.getnframes()), dtype="<i2")
    except (wave.Error, EOFError) as exc:
        raise InputError(f"{path}: not a readable WAV file ({exc})") from None
    except FileNotFoundError:
        raise InputError(f"{path}: no such audio file") from None
    audio = data.reshape(-1, channels).mean(axis=1).astype(np.float32) / 32768.0
    return audio, rate
