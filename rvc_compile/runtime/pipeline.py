"""A loaded pipeline bundle: audio in, converted audio out, through compiled components. numpy only.

    pipeline = rvc_compile.runtime.load("out/artifacts/my-voice-pipeline/1.0.0")
    audio = pipeline.convert(speech, 44100, pitch_shift=0)   # float32 at pipeline.sample_rate

A bundle (docs/CONVERT.md) holds the component artifacts (synthesizer, content encoder, optionally the
RMVPE pitch estimator) under ``components/<role>/``, each named in the bundle's manifest by the sha256 of
its own manifest, the voice's optional retrieval index under ``index/``, and the conversion settings.
The conversion itself is ``convert.pipeline.VoicePipeline`` (RVC's formulation) on engines that wrap
the loaded artifacts; the eager reference (``convert.eager``) uses the same engines around torch models.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import ArtifactError, InputError

from ..artifact.manifest import BUNDLE_KIND  # noqa: E402  (one constant: the manifest reader knows bundles too)
ROLE_KINDS = {"synthesizer": "synthesizer", "encoder": "content-encoder", "pitch": "rmvpe"}
F0_METHODS = ("rmvpe", "harvest", "pm", "dio")


# -- engines: what convert.pipeline.VoicePipeline calls -----------------------------------------------

class EncoderEngine:
    """16 kHz audio -> content features [frames, dim] (frames = (n - 400) // 320 + 1)."""

    def __init__(self, encode: Callable[[np.ndarray], np.ndarray], feature_dim: int, label: str, max_samples: int | None = None,
                 model: Any = None):
        self.encode, self.feature_dim, self.label = encode, int(feature_dim), label
        self.max_samples = None if max_samples is None else int(max_samples)  # a compiled encoder's longest input
        self.model = model  # the loaded artifact, when compiled

    @classmethod
    def compiled(cls, encoder: Any, label: str | None = None) -> "EncoderEngine":
        """The engine of a loaded encoder artifact (``components.encoder.compiled.CompiledEncoder``)."""
        return cls(encoder.encode, encoder.feature_dim, label or str(encoder.path), max_samples=encoder.max_frames, model=encoder)

    def __call__(self, audio16k: np.ndarray) -> np.ndarray:
        return np.asarray(self.encode(np.asarray(audio16k, dtype=np.float32)), dtype=np.float32)


class PitchEngine:
    """16 kHz audio -> f0 in Hz at 100 frames/s by one method: RMVPE (compiled or eager salience) or a
    classic tracker (pyworld's harvest/dio, Praat's autocorrelation), as RVC's ``get_f0`` computes them."""

    def __init__(self, method: str, *, rmvpe: Callable[[np.ndarray], np.ndarray] | None = None, filter_radius: int = 3):
        if method not in F0_METHODS:
            raise InputError(f"--f0-method: {method!r} is not one of {', '.join(F0_METHODS)}")
        if method == "rmvpe" and rmvpe is None:
            raise InputError("--f0-method rmvpe needs an RMVPE pitch estimator (a bundle with a pitch component, or --rmvpe); "
                             "use harvest, pm or dio otherwise")
        self.method, self.rmvpe, self.filter_radius = method, rmvpe, int(filter_radius)

    def __call__(self, audio16k: np.ndarray, p_len: int) -> np.ndarray:
        if self.method == "rmvpe":
            return np.asarray(self.rmvpe(np.asarray(audio16k, dtype=np.float32)), dtype=np.float64)
        from ..components.pitch.trackers import track

        return track(np.asarray(audio16k, dtype=np.float64), self.method, p_len, filter_radius=self.filter_radius)


class SynthesizerEngine:
    """Features [T, C] and f0 [T] (Hz) -> audio [T * hop], through any model with ``infer`` (a compiled
    ``CompiledVoice`` or the eager ``ReferenceModel``). ``noise``: "zero" (deterministic: golden checks)
    or "seed:N" (RVC's random prior and source noise; segment k draws with seed N + k)."""

    def __init__(self, model: Any, *, sample_rate: int, hop_length: int, feature_dim: int, has_f0: bool, speaker: int = 0, noise: str = "zero"):
        self.model = model
        self.sample_rate, self.hop_length, self.feature_dim, self.has_f0 = int(sample_rate), int(hop_length), int(feature_dim), bool(has_f0)
        self.speaker, self.noise = int(speaker), noise
        self.calls = 0

    def __call__(self, features: np.ndarray, f0: np.ndarray | None) -> np.ndarray:
        noise = self.noise
        if noise.startswith("seed:"):
            noise = f"seed:{int(noise[5:]) + self.calls}"
        self.calls += 1
        return self.model.infer(features, f0 if self.has_f0 else None, speaker=self.speaker, noise=noise)


def synthesizer_engine(voice: Any, *, speaker: int = 0, noise: str = "zero") -> SynthesizerEngine:
    spec = getattr(voice, "spec", None)
    hop = getattr(voice, "hop_length", None) or spec.hop_length
    dim = getattr(voice, "feature_dim", None) or spec.feature_dim
    return SynthesizerEngine(voice, sample_rate=voice.sample_rate, hop_length=hop, feature_dim=dim, has_f0=voice.has_f0, speaker=speaker, noise=noise)


# -- settings ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConvertOptions:
    """One conversion's settings: the bundle's stored settings with the caller's overrides. The four of
    RVC's pipeline are ``convert.pipeline.Settings`` (and checked by it); the pitch method, harvest's
    filter radius and the speaker choose the engines."""

    f0_method: str = "rmvpe"
    pitch_shift: float = 0.0
    index_rate: float = 0.75
    protect: float = 0.33
    rms_mix_rate: float = 0.25
    filter_radius: int = 3
    speaker: int = 0

    @classmethod
    def merge(cls, stored: Mapping[str, Any] | None, **overrides: Any) -> "ConvertOptions":
        values = {key: value for key, value in (stored or {}).items() if key in cls.__dataclass_fields__}
        values.update({key: value for key, value in overrides.items() if value is not None})
        options = cls(**values)
        options.check()
        return options

    def check(self) -> None:
        from ..convert.pipeline import Settings

        Settings(pitch_shift=self.pitch_shift, index_rate=self.index_rate, protect=self.protect, rms_mix_rate=self.rms_mix_rate)  # its ranges
        if self.f0_method not in F0_METHODS:
            raise InputError(f"f0_method: {self.f0_method!r} is not one of {', '.join(F0_METHODS)}")
        if isinstance(self.filter_radius, bool) or not isinstance(self.filter_radius, int) or not 0 <= self.filter_radius <= 7:
            raise InputError(f"filter_radius: {self.filter_radius!r} is not an integer in 0..7")
        if isinstance(self.speaker, bool) or not isinstance(self.speaker, int) or self.speaker < 0:
            raise InputError(f"speaker: {self.speaker!r} is not a speaker id")

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.__dataclass_fields__}


