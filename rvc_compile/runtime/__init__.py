"""Load and run compiled artifacts in downstream apps: numpy + the backend's library, never torch.

    voice = rvc_compile.runtime.load("out/artifacts/demo-voice/1.0.0")
    audio = voice.infer(features, f0, speaker=0, noise="zero")   # float32 [T * hop] at voice.sample_rate
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact.manifest import check_sections, verify_or_raise
from ..backends import BACKENDS, get_backend
from ..errors import ArtifactError, InputError, RvcCompileError, first_line
from ..components.synthesizer.inputs import USER_INPUTS, NoiseSpec, graph_feed, make_noise, validate_inputs
from .placement import ON_OTHER_CPU, check_on_this_cpu, placement
from .windows import WindowPlan, run_windowed

GRAPH_INPUTS = (*USER_INPUTS, "excitation")


class CompiledVoice:
    """A loaded artifact. ``infer`` may be called from several threads at once.

    ``manifest`` has passed ``artifact.check_sections`` (``load`` and ``verify`` check it before any
    backend reads it; the build constructs it from its own manifest)."""

    def __init__(self, path: Path, manifest: dict[str, Any], runner: Any, load_time_s: float):
        self.path = path
        self.manifest = manifest
        self.runner = runner
        self.load_time_s = load_time_s
        model = manifest["model"]
        self.sample_rate: int = int(model["sample_rate"])
        self.hop_length: int = int(model["hop_length"])
        self.feature_dim: int = int(model["feature_dim"])
        self.has_f0: bool = bool(model["f0"])
        self.inter_channels: int = int(model["inter_channels"])
        self.n_speakers: int = int(model["n_speakers"])
        self.fixed_speaker: int | None = model.get("fixed_speaker")
        self.min_frames: int = int(model["frames"]["min"])
        window = model.get("window")
        try:
            self.window: WindowPlan | None = WindowPlan(**window) if window else None
            if self.window is not None:
                self.window.validate()
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"{path}: manifest.json: unusable model.window {window!r} ({exc})") from None
        # With windows, any length runs (each graph call is at most a window); without, the graph's range.
        self.max_frames: int | None = None if self.window else int(model["frames"]["max"])
        self.input_names: list[str] = [item["name"] for item in manifest["signature"]["inputs"]]
        unknown = [name for name in self.input_names if name not in GRAPH_INPUTS]
        if unknown:
            raise ArtifactError(f"{path}: the manifest's signature names unknown input {unknown[0]!r} (known: {', '.join(GRAPH_INPUTS)})")
        pitched = [name for name in self.input_names if name in ("f0", "source_noise", "excitation")]
        if pitched and not self.has_f0:
            raise ArtifactError(f"{path}: the manifest's signature has pitch input {pitched[0]!r} but model.f0 is false")
        unfed = [name for name in getattr(runner, "input_names", []) if name not in self.input_names]
        if unfed:
            raise ArtifactError(f"{path}: the graph takes input {unfed[0]!r}, which the manifest's signature does not list")
        self.backend_name: str = manifest["backend"]["name"]
        isa = manifest.get("isa") or {}
        self.built_for: str | None = isa.get("target")  # the CPU class it was built and verified for
        self.cpu_notes: list[str] = []  # what loading on this CPU changed (runtime.load fills it)

    @property
    def executed_precision(self) -> dict[str, int] | None:
        """Layers by the precision the backend actually runs them in ({'int8': 170, 'fp32': 1}), where the
        backend can tell (OpenVINO); None otherwise (ONNX Runtime runs the graph's own types)."""
        counts = getattr(self.runner, "executed_precisions", None)
        return counts() if counts is not None else None

    def graph_inputs(
        self, features: np.ndarray, f0: np.ndarray | None, speaker: int, noise: NoiseSpec, labels: dict[str, str] | None = None
    ) -> dict[str, np.ndarray]:
        source = str(self.path)
        features, f0 = validate_inputs(
            features, f0, feature_dim=self.feature_dim, has_f0=self.has_f0, speaker=speaker, n_speakers=self.n_speakers,
            source=source, min_frames=self.min_frames, max_frames=self.max_frames, labels=labels, sample_rate=self.sample_rate,
        )
        if self.fixed_speaker is not None and speaker != self.fixed_speaker:
            raise InputError(f"{source}: this artifact was built for speaker {self.fixed_speaker} only, not {speaker}")
        arrays = {
            "features": features[None],
            "speaker": np.array([speaker], dtype=np.int64),
            **make_noise(noise, features.shape[0], inter_channels=self.inter_channels, hop_length=self.hop_length, has_f0=self.has_f0),
        }
        if f0 is not None:
            arrays["f0"] = f0[None]
        return graph_feed(arrays, self.input_names, hop_length=self.hop_length, sample_rate=self.sample_rate)

    def infer(
        self, features: np.ndarray, f0: np.ndarray | None = None, speaker: int = 0, noise: NoiseSpec = "zero",
        labels: dict[str, str] | None = None,
    ) -> np.ndarray:
        """Audio float32 [T * hop] at ``sample_rate`` for features [T, C] and f0 [T] (Hz, 0 = unvoiced).

        ``labels`` optionally maps ``features``/``f0`` to the files they came from, for error messages.
        """
        inputs = self.graph_inputs(features, f0, speaker, noise, labels)
        if self.window is not None:
            audio = run_windowed(self.run_graph, inputs, self.window, self.hop_length, self.min_frames)
        else:
            audio = self.run_graph(inputs)
        if not np.isfinite(audio).all():
            # Never hand back silent garbage: inputs far outside what the model saw overflow inside it.
            largest = float(np.abs(inputs["features"]).max())
            raise InputError(f"{labels.get('features', self.path) if labels else self.path}: the output has NaN or Inf for these inputs (features reach {largest:.3g} in magnitude; content features are normally within +-100)")
        return audio

    def run_graph(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Run the graph on prepared inputs (names as in the manifest's signature)."""
        try:
            output = self.runner.run(inputs)
        except RvcCompileError:
            raise
        except Exception as exc:
            # Inputs were checked against the manifest, so a backend failure means the graph and its
            # manifest disagree (a damaged or resealed artifact). Backends raise their own exception
            # types (onnxruntime's derive from Exception only), so this boundary names the artifact.
            first = first_line(exc, 200, type(exc).__name__)
            frames = inputs["features"].shape[1] if "features" in inputs else "?"
            raise ArtifactError(f"{self.path}: the {self.backend_name} graph failed on {frames} frames ({type(exc).__name__}: {first})") from None
        return np.asarray(output, dtype=np.float32).reshape(-1)


def compile_cache_dir(path: Path, manifest: dict[str, Any], override: str | Path | None = None) -> Path | None:
    """Where the backend keeps compiled blobs for this artifact: ``override`` ("none" disables), else the
    artifact's recorded policy (target.compile_cache): the user's build cache, beside the artifact, none.

    "user" is the build cache's area ``compiled/<backend>`` (``Store.area``), which ``rvc-compile cache``
    lists, sizes and prunes like its entries. A cache that cannot be written only costs the cache: the
    artifact loads without one, with a warning."""
    if override is not None:
        return None if str(override) == "none" else Path(override)
    policy = manifest.get("target", {}).get("compile_cache", "none")
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
) -> CompiledVoice:
    """Load an artifact folder after checking every file's hash (``allow_tampered`` skips the refusal).

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
    manifest = check_sections(verify_or_raise(path, allow_tampered=allow_tampered), path, backends=BACKENDS)
    backend = get_backend(manifest["backend"]["name"], for_build=False)
    where = placement(path, manifest)  # ArtifactError when it cannot be right on this CPU
    section, notes = backend.adapt_to_cpu(manifest["backend"], where.machine)
    try:
        runner = backend.load(path, section, threads=threads, cache_dir=compile_cache_dir(path, manifest, compile_cache))
    except RvcCompileError:
        raise
    except Exception as exc:  # options a backend cannot parse: the manifest is damaged (see run_graph)
        first = first_line(exc, 200)
        raise ArtifactError(f"{path}: the {manifest['backend']['name']} backend cannot load this artifact ({type(exc).__name__}: {first})") from None
    voice = CompiledVoice(path, manifest, runner, time.perf_counter() - start)
    voice.cpu_notes = list(notes)
    for note in voice.cpu_notes:  # what this CPU changed (a bf16 artifact running in f32, ...)
        warnings.warn(f"{path}: {note}", RuntimeWarning, stacklevel=2)
    if where.other:
        check_on_this_cpu(voice, where, on_other_cpu)
    voice.load_time_s = time.perf_counter() - start
    return voice


__all__ = ["CompiledVoice", "load"]
