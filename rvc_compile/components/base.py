"""The component adapter: what one network family (the RVC synthesizer, a content encoder, a pitch
estimator) tells the pipeline, so that build, verify, bench and the runtime work on any of them.

An adapter is one class. Its methods come in two kinds:

- build side (may import torch inside the method): ``load`` the source weights, ``build_model`` the
  fp32 torch model the graph is captured from and checked against;
- everywhere (numpy only, so the runtime, ``verify`` and ``bench`` use them without torch): the
  ``signature``, ``example_inputs`` and ``graph_feed`` (user-level arrays -> the graph's inputs),
  ``compare`` (accuracy metrics) with ``BUDGET_KEYS``/``DEFAULT_BUDGETS``, ``spec_from_manifest`` and
  ``open`` (a loaded artifact's object for downstream apps).

Arrays: "user-level" inputs carry a batch dimension of 1 and are what an app hands the runtime (for the
synthesizer: features, f0, speaker and the explicit noise draws); the graph's inputs may differ (the
synthesizer's host-side NSF source turns f0 into ``excitation``). Every time axis counts the
component's frames (``frames_per_second``); an input of ``k`` samples per frame declares it in its shape
as ``"frames*k"``. Any other name in a shape is a dynamic axis that is not the time axis (the content
encoder's output ``feature_frames``, a function of its input's samples).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from ..errors import ArtifactError

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: its name, dtype and shape (ints, or "frames" / "frames*k")."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def time_axis(self) -> tuple[int, int] | None:
        """(axis, samples per frame) of the time axis ("frames" or "frames*k"), or None when it has none."""
        for axis, dim in enumerate(self.shape):
            if dim == "frames" or (isinstance(dim, str) and dim.startswith("frames*")):
                per_frame = int(dim.split("*", 1)[1]) if "*" in dim else 1
                return axis, per_frame
        return None

    def named_axes(self) -> dict[int, str]:
        """Every dynamic axis (a name in the shape, the time axis included): axis -> name."""
        return {axis: dim for axis, dim in enumerate(self.shape) if isinstance(dim, str)}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TensorSpec":
        return cls(str(data["name"]), str(data["dtype"]), tuple(data["shape"]))


@dataclass(frozen=True)
class Signature:
    """The graph's named inputs and outputs; dynamic axes count ``unit`` (frames, ``frames_per_second``)."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    frames_per_second: float
    unit: str = "frames"

    @property
    def input_names(self) -> list[str]:
        return [tensor.name for tensor in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [tensor.name for tensor in self.outputs]

    def time_axes(self) -> dict[str, tuple[int, int]]:
        """For every tensor with a time axis: (axis, samples per frame)."""
        return {t.name: axis for t in (*self.inputs, *self.outputs) if (axis := t.time_axis()) is not None}

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "axes": {"frames": {"unit": self.unit, "per_second": self.frames_per_second}},
        }


@dataclass(frozen=True)
class LoadedSource:
    """A component's source weights, read and validated: what the build starts from."""

    path: Path
    sha256: str
    spec: Any  # the component's own typed description (ModelSpec for the synthesizer); has to_dict()
    weights: Mapping[str, Any]  # fp32 state dict of the inference model
    description: Mapping[str, Any]  # the manifest's source section beyond file name, hash and spec (layout ...)
    cache_inputs: Mapping[str, str]  # hashes of every file read: the key of everything built from it


