"""Calibration inputs for int8 quantization: (features, f0) cases from three sources, cached by content.

A calibration set is a list of cases in rvc-compile's input convention (rvc_compile/inputs.py):
``features`` float32 [T, C] at 100 frames/s (C = 768 for v2, 256 for v1) and, for pitch models only,
``f0`` float32 [T] in Hz with 0 for unvoiced frames. The recipe's ``calibration.source`` picks where
the cases come from:

- ``rvc-logs``: the experiment folder RVC's training writes (``logs/<name>/``). Content features are
  ``3_feature768/NAME.npy`` (v2) or ``3_feature256/NAME.npy`` (v1) at 50 frames/s, repeated 2x to 100
  frames/s as RVC's training loader and inference pipeline do; pitch is ``2b-f0nsf/NAME.wav.npy`` in Hz
  at 100 frames/s. This is the data the voice was trained on: the best calibration there is.
- ``npz``: a folder of ``.npz`` files, each with ``features`` [T, C] at 100 frames/s and ``f0`` [T].
- ``generated``: synthesized cases, FOR TESTS AND DEMOS ONLY. Pitch is tracked from real speech clips
  (pyworld harvest or dio + stonemask, or Praat via parselmouth, at 100 frames/s) and/or synthesized
  phrase contours; features are drawn with the statistics of real RVC content features. They exercise
  the quantizer with plausible ranges, but they are not the user's voice data: an int8 model
  calibrated on them is for trying the pipeline out, never for release. Use rvc-logs or npz for that.

Every source gives at most ``count`` cases of at most ``seconds`` each, chosen deterministically.
With ``held_out`` (distillation, ``rvc-compile prune``), ``load_calibration_split`` gives two sets from
one source: a file source keeps ``held_out`` files, spread over the sorted list, for evaluation only and
trains on the others; the generator draws held-out cases from seeds ``HELD_OUT_SEED_OFFSET`` apart.
Problems are one-line ``CalibrationError``s naming the file, folder or recipe key (exit 2). With a
cache folder, the finished set is an entry of the build cache (``cache.store.Store``, stage
``calibration``: one ``calibration.npz``), whose key hashes everything the set depends on: the source
kind and its parameters, the content of every file read, the rvc-compile and library versions and the
model's feature width. A later load with nothing changed reads it back after the store re-hashed it
and the set's own content hash matched; an entry that fails either check is discarded and rebuilt.
``rvc-compile cache ls/du/prune/clear`` see and remove these entries like every other.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..artifact.manifest import sha256_file
from ..errors import CalibrationError

if TYPE_CHECKING:  # pragma: no cover
    from ..cache.store import StageKey
    from ..recipe.schema import Calibration
    from ..components.synthesizer.spec import ModelSpec

FRAMES_PER_SECOND = 100
# RVC's files for one utterance of N samples at 16 kHz disagree by a few frames: HuBERT gives
# floor((N - 400) / 320) + 1 frames at 50/s (doubled), the pitch trackers N // 160 + 1 at 100/s, so
# f0 runs up to 4 frames longer. RVC's training loader cuts both to the shorter one; we do the same
# within this tolerance and refuse anything further apart (another utterance, another rate).
ALIGN_TOLERANCE_FRAMES = 5
F0_FLOOR_HZ, F0_CEIL_HZ = 50.0, 1100.0  # the range RVC's pitch extraction searches
PITCH_RATE = 16000  # RVC tracks pitch on 16 kHz audio (hop 160: 100 frames/s); so do we
MIN_VOICED_FRACTION = 0.2  # below this a speech clip gives too little pitch to calibrate with
CACHE_FORMAT = 1  # the layout of calibration.npz; part of the key
CACHE_STAGE = "calibration"
CACHE_FILE = "calibration.npz"
HELD_OUT_SEED_OFFSET = 10_000  # generated held-out cases: seeds this far from the training cases'

PACKAGE_DATA = Path(__file__).resolve().parent.parent / "data"
# The bundled speech clips (sources and licences in calibration/data/README.md). LJ001-0006.wav in
# that folder is not used: its copy carries a large DC offset and almost no signal, and no pitch
# tracker finds voice in it.
BUNDLED_SPEECH_DIR = Path(__file__).resolve().parent.parent.parent / "calibration" / "data"
BUNDLED_SPEECH = ("arctic_a0001.wav", "libritts_6294_86679_000035_000004.wav")
_VERSION_OF_WIDTH = {256: "v1", 768: "v2"}


def _version(width: int) -> str:
    return _VERSION_OF_WIDTH.get(width, "neither v1 nor v2")


# -- the set -------------------------------------------------------------------------------------

def content_sha256(cases: list[dict[str, np.ndarray]]) -> str:
    """sha256 over every case's arrays (name, shape, little-endian float32 bytes), in order."""
    digest = hashlib.sha256(b"rvc-compile calibration set\0")
    for case in cases:
        for name in sorted(case):
            array = np.ascontiguousarray(case[name], dtype="<f4")
            digest.update(f"{name}{list(array.shape)}\0".encode())
            digest.update(array.tobytes())
        digest.update(b"\1")
    return digest.hexdigest()


