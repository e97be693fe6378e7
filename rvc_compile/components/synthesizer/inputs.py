"""Inference inputs: reading, validating and the explicit noise draws. numpy only (the runtime uses it).

Convention: ``features`` float32 [T, C] at 100 frames/s (content features already upsampled 2x, C=768
for v2, 256 for v1), ``f0`` float32 [T] in Hz with 0 for unvoiced frames, ``speaker`` an int.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Union

import numpy as np

from ...errors import InputError, first_line

NoiseSpec = Union[str, Mapping[str, np.ndarray]]
_SEED = re.compile(r"^seed:(\d+)$")


def load_array(path: str | Path, what: str) -> np.ndarray:
    """Read a .npy file without ever unpickling objects."""
    path = Path(path)
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: no such {what} file") from None
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy {what} array ({first_line(exc, 120)})") from None
    if not isinstance(array, np.ndarray):
        raise InputError(f"{path}: expected one .npy array for {what}, found an archive")
    return array


def _as_float32(array: np.ndarray, name: str, source: str) -> np.ndarray:
    try:
        array = np.asarray(array)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise InputError(f"{source}: {name} is not an array ({first_line(exc, 120)})") from None
    if array.dtype.kind != "f":
        raise InputError(f"{source}: {name} must be floating point, got dtype {array.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):  # float64 beyond float32's range becomes inf: refused below
        converted = array.astype(np.float32, copy=False)
    if not np.isfinite(converted).all():
        finite_before = array.dtype.itemsize > 4 and np.isfinite(array).all()
        detail = "values beyond float32's range" if finite_before else "NaN or Inf"
        raise InputError(f"{source}: {name} contains {detail}")
    return np.ascontiguousarray(converted)


def validate_inputs(
    features: np.ndarray,
    f0: np.ndarray | None,
    *,
    feature_dim: int,
    has_f0: bool,
    speaker: int = 0,
    n_speakers: int | None = None,
    source: str = "input",
    min_frames: int = 1,
    max_frames: int | None = None,
    labels: Mapping[str, str] | None = None,
    sample_rate: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Check shapes, dtypes and values; return float32 ``features`` [T, C] and ``f0`` [T] (or None).

    With ``sample_rate``, f0 must stay below the Nyquist frequency: a pitch the output cannot hold is a
    mistake in the input (Hz confused with cents or MIDI, a bad pitch tracker), not something to render.

    Errors name ``source`` (the model), or the file an array came from when ``labels`` maps
    ``features``/``f0`` to file names (the CLI does).
    """
    labels = labels or {}
    f0_source = labels.get("f0", source)
    features_source = labels.get("features", source)
    features = _as_float32(features, "features", features_source)
    if features.ndim == 3 and features.shape[0] == 1:
        features = features[0]
    if features.ndim != 2:
        raise InputError(f"{features_source}: features must be [frames, {feature_dim}], got shape {list(features.shape)}")
    frames, width = features.shape
    if width != feature_dim:
        raise InputError(f"{features_source}: features are {width} wide but this model takes {feature_dim} ({'v2' if feature_dim == 768 else 'v1'})")
    if frames < min_frames:
        raise InputError(f"{features_source}: {frames} feature frames; at least {min_frames} needed")
    if max_frames is not None and frames > max_frames:
        raise InputError(f"{features_source}: {frames} feature frames; this model accepts at most {max_frames}")
    if isinstance(speaker, bool) or not isinstance(speaker, (int, np.integer)):
        raise InputError(f"{source}: speaker must be an integer, got {speaker!r}")
    if speaker < 0 or (n_speakers is not None and speaker >= n_speakers):
        raise InputError(f"{source}: speaker {speaker} out of range (this model has {n_speakers} speakers)")
    if not has_f0:
        return features, None
    if f0 is None:
        raise InputError(f"{source}: this model needs f0 (a pitch model); none given")
    f0 = _as_float32(f0, "f0", f0_source)
    if f0.ndim == 2 and f0.shape[0] == 1:
        f0 = f0[0]
    if f0.ndim != 1:
        raise InputError(f"{f0_source}: f0 must be [frames], got shape {list(f0.shape)}")
    if f0.shape[0] != frames:
        raise InputError(f"{f0_source}: f0 has {f0.shape[0]} frames but features have {frames}")
    if (f0 < 0).any():
        raise InputError(f"{f0_source}: f0 has negative values (use 0 Hz for unvoiced frames)")
    if sample_rate is not None and (f0 >= sample_rate / 2).any():
        raise InputError(f"{f0_source}: f0 reaches {float(f0.max()):.6g} Hz, at or above the Nyquist frequency ({sample_rate / 2:g} Hz at {sample_rate} Hz)")
    return features, f0


def parse_noise(text: str) -> str:
    """Check a ``--noise`` value: ``zero`` or ``seed:N``."""
    if text == "zero" or _SEED.match(text):
        return text
    raise InputError(f"--noise: {text!r} is not 'zero' or 'seed:N'")


def make_noise(
    noise: NoiseSpec, frames: int, *, inter_channels: int, hop_length: int, has_f0: bool
) -> dict[str, np.ndarray]:
    """The explicit random draws: ``prior_noise`` [1, inter, T] and, for pitch models, ``source_noise``.

    ``zero`` gives the deterministic output; ``seed:N`` draws standard normals from numpy's PCG64 with
    seed N (the same arrays for the reference and any artifact); a mapping passes arrays through.
    """
    shapes = {"prior_noise": (1, inter_channels, frames)}
    if has_f0:
        shapes["source_noise"] = (1, frames * hop_length)
    if isinstance(noise, Mapping):
        out = {}
        for name, shape in shapes.items():
            if name not in noise:
                raise InputError(f"noise: missing array {name!r}")
            array = _as_float32(noise[name], name, "noise")
            if array.shape != shape:
                raise InputError(f"noise: {name} has shape {list(array.shape)}, expected {list(shape)}")
            out[name] = array
        return out
    if noise == "zero":
        return {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
    match = _SEED.match(str(noise))
    if not match:
        raise InputError(f"noise: {noise!r} is not 'zero' or 'seed:N'")
    rng = np.random.default_rng(int(match.group(1)))
    return {name: rng.standard_normal(shape, dtype=np.float32) for name, shape in shapes.items()}


# Every input a graph can take, given the user-level arrays (features, f0, speaker, prior_noise,
# source_noise, each with its batch dimension): most pass through; ``excitation`` is made on the host.
USER_INPUTS = ("features", "f0", "speaker", "prior_noise", "source_noise")


def graph_feed(arrays: Mapping[str, np.ndarray], names: list[str], *, hop_length: int, sample_rate: int, skip_frames: int = 0) -> dict[str, np.ndarray]:
    """The graph inputs ``names`` from user-level ``arrays``; ``excitation`` is the host-side NSF source.

    ``skip_frames`` (real-time blocks): the graph renders only the frames after them, and its source's
    phase starts there (as the NSF source on the sliced f0 does); the skipped samples are zeros."""
    feed = {}
    for name in names:
        if name == "excitation":
            from .nsf import sine_excitation

            skip = skip_frames * hop_length
            f0, noise = arrays["f0"].reshape(-1)[skip_frames:], arrays["source_noise"].reshape(-1)[skip:]
            excitation = sine_excitation(f0, noise, hop_length=hop_length, sample_rate=sample_rate)
            if skip:
                excitation = np.concatenate([np.zeros(skip, np.float32), excitation])
            feed[name] = excitation[None]
        else:
            feed[name] = arrays[name]
    return feed