class Component:
    """Base class of the adapters; see the module docstring. Subclasses set ``KIND`` and override."""

    KIND: ClassVar[str] = ""
    OUTPUT: ClassVar[str] = "output"
    # budget key -> (metric key, "min" | "max"): how a recipe's accuracy section reads the metrics
    BUDGET_KEYS: ClassVar[Mapping[str, tuple[str, str]]] = {}
    DEFAULT_BUDGETS: ClassVar[Mapping[str, Mapping[str, float | None]]] = {}
    # verify.parity's gate on fp32 graphs: the largest relative L2 error against the eager reference at
    # every checked length (a network whose output is a sharp function of deep features may need more).
    FP32_MAX_RELATIVE_ERROR: ClassVar[float] = 1e-4
    # The length (frames, clamped to the recipe's range) a dynamic graph is captured at. An exporter
    # specialises any size that is 0 or 1 at that length, so it must give every internal axis at least 2.
    TRACE_FRAMES: ClassVar[int] = 64

    # -- source and model (build side) ----------------------------------------------------------

    def load(self, source: Any) -> LoadedSource:
        """Read and validate the recipe's ``source`` section; one-line errors naming the file."""
        raise NotImplementedError

    def spec_from_dict(self, data: Mapping[str, Any], source: str) -> Any:
        raise NotImplementedError

    def build_model(self, spec: Any, weights: Mapping[str, Any] | None) -> Any:
        """The fp32 torch module (``forward(*inputs)`` in ``input_names(spec)`` order), in eval mode."""
        raise NotImplementedError

    def input_names(self, spec: Any) -> list[str]:
        raise NotImplementedError

    def check_shapes(self, spec: Any, shapes: Any) -> None:
        """Refuse (RecipeError naming the key) a recipe ``shapes`` section this network cannot take, before
        anything is built (the content encoder: fewer input samples than one output frame reads)."""

    def check_capture(self, spec: Any, capture: Any, shapes: Any) -> None:
        """Refuse (RecipeError naming the key) a recipe ``capture`` section this network cannot be exported
        with at those ``shapes``, before anything is built (RMVPE: dynamo cannot export its BiGRU over a
        dynamic frame axis)."""

    # -- graph and inputs (numpy only) ----------------------------------------------------------

    def frames_per_second(self, spec: Any) -> float:
        raise NotImplementedError

    def signature(self, spec: Any, input_names: list[str]) -> Signature:
        raise NotImplementedError

    def output_samples(self, spec: Any, frames: int) -> int:
        """Length of the (flattened) output at ``frames``: what every check expects."""
        raise NotImplementedError

    def example_inputs(self, spec: Any, frames: int, seed: int, *, noise: str | None = None, speaker: int = 0) -> Arrays:
        """Deterministic user-level inputs at ``frames`` (``noise``: the draws, default ``seed:{seed}``)."""
        raise NotImplementedError

    def graph_feed(self, spec: Any, arrays: Mapping[str, np.ndarray], names: list[str]) -> Arrays:
        """The graph's inputs ``names`` from user-level ``arrays`` (by default: the same arrays)."""
        return {name: arrays[name] for name in names}

    def calibration_feeds(self, spec: Any, recipe: Any, names: list[str], *, static: int | None, speaker: int,
                          cache_dir: Path | None, log: Callable[[str], None]) -> tuple[list[Arrays], str, str]:
        """int8 calibration: the graph feeds, their content hash (keys the backend stage) and a description."""
        raise NotImplementedError

    # -- accuracy -------------------------------------------------------------------------------

    def compare(self, spec: Any, reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
        """Every accuracy metric of ``candidate`` against ``reference`` (keys named in ``BUDGET_KEYS``)."""
        raise NotImplementedError

    def default_budget(self, precision: str) -> dict[str, float | None]:
        return dict(self.DEFAULT_BUDGETS[precision])

    def output_sample_rate(self, spec: Any) -> int | None:
        """The output's sample rate when it is audio (reports plot it; sensitivity scores it); else None."""
        return None

    def check_precision(self, spec: Any, input_names: list[str], precision: str) -> None:
        """Refuse (RecipeError) a precision this graph cannot take as captured (e.g. a source that must stay fp32)."""

    def fixed_fp32_nodes(self, spec: Any, graph: Any, precision: str) -> list[str]:
        """Nodes of the captured ONNX ``graph`` (an ``onnx.ModelProto``, node names as ``precision.layers``
        gives them) that stay fp32 in a ``precision`` build whatever the recipe's policy says; default none."""
        return []

    def windowable(self, spec: Any, input_names: list[str]) -> bool:
        """Whether cutting the inputs into overlapped windows gives the same output (the runtime's long inputs)."""
        return False

    # -- costs ----------------------------------------------------------------------------------

    def flops_per_second(self, spec: Any, weights: Mapping[str, Any]) -> dict[str, float]:
        """Multiply-adds x2 per second of input, ``{"total": ..., <part>: ...}``."""
        raise NotImplementedError

    def describe(self, spec: Any) -> str:
        """One line for logs and reports: what this network is."""
        return self.KIND

    def profile_group(self, spec: Any, name: str) -> str | None:
        """The module a weight (or node) name belongs to in a per-module profile (``measure.profile``), None
        when it names none. Default: a weight's top-level module (``conv_in.weight`` -> ``conv_in``)."""
        head, dot, rest = name.partition(".")
        return head if dot and head.isidentifier() and ("weight" in rest or "bias" in rest) else None

    def parameter_count(self, weights: Mapping[str, Any]) -> int:
        return int(sum(int(np.prod(tuple(value.shape))) for value in weights.values()))

    # -- artifact and runtime -------------------------------------------------------------------

    def model_section(self, spec: Any, input_names: list[str], fixed_inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The manifest's ``model`` section beyond frames and window: what the runtime needs to run it."""
        return {}

    def check_model(self, model: Mapping[str, Any], read: Any) -> None:
        """Check the manifest's ``model`` fields this component's runtime reads (``read``: an
        ``artifact.schema.SectionReader``, whose errors name the file and key)."""

    def check_signature(self, input_names: list[str], read: Any) -> None:
        """Check the manifest's graph inputs are ones this component's runtime can feed."""

    def spec_from_manifest(self, manifest: Mapping[str, Any], path: Path) -> Any:
        """The spec an artifact was built from (``spec_section``), checked against the manifest's model
        section (``check_spec``); ArtifactError naming the artifact and the section otherwise."""
        from ..errors import RvcCompileError

        section = self.spec_section(manifest)
        try:
            data = manifest
            for key in section.split("."):
                data = data[key]
            spec = self.spec_from_dict(data, source=f"{path}: manifest.json {section}")
        except RvcCompileError as exc:
            raise ArtifactError(f"{path}: manifest.json: {section}: {exc.problem or exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"{path}: manifest.json: {section} does not describe a {self.KIND} ({type(exc).__name__}: {exc})") from None
        problem = self.check_spec(spec, manifest["model"])
        if problem:
            raise ArtifactError(f"{path}: manifest.json: {section} {problem}")
        return spec

    def spec_section(self, manifest: Mapping[str, Any]) -> str:
        """The dotted manifest key holding the spec (format 4: ``component.spec``)."""
        return "component.spec"

    def check_spec(self, spec: Any, model: Mapping[str, Any]) -> str | None:
        """How ``spec`` disagrees with the manifest's (checked) model section, or None."""
        return None

    def open(self, path: Path, manifest: Mapping[str, Any], runner: Any, load_time_s: float) -> Any:
        """The object ``runtime.load`` returns (a ``runtime.CompiledModel``)."""
        from ..runtime.model import CompiledModel

        return CompiledModel(path, manifest, runner, load_time_s, component=self)


def budget_failures(component: Component, metrics: Mapping[str, Any], budget: Mapping[str, Any]) -> list[str]:
    """Every way ``metrics`` break ``budget`` under ``component``'s budget keys (empty when they hold)."""
    from ..verify.metrics import check_budget

    return check_budget(dict(metrics), dict(budget), keys=component.BUDGET_KEYS)