@dataclass
class CalibrationSet:
    """Calibration cases for one model: ``features`` [T, C] float32 at 100 frames/s, ``f0`` [T] (pitch models)."""

    cases: list[dict[str, np.ndarray]]
    sha256: str  # content hash of every case (content_sha256): stable across runs and machines
    source: str  # one line: where the cases came from
    feature_dim: int
    has_f0: bool
    names: list[str] = field(default_factory=list)  # where each case came from
    cache_hit: bool = False
    cache_path: Path | None = None

    def check_matches(self, spec: "ModelSpec") -> None:
        """Refuse a set built for another feature width or pitch flag than ``spec``'s."""
        if self.feature_dim != spec.feature_dim:
            raise CalibrationError(
                f"calibration set ({self.source}): features are {self.feature_dim} wide ({_version(self.feature_dim)}) "
                f"but the model is {spec.version} and takes {spec.feature_dim}-wide features"
            )
        if self.has_f0 != spec.f0:
            raise CalibrationError(
                f"calibration set ({self.source}): {'has' if self.has_f0 else 'has no'} f0 but the model "
                f"{'has no pitch input' if self.has_f0 else 'is a pitch model'}"
            )

    def describe(self) -> dict[str, Any]:
        """Counts, lengths, voicing, f0 range and feature statistics, for reports and ``calibration inspect``."""
        frames = np.array([case["features"].shape[0] for case in self.cases])
        # Per-dimension sums case by case: a large set never needs one float64 copy of everything.
        total, total_sq = np.zeros(self.feature_dim), np.zeros(self.feature_dim)
        low, high = math.inf, -math.inf
        for case in self.cases:
            features = case["features"].astype(np.float64)
            total += features.sum(axis=0)
            total_sq += (features**2).sum(axis=0)
            low, high = min(low, float(features.min())), max(high, float(features.max()))
        count = float(frames.sum())
        dim_mean = total / count
        dim_std = np.sqrt(np.maximum(total_sq / count - dim_mean**2, 0.0))
        overall_mean = float(dim_mean.mean())
        overall_std = math.sqrt(max(float(total_sq.sum()) / (count * self.feature_dim) - overall_mean**2, 0.0))
        description: dict[str, Any] = {
            "source": self.source,
            "sha256": self.sha256,
            "cache_hit": self.cache_hit,
            "count": len(self.cases),
            "frames_per_second": FRAMES_PER_SECOND,
            "total_seconds": round(float(frames.sum()) / FRAMES_PER_SECOND, 2),
            "case_seconds": {"min": round(float(frames.min()) / FRAMES_PER_SECOND, 2), "max": round(float(frames.max()) / FRAMES_PER_SECOND, 2)},
            "feature_dim": self.feature_dim,
            "features": {
                "mean": round(overall_mean, 4),
                "std": round(overall_std, 4),
                "dim_std_min": round(float(dim_std.min()), 4),
                "dim_std_max": round(float(dim_std.max()), 4),
                "min": round(low, 4),
                "max": round(high, 4),
            },
        }
        if self.has_f0:
            f0 = np.concatenate([case["f0"] for case in self.cases])
            voiced = f0[f0 > 0]
            description["voiced_fraction"] = round(float(voiced.size) / max(f0.size, 1), 3)
            description["f0_hz"] = None if not voiced.size else {
                "min": round(float(voiced.min()), 1),
                "p5": round(float(np.percentile(voiced, 5)), 1),
                "median": round(float(np.median(voiced)), 1),
                "p95": round(float(np.percentile(voiced, 95)), 1),
                "max": round(float(voiced.max()), 1),
            }
        return description


def format_description(description: dict[str, Any]) -> str:
    """``describe()`` as a few readable lines."""
    features = description["features"]
    lines = [
        f"source:     {description['source']}",
        f"sha256:     {description['sha256']}{'  (from cache)' if description['cache_hit'] else ''}",
        f"cases:      {description['count']}, {description['total_seconds']:g} s in all "
        f"({description['case_seconds']['min']:g}-{description['case_seconds']['max']:g} s each, {description['frames_per_second']} frames/s)",
        f"features:   {description['feature_dim']} wide, mean {features['mean']:g}, std {features['std']:g} "
        f"(per dimension {features['dim_std_min']:g}-{features['dim_std_max']:g}), range {features['min']:g} to {features['max']:g}",
    ]
    if "voiced_fraction" in description:
        f0 = description["f0_hz"]
        spread = "no voiced frames" if f0 is None else (
            f"{f0['min']:g}-{f0['max']:g} Hz (5-95%: {f0['p5']:g}-{f0['p95']:g} Hz, median {f0['median']:g} Hz)"
        )
        lines.append(f"f0:         {description['voiced_fraction']:.0%} voiced, {spread}")
    return "\n".join(lines)


# -- reading and checking arrays -----------------------------------------------------------------

def _load_failure(path: Path, exc: BaseException, what: str) -> CalibrationError:
    message = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
    if "allow_pickle" in message:
        # numpy says allow_pickle both for object arrays and for any file that is not .npy/.npz.
        try:
            with open(path, "rb") as handle:
                pickled = handle.read(1) == b"\x80"
        except OSError:
            pickled = False
        if pickled or "Object arrays" in message:
            return CalibrationError(f"{path}: holds pickled Python objects; refused (calibration files must be plain numeric arrays, never pickles)")
        return CalibrationError(f"{path}: not a .npy or .npz {what} file")
    return CalibrationError(f"{path}: not a readable {what} file ({message})")


