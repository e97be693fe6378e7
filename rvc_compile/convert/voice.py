"""What ``rvc-compile convert``'s VOICE names, opened as engines: a pipeline bundle, a synthesizer
artifact with encoder (and RMVPE) artifacts, or an RVC checkpoint with the encoder and RMVPE sources
(the eager reference; imports torch only then). A component may be given either way: an artifact
folder (``manifest.json``) is loaded compiled, anything else is read as the component's source."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import InputError
from ..runtime.pipeline import ConvertOptions, EncoderEngine, Engines, convert_audio
from ..sources import is_artifact


@dataclass
class OpenedVoice:
    engines: Engines
    settings: Mapping[str, Any]
    label: str

    @property
    def sample_rate(self) -> int:
        return self.engines.sample_rate

    def options(self, **overrides: Any) -> ConvertOptions:
        stored = dict(self.settings)
        if "f0_method" not in stored:
            stored["f0_method"] = "rmvpe" if self.engines.rmvpe is not None else "harvest"
        return ConvertOptions.merge(stored, **overrides)

    def convert(self, audio: np.ndarray, sample_rate: int, options: ConvertOptions, *, noise: str = "zero",
                progress: Callable[[int, int], None] | None = None, timings: dict[str, float] | None = None,
                label: str = "input audio") -> np.ndarray:
        return convert_audio(self.engines, audio, sample_rate, options, noise=noise, progress=progress, timings=timings, label=label)


def _kind(path: Path) -> str | None:
    import json

    from ..artifact.manifest import MANIFEST

    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    if manifest.get("kind") == "pipeline":
        return "pipeline"
    component = manifest.get("component")
    return component.get("kind") if isinstance(component, dict) else "synthesizer"


def _load_artifact(path: Path, expected: str, what: str, threads: int | None) -> Any:
    from ..runtime import load

    kind = _kind(path)
    if kind != expected:
        raise InputError(f"{path}: {what} must be a {expected} artifact, not a {kind or 'unreadable'} one")
    return load(path, threads=threads)


def open_voice(voice: Path, *, encoder: Path | None = None, rmvpe: Path | None = None, index: Path | None = None,
               threads: int | None = None) -> OpenedVoice:
    voice = Path(voice)
    if not voice.exists():
        raise InputError(f"{voice}: no such voice (a pipeline bundle, a synthesizer artifact or an RVC checkpoint)")
    if is_artifact(voice) and _kind(voice) == "pipeline":
        if encoder is not None or rmvpe is not None:
            raise InputError(f"{voice}: a pipeline bundle carries its own encoder and pitch estimator; drop --encoder/--rmvpe")
        from ..runtime.pipeline import load_pipeline

        bundle = load_pipeline(voice, threads=threads, index_override=index)
        return OpenedVoice(bundle.engines, bundle.settings, f"bundle {voice}")
    if encoder is None:
        raise InputError(f"{voice}: give --encoder (an encoder artifact or a ContentVec/HuBERT Transformers folder); only a pipeline bundle carries its own")
    if is_artifact(voice):
        synthesizer = _load_artifact(voice, "synthesizer", "VOICE", threads)
        label = f"artifact {voice}"
    else:
        from ..components.synthesizer.reference import ReferenceModel

        synthesizer = ReferenceModel.from_path(voice, threads=threads)
        label = f"checkpoint {voice} (eager fp32)"
    dim = getattr(synthesizer, "feature_dim", None) or synthesizer.spec.feature_dim
    encoder = Path(encoder)
    if is_artifact(encoder):
        model = _load_artifact(encoder, "content-encoder", "--encoder", threads)
        encoder_engine = EncoderEngine.compiled(model, str(encoder))
    else:
        from .eager import eager_encoder

        encoder_engine = eager_encoder(encoder, "v1" if dim == 256 else "v2")
    estimator = None
    if rmvpe is not None:
        rmvpe = Path(rmvpe)
        if is_artifact(rmvpe):
            estimator = _load_artifact(rmvpe, "rmvpe", "--rmvpe", threads).estimate
        else:
            from .eager import eager_rmvpe

            estimator = eager_rmvpe(rmvpe)
    retrieval = None
    if index is not None:
        from .retrieval import RetrievalIndex

        retrieval = RetrievalIndex.load(index, dim)
    engines = Engines(encoder=encoder_engine, synthesizer=synthesizer, rmvpe=estimator, index=retrieval, label=label)
    engines.check()
    return OpenedVoice(engines, {}, label)


def open_stream(voice: Path, *, encoder: Path | None = None, rmvpe: Path | None = None, index: Path | None = None,
                synthesizer: Path | None = None, threads: int | None = None, **stream_options: Any) -> Any:
    """A real-time ``runtime.stream.Stream`` over what ``open_voice`` opens; ``synthesizer``: a real-time
    block artifact (or another synthesizer artifact) used instead of VOICE's own synthesizer."""
    from ..runtime.stream import Stream

    opened = open_voice(voice, encoder=encoder, rmvpe=rmvpe, index=index, threads=threads)
    engines = opened.engines
    label = opened.label
    if synthesizer is not None:
        block = _load_artifact(Path(synthesizer), "synthesizer", "--synthesizer", threads)
        engines = Engines(encoder=engines.encoder, synthesizer=block, rmvpe=engines.rmvpe, index=engines.index, label=label)
        label = f"{label} with {synthesizer}"
    options = dict(stream_options)
    if options.get("f0_method") is None:
        options["f0_method"] = opened.options().f0_method
    for key in ("pitch_shift", "index_rate", "speaker"):
        if options.get(key) is None:
            options[key] = getattr(opened.options(), key) if key != "index_rate" or engines.index is not None else 0.0
    return Stream(engines, label=label, **options)
