"""Load and run compiled artifacts in downstream apps: numpy + the backend's library, never torch (except
for aoti artifacts, whose AOTInductor package torch loads: that backend imports it in its ``load``).

    voice = rvc_compile.runtime.load("out/artifacts/demo-voice/1.0.0")
    audio = voice.infer(features, f0, speaker=0, noise="zero")   # float32 [T * hop] at voice.sample_rate

    pipeline = rvc_compile.runtime.load("out/artifacts/demo-pipeline/1.0.0")   # a pipeline bundle
    audio = pipeline.convert(speech, 44100, pitch_shift=2)      # float32 at pipeline.sample_rate
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any


from ..artifact.manifest import BUNDLE_KIND, check_sections, verify_or_raise
from ..backends import BACKENDS, get_backend
from ..components import get_component
from ..errors import ArtifactError, RvcCompileError, first_line
from .model import CompiledModel
from .placement import ON_OTHER_CPU, check_on_this_cpu, placement
from .voice import CompiledVoice


def compile_cache_dir(path: Path, manifest: dict[str, Any], override: str | Path | None = None) -> Path | None:
    """Where the backend keeps compiled blobs for this artifact: ``override`` ("none" disables), else the
    artifact's recorded policy (target.compile_cache): the user's build cache, beside the artifact, none.

    "user" is the build cache's area ``compiled/<backend>`` (``Store.area``), which ``rvc-compile cache``
    lists, sizes and prunes like its entries. A cache that cannot be written only costs the cache: the
    artifact loads without one, with a warning."""
    if override is not None:
        return None if str(override) == "none" else Path(override)
    policy = manifest.get("target", {}).get("compile_cache", "none")
    if not get_backend(manifest["backend"]["name"], for_build=False).COMPILE_CACHE:
        return None  # this backend keeps no compiled blobs (ONNX Runtime compiles in memory)
    if policy == "user":
        from ..cache.store import Store  # standard library only: the runtime stays light
        from ..errors import CacheError

        try:
            return Store.open(None).area(f"compiled/{manifest['backend']['name']}")
        except CacheError as exc:
            warnings.warn(f"{path}: no compile cache ({exc})", RuntimeWarning, stacklevel=3)
            return None
    if policy == "beside":
        return path.parent / f"{path.name}.compile-cache"
    return None


def load(
    path: str | Path, *, threads: int | None = None, allow_tampered: bool = False, compile_cache: str | Path | None = None,
    on_other_cpu: str = "check",
) -> CompiledModel:
    """Load an artifact folder (a ``CompiledVoice`` for a synthesizer) after checking every file's hash (``allow_tampered`` skips the refusal).

    ``compile_cache``: a folder for the backend's compiled blobs, or "none"; by default the artifact's
    recorded policy. The first load compiles and fills it; later loads read the compiled model.

    ``on_other_cpu``: what to do on a CPU of another ISA class than the one the artifact was verified
    for: "check" runs its golden cases once on this machine (the result is cached per machine) and
    refuses it if they fail; "warn" warns; "trust" does neither. An artifact whose numerics cannot be
    right here (int8 with 8-bit weights, built for VNNI, on a CPU without VNNI) is refused whatever this says.
    """
    if on_other_cpu not in ON_OTHER_CPU:
        raise ValueError(f"on_other_cpu must be one of {', '.join(ON_OTHER_CPU)}, not {on_other_cpu!r}")
    path = Path(path)
    start = time.perf_counter()
    raw = verify_or_raise(path, allow_tampered=allow_tampered)
    if raw.get("kind") == BUNDLE_KIND:  # a conversion pipeline bundle: its components, loaded alike
        from .pipeline import load_pipeline

        return load_pipeline(path, threads=threads, allow_tampered=allow_tampered, compile_cache=compile_cache, on_other_cpu=on_other_cpu, manifest=raw)
    manifest = check_sections(raw, path, backends=BACKENDS)
    backend = get_backend(manifest.backend.name, for_build=False)
    where = placement(path, manifest)  # ArtifactError when it cannot be right on this CPU
    section, notes = backend.adapt_to_cpu(dict(manifest.backend.options), where.machine)
    try:
        runner = backend.load(path, section, threads=threads, cache_dir=compile_cache_dir(path, manifest, compile_cache))
    except RvcCompileError:
        raise
    except Exception as exc:  # options a backend cannot parse: the manifest is damaged (see run_graph)
        first = first_line(exc, 200)
        raise ArtifactError(f"{path}: the {manifest.backend.name} backend cannot load this artifact ({type(exc).__name__}: {first})") from None
    component = get_component(manifest.component.kind, for_build=False)
    voice = component.open(path, manifest, runner, time.perf_counter() - start)
    voice.cpu_notes = list(notes)
    for note in voice.cpu_notes:  # what this CPU changed (a bf16 artifact running in f32, ...)
        warnings.warn(f"{path}: {note}", RuntimeWarning, stacklevel=2)
    if where.other:
        check_on_this_cpu(voice, where, on_other_cpu)
    voice.load_time_s = time.perf_counter() - start
    return voice


__all__ = ["CompiledModel", "CompiledVoice", "load"]