def _read_npy(path: Path, what: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CalibrationError(f"{path}: no such {what} file") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _load_failure(path, exc, what) from None
    if not isinstance(array, np.ndarray):
        array.close()
        raise CalibrationError(f"{path}: expected one .npy {what} array, found an .npz archive")
    return array


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _load_failure(path, exc, "calibration .npz") from None
    if isinstance(data, np.ndarray):
        raise CalibrationError(f"{path}: a single .npy array, not an .npz archive with features and f0")
    try:
        with data:
            return {name: data[name] for name in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise _load_failure(path, exc, "calibration .npz") from None


def _check_features(array: np.ndarray, label: Any, feature_dim: int) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind != "f":
        raise CalibrationError(f"{label}: features must be floating point, got dtype {array.dtype}")
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise CalibrationError(f"{label}: features must be [frames, {feature_dim}], got shape {list(array.shape)}")
    width = array.shape[1]
    if width != feature_dim:
        raise CalibrationError(
            f"{label}: features are {width} wide ({_version(width)}) but the model is {_version(feature_dim)} "
            f"and takes {feature_dim}-wide features"
        )
    if array.shape[0] == 0:
        raise CalibrationError(f"{label}: no feature frames")
    if not np.isfinite(array).all():
        raise CalibrationError(f"{label}: features contain NaN or Inf")
    return np.ascontiguousarray(array, dtype=np.float32)


def _check_f0(array: np.ndarray, label: Any) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind not in "fiu":
        raise CalibrationError(f"{label}: f0 must be numbers in Hz, got dtype {array.dtype}")
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 1:
        raise CalibrationError(f"{label}: f0 must be [frames], got shape {list(array.shape)}")
    if array.shape[0] == 0:
        raise CalibrationError(f"{label}: no f0 frames")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise CalibrationError(f"{label}: f0 contains NaN or Inf")
    if (array < 0).any():
        raise CalibrationError(f"{label}: f0 has negative values (Hz, with 0 for unvoiced frames)")
    return array.astype(np.float32)


def _align(features: np.ndarray, f0: np.ndarray, feature_label: Any, f0_label: Any, *, doubled: bool) -> tuple[np.ndarray, np.ndarray]:
    """Cut features and f0 to the shorter, as RVC's loader does; refuse lengths too far apart to be one utterance."""
    n_features, n_f0 = features.shape[0], f0.shape[0]
    if abs(n_features - n_f0) <= ALIGN_TOLERANCE_FRAMES:
        n = min(n_features, n_f0)
        return features[:n], f0[:n]
    slack = max(2 * ALIGN_TOLERANCE_FRAMES, 0.02 * n_f0)
    counted = f"{n_features} feature frames{' (50 frames/s, doubled)' if doubled else ''} but {n_f0} f0 frames in {f0_label}"
    if abs(2 * n_features - n_f0) <= slack:
        hint = ("the features look like 25 frames/s" if doubled else
                "the features look like 50 frames/s (RVC's raw content features); repeat each frame twice "
                "(numpy.repeat(features, 2, axis=0)) to get the 100 frames/s expected")
    elif abs(n_features - 2 * n_f0) <= slack:
        hint = ("the features look already upsampled to 100 frames/s (RVC writes 50 frames/s to 3_feature*/), or the f0 is at 50 frames/s"
                if doubled else "the f0 looks like 50 frames/s (or the features were upsampled twice); both must be at 100 frames/s")
    else:
        hint = f"more than the {ALIGN_TOLERANCE_FRAMES}-frame tolerance of RVC's alignment apart; are they of the same utterance?"
    raise CalibrationError(f"{feature_label}: {counted}: {hint}")


def _cut(case: dict[str, np.ndarray], max_frames: int) -> dict[str, np.ndarray]:
    """Keep the middle ``max_frames`` of a longer case (deterministic; the middle of an utterance is rarely silence)."""
    frames = case["features"].shape[0]
    if frames <= max_frames:
        return case
    start = (frames - max_frames) // 2
    return {name: np.ascontiguousarray(array[start : start + max_frames]) for name, array in case.items()}


def _select(names: list[str], count: int) -> list[str]:
    """Up to ``count`` names spread evenly over the sorted list (RVC numbers slices by source file, so this spans the recordings)."""
    if len(names) <= count:
        return list(names)
    return [names[i] for i in np.linspace(0, len(names) - 1, count).round().astype(int)]


def _split(names: list[str], split: tuple[str, int] | None, where: Path, what: str) -> list[str]:
    """The names of one part of a held-out split: ``split`` is ("train" | "held_out", how many are held out)."""
    if split is None:
        return names
    part, held = split
    if len(names) <= held:
        raise CalibrationError(
            f"{where}: {len(names)} {what}; holding {held} out for evaluation (calibration.held_out) leaves none to train on"
        )
    held_names = _select(names, held)
    if part == "held_out":
        return held_names
    held_set = set(held_names)
    return [name for name in names if name not in held_set]


# -- sources -------------------------------------------------------------------------------------

@dataclass
class _Plan:
    """What a source will read (hashed into the cache key before anything is parsed) and how to build the cases."""

    kind: str
    params: dict[str, Any]
    inputs: list[tuple[str, Path]]
    description: str
    build: Callable[[], tuple[list[dict[str, np.ndarray]], list[str]]]
    libraries: tuple[str, ...] = ()


def _split_text(split: tuple[str, int] | None) -> str:
    if split is None:
        return ""
    part, held = split
    return " (held out for evaluation)" if part == "held_out" else f" ({held} more held out for evaluation)"


def _max_frames(config: "Calibration") -> int:
    return max(1, int(round(config.seconds * FRAMES_PER_SECOND)))


def _plan_rvc_logs(config: "Calibration", spec: "ModelSpec", split: tuple[str, int] | None = None) -> _Plan:
    folder = Path(config.path)
    if not folder.is_dir():
        raise CalibrationError(f"{folder}: no such RVC experiment folder (calibration.path)")
    width = spec.feature_dim
    feature_dir = folder / f"3_feature{width}"
    if not feature_dir.is_dir():
        other = 256 if width == 768 else 768
        if (folder / f"3_feature{other}").is_dir():
            raise CalibrationError(
                f"{folder / f'3_feature{other}'}: holds {other}-wide ({_version(other)}) content features, but the model is "
                f"{spec.version} and needs {width}-wide ones in {feature_dir.name}/; extract {spec.version} features for this dataset"
            )
        raise CalibrationError(
            f"{folder}: no {feature_dir.name}/ folder; not an RVC experiment folder (RVC writes content features to "
            f"3_feature768/ (v2) or 3_feature256/ (v1) and pitch to 2b-f0nsf/)"
        )
    stems = sorted(p.name[: -len(".npy")] for p in feature_dir.iterdir() if p.name.endswith(".npy") and p.is_file())
    if not stems:
        raise CalibrationError(f"{feature_dir}: no .npy feature files; the calibration set is empty (run RVC's feature extraction first)")
    f0_dir = folder / "2b-f0nsf"
    if spec.f0:
        if not f0_dir.is_dir():
            raise CalibrationError(f"{folder}: no 2b-f0nsf/ folder, and the model is a pitch model; run RVC's pitch extraction first")
        # RVC trains on the utterances present in every folder; so do we (NAME.npy beside NAME.wav.npy).
        stems = [stem for stem in stems if (f0_dir / f"{stem}.wav.npy").is_file()]
        if not stems:
            raise CalibrationError(f"{f0_dir}: no pitch file NAME.wav.npy matches a feature file NAME.npy in {feature_dir.name}/; the calibration set is empty")
    available = len(stems)
    stems = _split(stems, split, folder, "utterances")
    chosen = _select(stems, config.count)
    inputs = [(f"{feature_dir.name}/{stem}.npy", feature_dir / f"{stem}.npy") for stem in chosen]
    if spec.f0:
        inputs += [(f"2b-f0nsf/{stem}.wav.npy", f0_dir / f"{stem}.wav.npy") for stem in chosen]
    max_frames = _max_frames(config)

    def build() -> tuple[list[dict[str, np.ndarray]], list[str]]:
        cases = []
        for stem in chosen:
            feature_path = feature_dir / f"{stem}.npy"
            raw = _check_features(_read_npy(feature_path, "content feature"), feature_path, width)
            case = {"features": np.repeat(raw, 2, axis=0)}  # 50 -> 100 frames/s, as RVC does
            if spec.f0:
                f0_path = f0_dir / f"{stem}.wav.npy"
                f0 = _check_f0(_read_npy(f0_path, "f0"), f0_path)
                case["features"], case["f0"] = _align(case["features"], f0, feature_path, f0_path, doubled=True)
            cases.append(_cut(case, max_frames))
        return cases, [f"{feature_dir.name}/{stem}.npy" for stem in chosen]

    parts = f"{feature_dir.name}/" + (" + 2b-f0nsf/" if spec.f0 else "")
    return _Plan(
        kind="rvc-logs",
        params={"count": config.count, "seconds": config.seconds, "available": available, "split": split},
        inputs=inputs,
        description=f"rvc-logs {folder} ({parts}): {len(chosen)} of {len(stems)} utterances{_split_text(split)}, at most {config.seconds:g} s each",
        build=build,
    )


def _plan_npz(config: "Calibration", spec: "ModelSpec", split: tuple[str, int] | None = None) -> _Plan:
    folder = Path(config.path)
    if not folder.is_dir():
        raise CalibrationError(f"{folder}: no such folder of calibration .npz files (calibration.path)")
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".npz") and p.is_file())
    if not names:
        raise CalibrationError(f"{folder}: no .npz files; the calibration set is empty")
    available = len(names)
    names = _split(names, split, folder, ".npz files")
    chosen = _select(names, config.count)
    max_frames = _max_frames(config)
    needed = ("features", "f0") if spec.f0 else ("features",)

    def build() -> tuple[list[dict[str, np.ndarray]], list[str]]:
        cases = []
        for name in chosen:
            path = folder / name
            data = _read_npz(path)
            for key in needed:
                if key not in data:
                    raise CalibrationError(
                        f"{path}: no {key!r} array (found: {', '.join(sorted(data)) or 'nothing'}); each file needs "
                        f"features [T, {spec.feature_dim}] at 100 frames/s{' and f0 [T] in Hz' if spec.f0 else ''}"
                    )
            case = {"features": _check_features(data["features"], f"{path}: features", spec.feature_dim)}
            if spec.f0:
                f0 = _check_f0(data["f0"], f"{path}: f0")
                case["features"], case["f0"] = _align(case["features"], f0, path, "the same file", doubled=False)
            cases.append(_cut(case, max_frames))
        return cases, chosen

    return _Plan(
        kind="npz",
        params={"count": config.count, "seconds": config.seconds, "available": available, "split": split},
        inputs=[(name, folder / name) for name in chosen],
        description=f"npz {folder}: {len(chosen)} of {len(names)} files{_split_text(split)}, at most {config.seconds:g} s each",
        build=build,
    )


