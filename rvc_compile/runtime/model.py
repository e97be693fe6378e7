"""A loaded artifact of any component: its graph behind the backend's runner, and what ``verify``,
``bench`` and the placement check need to run it generically. numpy only (never torch).

``run_case(arrays)`` runs stored or example user-level inputs (batch dimension 1) through the
component's whole runtime path (for the synthesizer: validation, the host-side NSF source, windows) and
returns the flattened output; components subclass it with their app-facing call (``CompiledVoice.infer``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import ArtifactError, InputError, RvcCompileError, first_line


class CompiledModel:
    """A loaded artifact. ``run_graph`` and ``run_case`` may be called from several threads at once."""

    def __init__(self, path: Path, manifest: Mapping[str, Any], runner: Any, load_time_s: float, *, component: Any = None):
        from ..artifact.schema import parse_manifest
        from ..components import get_component

        self.path = Path(path)
        self.manifest = parse_manifest(manifest, self.path)  # typed and checked (a no-op when it already is)
        self.runner = runner
        self.load_time_s = load_time_s
        self.component = component or get_component(self.manifest.component.kind, for_build=False)
        self.spec = self.component.spec_from_manifest(self.manifest, self.path)
        self.min_frames: int = self.manifest.model.frames.min
        self.max_frames: int | None = self.manifest.model.frames.max
        self.frames_per_second: float = float(self.component.frames_per_second(self.spec))
        self.input_names: list[str] = list(self.manifest.input_names)
        self.signature = self.component.signature(self.spec, self.input_names)
        unfed = [name for name in getattr(runner, "input_names", []) if name not in self.input_names]
        if unfed:
            raise ArtifactError(f"{self.path}: the graph takes input {unfed[0]!r}, which the manifest's signature does not list")
        self.backend_name: str = self.manifest.backend.name
        isa = self.manifest.isa
        self.built_for: str | None = isa.target if isa else None  # the CPU class it was built and verified for
        self.cpu_notes: list[str] = []  # what loading on this CPU changed (runtime.load fills it)

    @property
    def kind(self) -> str:
        return self.component.KIND

    @property
    def executed_precision(self) -> dict[str, int] | None:
        """Layers by the precision the backend actually runs them in ({'int8': 170, 'fp32': 1}), where the
        backend can tell (OpenVINO); None otherwise (ONNX Runtime runs the graph's own types)."""
        counts = getattr(self.runner, "executed_precisions", None)
        return counts() if counts is not None else None

    def frames_for(self, seconds: float) -> int:
        """The frames of ``seconds`` of input, clamped to what this artifact accepts."""
        frames = max(int(round(seconds * self.frames_per_second)), self.min_frames)
        return frames if self.max_frames is None else min(frames, self.max_frames)

    def prefer_length(self, frames: int) -> None:
        """Inputs of exactly ``frames`` frames will be run on a static-shape compilation where the backend
        has them (OpenVINO; compiled on first use); elsewhere nothing changes."""
        add = getattr(self.runner, "add_static_frames", None)
        if add is not None and not self.manifest.model.frames.static:
            add(int(frames))

    def output_seconds(self, frames: int) -> float:
        """Seconds of output for ``frames`` input frames (a real-time block renders only its last frames)."""
        return frames / self.frames_per_second

    def example_inputs(self, frames: int, seed: int, noise: str | None = None) -> dict[str, np.ndarray]:
        """The component's deterministic user-level inputs at ``frames`` (what latency runs time)."""
        return self.component.example_inputs(self.spec, frames, seed, noise=noise, speaker=self.default_speaker)

    @property
    def default_speaker(self) -> int:
        return 0

    def compare(self, reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
        return self.component.compare(self.spec, reference, candidate)

    def run_case(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """User-level ``arrays`` -> the flattened output (checked: the graph's frame range, finite output)."""
        frames = _frames_of(arrays, self.signature)
        if frames is not None and not self.min_frames <= frames <= (self.max_frames or frames):
            raise InputError(f"{self.path}: {frames} frames; this artifact accepts {self.min_frames} to {self.max_frames}")
        output = self.run_graph(self.component.graph_feed(self.spec, arrays, self.input_names))
        if not np.isfinite(output).all():
            raise InputError(f"{self.path}: the output has NaN or Inf for these inputs")
        return output

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
            frames = _frames_of(inputs, self.signature)
            raise ArtifactError(f"{self.path}: the {self.backend_name} graph failed on {frames if frames is not None else '?'} frames ({type(exc).__name__}: {first})") from None
        return np.asarray(output, dtype=np.float32).reshape(-1)


def _frames_of(arrays: Mapping[str, np.ndarray], signature: Any) -> int | None:
    """The frame count of ``arrays``: the time axis of the first input with one."""
    for tensor in signature.inputs:
        axis = tensor.time_axis()
        if axis is not None and tensor.name in arrays:
            return int(np.shape(arrays[tensor.name])[axis[0]]) // axis[1]
    return None
