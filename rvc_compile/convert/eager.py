"""The eager fp32 reference pipeline: the same components as a bundle, in PyTorch (build side: imports
torch). It is what a bundle's end-to-end golden check and the benchmark compare against, and what
``rvc-compile convert`` runs when VOICE is a checkpoint.

Each component is read by its own adapter (``components``), the same code a build starts from, so the
reference and the compiled bundle start from the same weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..runtime.pipeline import EncoderEngine, Engines


def _loaded(kind: str, checkpoint: Path, **source_fields: Any) -> tuple[Any, Any]:
    from ..components import get_component
    from ..recipe.schema import Source

    component = get_component(kind)
    loaded = component.load(Source(checkpoint=Path(checkpoint), component=kind, **source_fields))
    return component, loaded


def eager_encoder(folder: Path, version: str) -> EncoderEngine:
    """The content encoder's torch model (v1: layer 9 + final_proj, v2: layer 12) as an engine."""
    import torch

    component, loaded = _loaded("content-encoder", folder, features=version)
    model = component.build_model(loaded.spec, loaded.weights)

    def encode(audio16k: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(np.ascontiguousarray(audio16k, dtype=np.float32))[None])[0].numpy()

    dim = component.signature(loaded.spec, component.input_names(loaded.spec)).outputs[0].shape[-1]
    return EncoderEngine(encode, int(dim), str(folder))


def eager_rmvpe(path: Path):
    """RMVPE in torch: 16 kHz audio -> f0 Hz, with the host's mel and decoding (``components.pitch.host``)."""
    import torch

    from ..components.pitch.host import rmvpe_f0

    component, loaded = _loaded("rmvpe", path)
    model = component.build_model(loaded.spec, loaded.weights)

    def salience(mel: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32))).numpy()

    return lambda audio16k: rmvpe_f0(audio16k, salience)


def eager_engines(
    checkpoint: Path, encoder: Path, *, rmvpe: Path | None = None, index: Path | None = None, threads: int | None = None,
    config_path: Path | None = None,
) -> Engines:
    """Eager engines for a voice checkpoint and the encoder (and RMVPE) sources; the index as given."""
    from ..components.synthesizer.reference import ReferenceModel

    voice = ReferenceModel.from_path(checkpoint, threads=threads, config_path=config_path)
    version = "v1" if voice.spec.feature_dim == 256 else "v2"
    engine = eager_encoder(Path(encoder), version)
    retrieval = None
    if index is not None:
        from .retrieval import RetrievalIndex

        retrieval = RetrievalIndex.load(index, voice.spec.feature_dim)
    return Engines(encoder=engine, synthesizer=voice, rmvpe=eager_rmvpe(Path(rmvpe)) if rmvpe is not None else None,
                   index=retrieval, label=str(checkpoint))


def engines_from_recipes(synthesizer: Any, encoder: Any, pitch: Any | None, index: Path | None) -> Engines:
    """Eager engines from loaded build recipes (``recipe.schema.Recipe``): the sources the bundle's
    components were built from."""
    from ..components.synthesizer.reference import ReferenceModel

    source = synthesizer.source
    voice = ReferenceModel.from_path(source.checkpoint, config_path=source.config, sample_rate=source.sample_rate)
    version = "v1" if voice.spec.feature_dim == 256 else "v2"
    engine = eager_encoder(encoder.source.checkpoint, encoder.source.features or version)
    retrieval = None
    if index is not None:
        from .retrieval import RetrievalIndex

        retrieval = RetrievalIndex.load(index, voice.spec.feature_dim)
    rmvpe = eager_rmvpe(pitch.source.checkpoint) if pitch is not None else None
    return Engines(encoder=engine, synthesizer=voice, rmvpe=rmvpe, index=retrieval, label="eager fp32 reference")