def _plan_generated(config: "Calibration", spec: "ModelSpec", split: tuple[str, int] | None = None) -> _Plan:
    # A held-out split of generated cases is made by the caller with other seeds (load_calibration_split).
    feature_files = _real_feature_files(spec.feature_dim)
    uses_speech = spec.f0 and config.f0_source in ("speech", "mixed")
    uses_synthetic = spec.f0 and config.f0_source in ("synthetic", "mixed")
    clips: list[Path] = []
    if uses_speech:
        if config.speech:
            clips = [Path(p) for p in config.speech]
        else:
            clips = [BUNDLED_SPEECH_DIR / name for name in BUNDLED_SPEECH]
            if not all(clip.is_file() for clip in clips):
                raise CalibrationError(
                    f"{BUNDLED_SPEECH_DIR}: the bundled speech clips are missing (an install without the source tree?); "
                    "list 16-bit WAV files in calibration.speech or use calibration.f0_source: synthetic"
                )
        for clip in clips:
            if not clip.is_file():
                raise CalibrationError(f"{clip}: no such speech clip (calibration.speech)")
    params = {
        "count": config.count,
        "seconds": config.seconds,
        "seed": config.seed,
        "features": config.features,
        "feature_correlation": config.feature_correlation,
        "pitch_shift_semitones": config.pitch_shift_semitones,
    }
    if config.features == "recipe":
        params.update(feature_mean=config.feature_mean, feature_std=config.feature_std)
    if config.features == "real-frames":
        params["feature_perturbation"] = config.feature_perturbation
    if spec.f0:
        params["f0_source"] = config.f0_source
    if uses_speech:
        params["f0_method"] = config.f0_method
    if uses_synthetic:
        params.update(f0_low_hz=config.f0_low_hz, f0_high_hz=config.f0_high_hz)
    libraries: tuple[str, ...] = ()
    if uses_speech:
        libraries = ("praat-parselmouth",) if config.f0_method == "pm" else ("pyworld",)
    inputs = [(f"features/{path.name}", path) for path in feature_files]
    inputs += [(f"speech/{index}/{clip.name}", clip) for index, clip in enumerate(clips)]

    def build() -> tuple[list[dict[str, np.ndarray]], list[str]]:
        return _generate(config, spec, clips)

    if config.features == "recipe":
        feature_text = f"with mean {config.feature_mean:g} and std {config.feature_std:g} set in the recipe"
    else:
        feature_text = f"{config.features} ({_REAL_FEATURES_LABEL[spec.feature_dim]})"
    f0_text = ""
    if spec.f0:
        speech_text = f"{config.f0_method} on {len(clips)} speech clip{'s' if len(clips) != 1 else ''}"
        f0_text = {"speech": speech_text, "synthetic": "synthetic phrases", "mixed": f"{speech_text} + synthetic phrases"}[config.f0_source]
        f0_text = f", f0 from {f0_text}"
    return _Plan(
        kind="generated",
        params=params,
        inputs=inputs,
        description=(
            f"generated for tests and demos (not for real quantization): {config.count} x {config.seconds:g} s{f0_text}, "
            f"features {feature_text}, seed {config.seed}"
        ),
        build=build,
        libraries=libraries,
    )


