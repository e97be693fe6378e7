"""Writing (and reading) audio without extra dependencies: 16-bit PCM WAV through the stdlib."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from ..errors import InputError


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """``.npy`` keeps float32 exactly; ``.wav`` is 16-bit PCM mono. Written atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    try:
        if path.suffix.lower() == ".npy":
            with open(tmp, "wb") as handle:
                np.save(handle, audio)
        elif path.suffix.lower() == ".wav":
            pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2")
            with wave.open(str(tmp), "wb") as handle:
                handle.setnchannels(1)
                handle.setsampwidth(2)
                handle.setframerate(int(sample_rate))
                handle.writeframes(pcm.tobytes())
        else:
            raise InputError(f"{path}: output must end in .wav or .npy")
        tmp.replace(path)
    except OSError as exc:
        if exc.filename is None:  # the wave module's writes name no file: say which output failed
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


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