# -- running ---------------------------------------------------------------------------------------------

@dataclass
class Engines:
    """What a conversion runs on: encoder and synthesizer engines, the RMVPE estimator (or None), the
    retrieval index (or None). Compiled bundles, loose artifacts and the eager reference all give one."""

    encoder: EncoderEngine
    synthesizer: Any  # a model with infer (CompiledVoice or ReferenceModel)
    rmvpe: Callable[[np.ndarray], np.ndarray] | None = None
    index: Any = None
    label: str = ""

    @property
    def sample_rate(self) -> int:
        return int(self.synthesizer.sample_rate)

    def check(self) -> None:
        voice_dim = getattr(self.synthesizer, "feature_dim", None) or self.synthesizer.spec.feature_dim
        if self.encoder.feature_dim != voice_dim:
            raise InputError(
                f"{self.encoder.label}: gives {self.encoder.feature_dim}-dim features but the voice takes {voice_dim} "
                f"(a {'v1' if voice_dim == 256 else 'v2'} voice needs the {'v1 (layer 9, final_proj)' if voice_dim == 256 else 'v2 (layer 12)'} encoder output)"
            )


def convert_audio(
    engines: Engines, audio: np.ndarray, sample_rate: int, options: ConvertOptions, *, noise: str = "zero",
    progress: Callable[[int, int], None] | None = None, timings: dict[str, float] | None = None, label: str = "input audio",
) -> np.ndarray:
    """``audio`` (mono, or [samples, channels]) at ``sample_rate`` -> converted audio at the voice's rate;
    ``label`` names the input in errors (the file, for the CLI)."""
    from ..convert.audio import prepare_input
    from ..convert.pipeline import FP32_CHUNKING, VoicePipeline

    engines.check()
    started = time.perf_counter()
    audio16k = prepare_input(audio, sample_rate, label=label)
    if timings is not None:
        timings["resample"] = timings.get("resample", 0.0) + time.perf_counter() - started
    synthesizer = synthesizer_engine(engines.synthesizer, speaker=options.speaker, noise=noise)
    pitch = PitchEngine(options.f0_method, rmvpe=engines.rmvpe, filter_radius=options.filter_radius) if synthesizer.has_f0 else None
    chunking = FP32_CHUNKING.fitting(engines.encoder.max_samples, engines.encoder.label)  # RVC's, unless the encoder is shorter
    pipeline = VoicePipeline(engines.encoder, synthesizer, pitch=pitch, index=engines.index, chunking=chunking)
    return pipeline.convert(
        audio16k, pitch_shift=options.pitch_shift, index_rate=options.index_rate, protect=options.protect,
        rms_mix_rate=options.rms_mix_rate, progress=progress, timings=timings, label=label,
    )