# -- the generator (tests and demos only) --------------------------------------------------------

_REAL_FEATURES_LABEL = {
    256: "statistics of RVC's v1 example speech and silence features",
    768: "statistics of RVC's v2 silence features, the only real v2 features bundled",
}


def _real_feature_files(width: int) -> list[Path]:
    if width == 256:
        return [PACKAGE_DATA / "synthesizer_inputs_v1.npz", PACKAGE_DATA / "mute_feature256.npy"]
    if width == 768:
        return [PACKAGE_DATA / "mute_feature768.npy"]
    raise CalibrationError(f"no real content features of width {width} are bundled (v1: 256, v2: 768)")


def _real_frames(width: int) -> tuple[np.ndarray, ...]:
    """The bundled real content features of this width at RVC's native 50 frames/s, one array per recording."""
    if width == 256:
        with np.load(PACKAGE_DATA / "synthesizer_inputs_v1.npz", allow_pickle=False) as data:
            speech = data["phone"][0][0::2]  # stored at 100 frames/s, every 50 frames/s frame twice
        silence = np.load(PACKAGE_DATA / "mute_feature256.npy", allow_pickle=False)
        return speech.astype(np.float64), silence.astype(np.float64)
    return (np.load(PACKAGE_DATA / "mute_feature768.npy", allow_pickle=False).astype(np.float64),)


@dataclass(frozen=True)
class _FeatureModel:
    """Statistics of real content features: per-dimension mean/std, principal directions, frame-to-frame correlation."""

    mean: np.ndarray  # [C]
    std: np.ndarray  # [C]
    basis: np.ndarray  # [K, C]: the main directions of variation, each scaled by its standard deviation
    residual_std: np.ndarray  # [C]: what the K directions leave of each dimension's std
    correlation: float  # lag-1 autocorrelation at 50 frames/s, within recordings
    recordings: tuple[np.ndarray, ...]  # the real frames at 50 frames/s


@lru_cache(maxsize=4)
def _feature_model(width: int) -> _FeatureModel:
    recordings = _real_frames(width)
    frames = np.concatenate(recordings)
    mean, std = frames.mean(axis=0), frames.std(axis=0)
    _, singular, directions = np.linalg.svd(frames - mean, full_matrices=False)
    # Real features vary along a few directions shared by many dimensions; drawing the dimensions
    # independently would give frames no real encoder produces.
    keep = min(32, singular.size)
    basis = directions[:keep] * (singular[:keep] / math.sqrt(frames.shape[0]))[:, None]
    residual_std = np.sqrt(np.maximum(std**2 - (basis**2).sum(axis=0), 0.0))
    numerator = sum(float(((r[1:] - mean) * (r[:-1] - mean)).sum()) for r in recordings)
    denominator = sum(float(((r - mean) ** 2).sum()) for r in recordings)
    return _FeatureModel(mean, std, basis, residual_std, numerator / denominator, recordings)


