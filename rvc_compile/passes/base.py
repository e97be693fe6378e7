"""The pass interface and registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar


@dataclass
class GraphState:
    """What flows between passes: the torch model (before capture) or an ONNX file (after)."""

    spec: Any  # ModelSpec
    model: Any = None  # torch module with forward(*input_names)
    onnx_path: Path | None = None
    input_names: list[str] = field(default_factory=list)
    fixed_inputs: dict[str, Any] = field(default_factory=dict)  # inputs folded into constants, e.g. speaker
    notes: list[str] = field(default_factory=list)
    records: dict[str, Any] = field(default_factory=dict)  # structured results for the report, by pass name


class Pass:
    """One graph transformation. ``stage`` says whether it runs on the torch model or the ONNX graph."""

    name: ClassVar[str]
    stage: ClassVar[str]  # "torch" or "onnx"
    Params: ClassVar[type]
    description: ClassVar[str] = ""

    def __init__(self, params: Any):
        self.params = params

    def run(self, state: GraphState, workdir: Path) -> GraphState:  # pragma: no cover - interface
        raise NotImplementedError


PASSES: dict[str, type[Pass]] = {}


def register(cls: type[Pass]) -> type[Pass]:
    PASSES[cls.name] = cls
    return cls