class CompiledPipeline:
    """A loaded pipeline bundle. ``convert`` may be called from one thread at a time per instance."""

    def __init__(self, path: Path, manifest: Mapping[str, Any], components: Mapping[str, Any], index: Any, load_time_s: float):
        self.path = Path(path)
        self.manifest = dict(manifest)
        self.components = dict(components)
        self.load_time_s = load_time_s
        self.settings: dict[str, Any] = dict(manifest.get("settings", {}))
        self.voice = self.components["synthesizer"]
        encoder = self.components["encoder"]
        rmvpe = self.components.get("pitch")
        self.engines = Engines(
            encoder=EncoderEngine.compiled(encoder), synthesizer=self.voice,
            rmvpe=rmvpe.estimate if rmvpe is not None else None, index=index, label=str(self.path),
        )
        self.engines.check()

    kind = BUNDLE_KIND

    @property
    def sample_rate(self) -> int:
        return self.voice.sample_rate

    @property
    def has_index(self) -> bool:
        return self.engines.index is not None

    def options(self, **overrides: Any) -> ConvertOptions:
        return ConvertOptions.merge(self.settings, **overrides)

    def convert(
        self, audio: np.ndarray, sample_rate: int, *, noise: str = "zero", progress: Callable[[int, int], None] | None = None,
        timings: dict[str, float] | None = None, **overrides: Any,
    ) -> np.ndarray:
        """Converted float32 audio at ``sample_rate`` of the voice; ``overrides``: any ``ConvertOptions`` field."""
        return convert_audio(self.engines, audio, sample_rate, self.options(**overrides), noise=noise, progress=progress, timings=timings)


def component_paths(path: Path, manifest: Mapping[str, Any]) -> dict[str, Path]:
    """role -> folder of each component artifact in a bundle, after checking the manifest's entries."""
    components = manifest.get("components")
    if not isinstance(components, dict) or not {"synthesizer", "encoder"} <= set(components):
        raise ArtifactError(f"{path}: manifest.json: components must name a synthesizer and an encoder")
    paths = {}
    for role, entry in components.items():
        if role not in ROLE_KINDS or not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not isinstance(entry.get("manifest_sha256"), str):
            raise ArtifactError(f"{path}: manifest.json: components.{role} is not a component entry (path, manifest_sha256)")
        folder = (path / entry["path"]).resolve()
        if not folder.is_relative_to(path.resolve()):
            raise ArtifactError(f"{path}: manifest.json: components.{role}.path leaves the bundle")
        paths[role] = folder
    return paths


def load_pipeline(
    path: str | Path, *, threads: int | None = None, allow_tampered: bool = False, compile_cache: str | Path | None = None,
    index_override: str | Path | None = None, on_other_cpu: str = "check", manifest: Mapping[str, Any] | None = None,
) -> CompiledPipeline:
    """Load a bundle after checking every file's hash (the components' files are the bundle's files) and
    that each component is the one the bundle names (sha256 of its manifest)."""
    from ..artifact.manifest import MANIFEST, verify_or_raise
    from ..hashing import sha256_file
    from . import load

    started = time.perf_counter()
    path = Path(path)
    if manifest is None:  # else: read and hash-checked by the caller (runtime.load)
        manifest = verify_or_raise(path, allow_tampered=allow_tampered)
    if manifest.get("kind") != BUNDLE_KIND:
        raise ArtifactError(f"{path}: not a pipeline bundle")
    components = {}
    for role, folder in component_paths(path, manifest).items():
        entry = manifest["components"][role]
        if not (folder / MANIFEST).is_file():
            raise ArtifactError(f"{path}: component {role} is missing ({entry['path']}/{MANIFEST})")
        if sha256_file(folder / MANIFEST) != entry["manifest_sha256"] and not allow_tampered:
            raise ArtifactError(f"{path}: component {role} ({entry['path']}) is not the artifact the bundle names (manifest sha256 differs)")
        model = load(folder, threads=threads, allow_tampered=True, compile_cache=compile_cache, on_other_cpu=on_other_cpu)  # hashed above
        if model.kind != ROLE_KINDS[role]:
            raise ArtifactError(f"{path}: component {role} is a {model.kind}, not a {ROLE_KINDS[role]}")
        components[role] = model
    index = None
    index_path = Path(index_override) if index_override is not None else (path / manifest["index"]["file"] if manifest.get("index") else None)
    if index_path is not None:
        from ..convert.retrieval import RetrievalIndex

        index = RetrievalIndex.load(index_path, components["synthesizer"].feature_dim)
    return CompiledPipeline(path, manifest, components, index, time.perf_counter() - started)