def _ar1(rng: np.random.Generator, steps: int, dims: int, correlation: float) -> np.ndarray:
    """Unit-variance noise whose consecutive frames correlate by ``correlation`` (an AR(1) process)."""
    noise = rng.standard_normal((steps, dims))
    out = np.empty_like(noise)
    out[0] = noise[0]
    innovation = math.sqrt(1.0 - correlation**2)
    for t in range(1, steps):
        out[t] = correlation * out[t - 1] + innovation * noise[t]
    return out


def _generate_features(config: "Calibration", model: _FeatureModel, frames: int, rng: np.random.Generator) -> np.ndarray:
    steps = (frames + 1) // 2  # drawn at RVC's 50 frames/s, then doubled as RVC does
    correlation = model.correlation if config.feature_correlation is None else config.feature_correlation
    width = model.mean.size
    if config.features == "real-statistics":
        drawn = (model.mean + _ar1(rng, steps, model.basis.shape[0], correlation) @ model.basis
                 + model.residual_std * _ar1(rng, steps, width, correlation))
    elif config.features == "real-frames":
        recording = model.recordings[int(rng.integers(len(model.recordings)))]
        index = (int(rng.integers(recording.shape[0])) + np.arange(steps)) % recording.shape[0]
        drawn = recording[index] + config.feature_perturbation * model.std * _ar1(rng, steps, width, correlation)
    else:  # "recipe": the mean and std the recipe sets, the same for every dimension
        drawn = config.feature_mean + config.feature_std * _ar1(rng, steps, width, correlation)
    return np.ascontiguousarray(np.repeat(drawn, 2, axis=0)[:frames], dtype=np.float32)


def _import_quietly(module: str, reason: str) -> Any:
    import importlib

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pyworld imports pkg_resources, which warns on stderr
            return importlib.import_module(module)
    except ImportError:
        raise CalibrationError(f"{module} is not installed; {reason}") from None


