"""What a model costs: FLOPs (2 per multiply-add) and parameters.

Two counters, one per kind of model; everything else that reports FLOPs calls one of them:

- a torch model: ``torch_flops`` runs one forward under torch's ``FlopCounterMode``, which counts every
  convolution, transposed convolution and matrix product at the dispatcher (the attention products
  too, which no module hook sees) and credits it, through its module hooks, to every module it ran in.
  On the meta device this costs milliseconds and no weights.
- a graph (ONNX or OpenVINO IR): ``op_flops`` counts one OpenVINO op from its shapes, after
  ``read_graph`` has read the file and propagated concrete input shapes through it, so a pruned or
  quantized graph is counted as it is, not as the checkpoint it came from.

Convolutions, transposed convolutions and matrix products are >99 % of the synthesizer's work; both
counters count those only. torch and openvino are imported inside the functions that need them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

# OpenVINO op types whose FLOPs ``op_flops`` counts.
FLOP_OPS = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul")


# -- torch models ----------------------------------------------------------------------------------

def torch_flops(model: Any, inputs: list[Any]) -> tuple[float, dict[str, float]]:
    """FLOPs of ``model(*inputs)``: the total, and per module path (``dec.ups.0``; every module that ran
    a counted op, each counting its submodules' work too). Runs under ``torch.inference_mode``."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(*inputs)
    # Keys are "<root class>.<module path>", the root's class name alone, and "Global" (everything).
    by_module = {name.split(".", 1)[1]: float(sum(ops.values())) for name, ops in counter.get_flop_counts().items() if "." in name}
    return float(counter.get_total_flops()), by_module


def leaf_modules(by_module: Mapping[str, float]) -> dict[str, float]:
    """The entries of ``torch_flops``'s per-module counts that have no counted submodule."""
    return {name: value for name, value in by_module.items() if not any(other.startswith(name + ".") for other in by_module)}


def synthesizer_inputs(spec: Any, frames: int) -> list[Any]:
    """Inputs of the eager synthesizer for ``frames`` frames, on torch's current default device."""
    import torch

    inputs = [torch.zeros(1, frames, spec.feature_dim)]
    if spec.f0:
        inputs.append(torch.full((1, frames), 200.0))
    inputs += [torch.zeros(1, dtype=torch.long), torch.zeros(1, spec.inter_channels, frames)]
    if spec.f0:
        inputs.append(torch.zeros(1, frames * spec.hop_length))
    return inputs


def synthesizer_flops(spec: Any, frames: int, state_dict: Mapping[str, Any] | None = None) -> dict[str, float]:
    """FLOPs of the synthesizer for ``frames`` frames, per top-level module and ``total``.

    Without ``state_dict`` it is counted on the meta device (the shapes come from ``spec``); with one,
    the weights are loaded (strictly) into a real model first, so a state dict that does not fit fails.
    """
    import torch

    from ..components.synthesizer.model import build_model

    if state_dict is None:
        with torch.device("meta"):
            total, by_module = torch_flops(build_model(spec), synthesizer_inputs(spec, frames))
    else:
        total, by_module = torch_flops(build_model(spec, dict(state_dict)), synthesizer_inputs(spec, frames))
    per_module = {name: value for name, value in by_module.items() if "." not in name}
    per_module["total"] = total
    return per_module


def parameter_counts(state_dict: Mapping[str, Any]) -> dict[str, int]:
    """Parameters per top-level module of a state dict, and ``total``."""
    counts: dict[str, int] = {}
    for key, value in state_dict.items():
        module = key.split(".")[0]
        counts[module] = counts.get(module, 0) + int(value.numel())
    counts["total"] = sum(counts.values())
    return counts


# -- graphs ----------------------------------------------------------------------------------------

def read_graph(model_path: str | Path, input_shapes: Mapping[str, list[int]]) -> Any:
    """An ONNX or OpenVINO IR graph read by OpenVINO, its inputs set to ``input_shapes`` (names the
    graph lacks are ignored), so every op has concrete shapes."""
    import openvino as ov

    model = ov.Core().read_model(str(model_path))
    names = {port.get_any_name() for port in model.inputs}
    model.reshape({name: list(shape) for name, shape in input_shapes.items() if name in names})
    return model


def op_flops(op: Any) -> float:
    """FLOPs of one OpenVINO op of a ``FLOP_OPS`` type, from its static shapes."""
    kind = op.get_type_name()
    out = [int(d) for d in op.get_output_shape(0)]
    data = [int(d) for d in op.get_input_shape(0)]
    weight = [int(d) for d in op.get_input_shape(1)]
    if kind == "Convolution":  # weight [Cout, Cin, *K]
        return 2.0 * math.prod(out) * math.prod(weight[1:])
    if kind == "GroupConvolution":  # weight [G, Cout/G, Cin/G, *K]
        return 2.0 * math.prod(out) * math.prod(weight[2:])
    if kind == "ConvolutionBackpropData":  # weight [Cin, Cout, *K]: every input element feeds Cout*K outputs
        return 2.0 * math.prod(data) * math.prod(weight[1:])
    inner = data[-2] if op.get_attributes().get("transpose_a") else data[-1]
    return 2.0 * math.prod(out) * inner


def graph_flops(model_path: str | Path, input_shapes: Mapping[str, list[int]]) -> float:
    """FLOPs of an ONNX or OpenVINO IR graph at concrete input shapes."""
    model = read_graph(model_path, input_shapes)
    return float(sum(op_flops(op) for op in model.get_ordered_ops() if op.get_type_name() in FLOP_OPS))
