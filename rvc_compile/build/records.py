"""What flows between build stages: frozen records, each the output of one stage and the input of the next.

    BuildContext (fixed for the build) ->  load: SourceRecord  ->  capture: GraphRecord
        -> each ONNX pass: GraphRecord  ->  precision + backend: CompiledRecord  ->  artifact

A stage is a function ``(context, record) -> record`` (``build.steps``); nothing is kept between calls,
so a stage can only run once what it reads exists.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..machine import library_versions


@dataclass(frozen=True)
class BuildContext:
    """Everything fixed for one build: the recipe, its component and backend, where and how it checks."""

    recipe: Any
    component: Any  # components.Component
    backend: Any  # a module implementing backends.base.Backend
    stages: Any  # build.stages.StageRunner
    workdir: Path
    log: Callable[[str], None]
    target_isa: Any  # machine.IsaClass the artifact is built and checked for
    machine_isa: Any  # this machine's class
    emulation: Mapping[str, str]  # env that makes the backend's kernels dispatch as on target_isa ({} natively)
    torch_passes: tuple[tuple[Any, Any], ...]
    onnx_passes: tuple[tuple[Any, Any], ...]
    choice: Mapping[str, Any] | None = None  # precision: auto's record so far
    started: float = field(default_factory=time.perf_counter)

    @property
    def shapes(self) -> Any:
        return self.recipe.shapes

    @property
    def static(self) -> int | None:
        return self.shapes.chunk_frames if self.shapes.mode == "static" else None

    @property
    def lengths(self) -> list[int]:
        return self.shapes.check_lengths()

    @property
    def threads(self) -> int:
        return int(self.recipe.target.threads)


@dataclass(frozen=True)
class SourceRecord:
    """load: the component's validated source weights and the eager reference they define."""

    loaded: Any  # components.LoadedSource
    reference: "Reference"


@dataclass(frozen=True)
class GraphRecord:
    """capture and each ONNX pass: an fp32 graph in the cache, checked against ``reference``.

    ``spec``/``weights``/``reference`` are the source's, or those of the model a torch pass derived
    (``prune`` changes the architecture: the artifact implements the derived model and is checked on it)."""

    entry: Any  # cache entry holding the graph file
    key: str
    spec: Any
    weights: Mapping[str, Any]
    reference: "Reference"
    input_names: tuple[str, ...]
    fixed_inputs: Mapping[str, Any]
    passes: tuple[Mapping[str, Any], ...]
    checks: tuple[Mapping[str, Any], ...]
    speaker: int


@dataclass(frozen=True)
class CompiledRecord:
    """precision + backend: the backend's files in the cache, checked at every length."""

    graph: GraphRecord
    entry: Any
    key: str
    section: Mapping[str, Any]  # the manifest's backend section
    plan: Mapping[str, Any]  # precision.PrecisionPlan.summary()
    accuracy_aware: Mapping[str, Any] | None
    checks: tuple[Mapping[str, Any], ...]


class Reference:
    """The fp32 eager reference of a component, built on first use (a fully cached build never needs it).

    Every stage is checked on the same inputs, so each output is computed once; with a build cache and
    a model key, outputs are shared through the cache by every recipe built from the same weights."""

    def __init__(self, component: Any, spec: Any, weights: Mapping[str, Any], threads: int, *, stages: Any = None, model_key: str | None = None):
        self.component, self.spec, self.weights, self.threads = component, spec, weights, threads
        self.stages, self.model_key = stages, model_key
        self.names = component.input_names(spec)
        self._model = None
        self._outputs: dict[str, np.ndarray] = {}

    def _compute(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        import torch

        if self._model is None:
            torch.set_num_threads(max(1, self.threads))
            self._model = self.component.build_model(self.spec, self.weights)
        with torch.inference_mode():
            return self._model(*[torch.from_numpy(inputs[name]) for name in self.names]).numpy()

    def p50_ms(self, inputs: Mapping[str, np.ndarray], *, repeat: int, warmup: int) -> float:
        """Median wall time of the eager fp32 reference on ``inputs`` (the baseline of speed-up goals)."""
        for _ in range(warmup):
            self._compute(inputs)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            self._compute(inputs)
            times.append(time.perf_counter() - start)
        return float(np.median(times) * 1000.0)

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        key = hashlib.sha256(b"".join(np.ascontiguousarray(inputs[name]).tobytes() for name in self.names)).hexdigest()
        if key in self._outputs:
            return self._outputs[key]
        if self.stages is None or self.model_key is None:
            self._outputs[key] = self._compute(inputs)
            return self._outputs[key]
        # An eager run of 10 s of audio costs as much as the rest of a check: compute each once per cache.
        from ..cache.store import stage_key
        from .stages import code_fingerprint

        cache_key = stage_key("reference-output", inputs={"model": self.model_key, "inputs": key},
                              libraries={**library_versions("torch", "numpy"), "rvc_compile_code": code_fingerprint()})

        def produce(folder: Path) -> None:
            np.save(folder / "output.npy", self._compute(inputs))

        entry, _ = self.stages.store.get_or_create(cache_key, produce, stage="reference-output")
        with entry:
            self._outputs[key] = np.load(entry.file("output.npy"), allow_pickle=False)
        return self._outputs[key]


def pass_params(entries: tuple[tuple[Any, Any], ...]) -> list[dict[str, Any]]:
    return [{"name": entry.name, **dataclasses.asdict(entry.params)} for entry, _ in entries]