def _resample(signal: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Band-limited resampling through the spectrum (numpy only; exact enough for pitch tracking)."""
    if rate == target:
        return signal
    frames = int(round(signal.size * target / rate))
    spectrum = np.fft.rfft(signal)
    keep = frames // 2 + 1
    spectrum = spectrum[:keep] if keep <= spectrum.size else np.pad(spectrum, (0, keep - spectrum.size))
    return np.fft.irfft(spectrum, frames) * (frames / signal.size)


@lru_cache(maxsize=16)
def _track_pitch(path: str, digest: str, method: str) -> np.ndarray:
    """f0 of a speech clip in Hz at 100 frames/s, tracked as RVC's extraction does: 16 kHz audio, 50-1100 Hz.

    ``digest`` (the clip's sha256) keys the in-process memo to the content, not the name.
    """
    from ..runtime.audio import read_wav
    from ..errors import InputError

    try:
        audio, rate = read_wav(path)
    except InputError as exc:
        raise CalibrationError(f"{exc} (calibration.speech)") from None
    if audio.size < rate // 10:
        raise CalibrationError(f"{path}: speech clip shorter than 0.1 s (calibration.speech)")
    signal, rate = _resample(audio.astype(np.float64), rate, PITCH_RATE), PITCH_RATE
    if method in ("harvest", "dio"):
        pyworld = _import_quietly("pyworld", "calibration.f0_method harvest and dio need it (or use pm, or f0_source: synthetic)")
        track = pyworld.harvest if method == "harvest" else pyworld.dio
        coarse, times = track(signal, rate, f0_floor=F0_FLOOR_HZ, f0_ceil=F0_CEIL_HZ, frame_period=1000.0 / FRAMES_PER_SECOND)
        f0 = pyworld.stonemask(signal, coarse, times, rate)  # refine, as RVC's extraction does
    else:
        parselmouth = _import_quietly("parselmouth", "calibration.f0_method pm needs it (pip install praat-parselmouth)")
        f0 = parselmouth.Sound(signal, rate).to_pitch_ac(
            time_step=1.0 / FRAMES_PER_SECOND, voicing_threshold=0.6, pitch_floor=F0_FLOOR_HZ, pitch_ceiling=F0_CEIL_HZ
        ).selected_array["frequency"]
        frames = signal.size * FRAMES_PER_SECOND // rate
        before = max((frames - f0.size + 1) // 2, 0)  # Praat starts half a window in; centre it as RVC does
        f0 = np.pad(f0, (before, max(frames - f0.size - before, 0)))
    f0 = np.nan_to_num(np.asarray(f0, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0).clip(min=0.0)
    voiced = float((f0 > 0).mean())
    if voiced < MIN_VOICED_FRACTION:
        raise CalibrationError(
            f"{path}: {method} finds a pitch in only {voiced:.0%} of frames; not usable speech for calibration (calibration.speech)"
        )
    f0 = f0.astype(np.float32)
    f0.flags.writeable = False
    return f0


def _speech_f0(contours: list[np.ndarray], frames: int, rng: np.random.Generator) -> np.ndarray:
    """A window of real contours: a random clip from a random start, then the others after short pauses."""
    order = rng.permutation(len(contours))
    first = contours[order[0]]
    start = int(rng.integers(0, max(1, first.size - frames + 1)))
    pieces, total, turn = [first[start:]], first.size - start, 1
    while total < frames:
        pause = np.zeros(int(rng.integers(10, 30)), np.float32)  # 0.1-0.3 s between utterances
        clip = contours[order[turn % len(order)]]
        pieces += [pause, clip]
        total += pause.size + clip.size
        turn += 1
    return np.concatenate(pieces)[:frames].astype(np.float32)


def _synthetic_f0(frames: int, rng: np.random.Generator, low_hz: float, high_hz: float) -> np.ndarray:
    """Spoken phrases: a speaker's base pitch, declination, intonation, vibrato, jitter, unvoiced gaps and pauses."""
    f0 = np.zeros(frames, np.float32)
    speaker_hz = math.exp(rng.uniform(math.log(low_hz), math.log(high_hz)))
    position = int(rng.integers(0, 20))  # up to 0.2 s of silence before the first phrase
    while position < frames:
        length = int(rng.integers(60, 250))  # a phrase of 0.6-2.5 s
        t = np.arange(length) / FRAMES_PER_SECOND
        onset_hz = speaker_hz * 2 ** (rng.normal(0.0, 1.5) / 12)
        declination = 1.0 - rng.uniform(0.05, 0.2) * t / max(t[-1], 1e-3)  # pitch falls through a phrase
        intonation = rng.uniform(0.5, 2.5) * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * t + rng.uniform(0, 2 * np.pi))
        vibrato = rng.uniform(0.0, 40.0) / 100 * np.sin(2 * np.pi * rng.uniform(4.5, 6.5) * t + rng.uniform(0, 2 * np.pi))
        jitter = 0.05 * _ar1(rng, length, 1, 0.9)[:, 0]
        contour = onset_hz * declination * 2 ** ((intonation + vibrato + jitter) / 12)
        voiced = np.ones(length, bool)
        gap = int(rng.integers(10, 40))
        while gap < length - 5:  # unvoiced consonants: 30-80 ms without pitch
            voiced[gap : gap + int(rng.integers(3, 9))] = False
            gap += int(rng.integers(15, 50))
        contour = np.clip(contour, low_hz / 1.5, min(high_hz * 1.5, F0_CEIL_HZ)) * voiced
        n = min(length, frames - position)
        f0[position : position + n] = contour[:n]
        position += length + int(rng.integers(10, 40))  # a pause of 0.1-0.4 s
    return f0


def _generate(config: "Calibration", spec: "ModelSpec", clips: list[Path]) -> tuple[list[dict[str, np.ndarray]], list[str]]:
    frames = _max_frames(config)
    model = _feature_model(spec.feature_dim)
    contours = [_track_pitch(str(clip), sha256_file(clip), config.f0_method) for clip in clips]
    cases, names = [], []
    for index in range(config.count):
        # One stream per case and purpose: case i is the same whatever count is, features independent of f0.
        case = {"features": _generate_features(config, model, frames, np.random.default_rng([config.seed, index, 1]))}
        kind = "features"
        if spec.f0:
            rng = np.random.default_rng([config.seed, index, 0])
            speech = config.f0_source == "speech" or (config.f0_source == "mixed" and index % 2 == 0)
            f0 = _speech_f0(contours, frames, rng) if speech else _synthetic_f0(frames, rng, config.f0_low_hz, config.f0_high_hz)
            if config.pitch_shift_semitones:
                f0 = f0 * np.float32(2 ** (rng.uniform(-1.0, 1.0) * config.pitch_shift_semitones / 12))
            case["f0"] = f0.astype(np.float32)
            kind = "speech-f0" if speech else "synthetic-f0"
        cases.append(case)
        names.append(f"generated-{index}-{kind}")
    return cases, names


# -- the cache -----------------------------------------------------------------------------------

def _library_versions(names: tuple[str, ...]) -> dict[str, str]:
    versions = {"numpy": np.__version__}  # random streams and float results may change with numpy
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def _cache_key(plan: _Plan, spec: "ModelSpec") -> "StageKey":
    """The set's key in the build cache: every file read (by content), the source's parameters, the
    feature width and pitch flag, and the versions of what computes it."""
    from ..cache.store import stage_key

    inputs = {}
    for label, path in plan.inputs:
        try:
            inputs[label] = sha256_file(path)
        except OSError as exc:
            raise CalibrationError(f"{path}: cannot read ({exc.strerror or exc})") from None
    params = {"format": CACHE_FORMAT, "kind": plan.kind, "source": plan.params, "feature_dim": spec.feature_dim, "f0": spec.f0}
    return stage_key(CACHE_STAGE, inputs=inputs, params=params, libraries=_library_versions(plan.libraries))


def _read_entry(path: Path, spec: "ModelSpec") -> CalibrationSet | None:
    """The set stored in ``path`` (a cache entry's calibration.npz) if it is whole and fits ``spec``; None otherwise."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"][()]))
            cases = [{name: np.ascontiguousarray(data[f"case{i:05d}.{name}"]) for name in meta["arrays"]} for i in range(meta["count"])]
        intact = (
            meta["format"] == CACHE_FORMAT
            and meta["feature_dim"] == spec.feature_dim
            and meta["has_f0"] == spec.f0
            and len(cases) > 0
            and all(case["features"].dtype == np.float32 and case["features"].ndim == 2 and case["features"].shape[1] == spec.feature_dim for case in cases)
            and all(case["f0"].dtype == np.float32 and case["f0"].shape == case["features"].shape[:1] for case in cases if spec.f0)
            and content_sha256(cases) == meta["sha256"]
        )
    except (ValueError, TypeError, KeyError, OSError, EOFError, zipfile.BadZipFile, json.JSONDecodeError):
        return None
    if not intact:
        return None
    return CalibrationSet(cases, meta["sha256"], meta["source"], spec.feature_dim, spec.f0, list(meta["names"]), cache_hit=True, cache_path=path)


def _write_entry(path: Path, calibration: CalibrationSet) -> None:
    """The whole set as one .npz (into the store's staging folder, which syncs and renames it into place)."""
    meta = {
        "format": CACHE_FORMAT,
        "sha256": calibration.sha256,
        "source": calibration.source,
        "names": calibration.names,
        "feature_dim": calibration.feature_dim,
        "has_f0": calibration.has_f0,
        "count": len(calibration.cases),
        "arrays": sorted(calibration.cases[0]),
    }
    arrays = {"meta": np.array(json.dumps(meta))}
    for index, case in enumerate(calibration.cases):
        arrays.update({f"case{index:05d}.{name}": array for name, array in case.items()})
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


# -- the entry point -----------------------------------------------------------------------------

_PLANNERS = {"rvc-logs": _plan_rvc_logs, "npz": _plan_npz, "generated": _plan_generated}


def require_calibration(config: "Calibration") -> None:
    """Refuse ``source: none`` (quantizing needs calibration data) before anything expensive is loaded."""
    if config.source == "none":
        raise CalibrationError(
            "calibration.source is 'none': quantizing needs calibration data; set calibration.source to rvc-logs "
            "(the RVC training folder), npz, or generated (tests and demos only)"
        )


def load_calibration(
    config: "Calibration",
    spec: "ModelSpec",
    *,
    cache_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
    split: tuple[str, int] | None = None,
) -> CalibrationSet:
    """The calibration set the recipe's ``calibration`` section describes, checked against ``spec``.

    Raises ``CalibrationError`` (one line, naming the file, folder or key) for a missing or empty
    source, a feature width or rate that does not match the model, misaligned, non-finite or negative
    values and pickled or unreadable files; ``source: none`` is refused too, since quantizing needs
    calibration data. With ``cache_dir`` (the build cache's folder: the build passes its own), the set
    is an entry of that cache (stage ``calibration``), read back after verification or built and
    stored; ``CalibrationSet.cache_hit`` says which and ``cache_path`` is its file in the entry. An
    entry that fails verification is discarded (``log`` gets one line) and rebuilt. A cache that
    cannot be written (full disk, read-only folder) is ``CacheError``. ``split``: one part of a
    held-out split of a file source (``load_calibration_split``).
    """
    require_calibration(config)
    if config.source not in _PLANNERS:
        raise CalibrationError(f"calibration.source {config.source!r} is not one of {', '.join(_PLANNERS)}")
    plan = _PLANNERS[config.source](config, spec, split)
    if cache_dir is None:
        return _build(plan, spec)
    from ..cache.store import Store

    store = Store(Path(cache_dir))
    key = _cache_key(plan, spec)
    made: list[CalibrationSet] = []  # by the producer (a miss)
    read: list[CalibrationSet] = []  # by the check (a hit)

    def produce(folder: Path) -> dict[str, Any]:
        calibration = _build(plan, spec)
        _write_entry(folder / CACHE_FILE, calibration)
        made.append(calibration)
        return {"source": calibration.source, "sha256": calibration.sha256, "count": len(calibration.cases)}

    def check(entry: Any) -> str | None:
        calibration = _read_entry(entry.file(CACHE_FILE), spec) if CACHE_FILE in entry.files else None
        if calibration is None:
            return f"{CACHE_FILE} is not a whole calibration set for this model"
        read.append(calibration)
        return None

    entry, hit = store.get_or_create(key, produce, check=check)
    with entry:  # every array is in memory: the entry's lock is not needed past this point
        calibration = read[-1] if hit else made[-1]
        calibration.cache_hit, calibration.cache_path = hit, entry.file(CACHE_FILE)
    if log is not None:
        for discarded, reason in store.discarded:
            log(f"calibration cache entry {discarded[:12]} ({store.entry_dir(discarded)}) failed its check ({reason}); deleted, rebuilding")
    return calibration


def _build(plan: _Plan, spec: "ModelSpec") -> CalibrationSet:
    cases, names = plan.build()
    if not cases:  # pragma: no cover - every planner refuses an empty source first
        raise CalibrationError(f"{plan.description}: the calibration set is empty")
    calibration = CalibrationSet(cases, content_sha256(cases), plan.description, spec.feature_dim, spec.f0, names)
    calibration.check_matches(spec)
    return calibration


def load_calibration_split(
    config: "Calibration",
    spec: "ModelSpec",
    held_out: int,
    held_out_seconds: float,
    *,
    cache_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[CalibrationSet, CalibrationSet]:
    """(training set, held-out set) from one source, never sharing a file (or, generated, a seed).

    File sources (rvc-logs, npz) hold ``held_out`` files out, spread evenly over the sorted list, and
    draw the training set's ``count`` from the rest; held-out cases are cut to ``held_out_seconds``.
    ``generated`` draws ``held_out`` cases from seeds ``HELD_OUT_SEED_OFFSET`` above ``seed``. Both
    sets are cache entries like any calibration set.
    """
    import dataclasses

    if held_out < 1:
        raise CalibrationError(f"calibration.held_out: {held_out} must be at least 1")
    held_config = dataclasses.replace(config, count=held_out, seconds=held_out_seconds)
    if config.source == "generated":
        held_config = dataclasses.replace(held_config, seed=config.seed + HELD_OUT_SEED_OFFSET)
        train_split = held_split = None
    else:
        train_split, held_split = ("train", held_out), ("held_out", held_out)
    train = load_calibration(config, spec, cache_dir=cache_dir, log=log, split=train_split)
    held = load_calibration(held_config, spec, cache_dir=cache_dir, log=log, split=held_split)
    return train, held
