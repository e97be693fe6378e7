"""Graph capture: a component's torch model -> ONNX with a symbolic time axis (checked by ``verify.parity``).

The dynamo exporter (``torch.export`` underneath) is the default: it keeps the frame count symbolic
end to end. The TorchScript exporter is the fallback a recipe can choose; it traces at one length,
so ``dynamic_axes`` are declared and the multi-length check is what proves the graph generalises.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..components import Component, get_component
from ..errors import BuildError, first_line


def graph_inputs(spec: Any, names: list[str], frames: int, seed: int, speaker: int = 0, *, component: Component | None = None) -> dict[str, np.ndarray]:
    """The component's example inputs for the graph's ``names`` at ``frames`` (default: the synthesizer)."""
    component = component or get_component("synthesizer")
    return component.graph_feed(spec, component.example_inputs(spec, frames, seed, speaker=speaker), names)


def _var_positional(model: Any) -> bool:
    import inspect

    parameters = inspect.signature(model.forward).parameters.values()
    return any(parameter.kind is inspect.Parameter.VAR_POSITIONAL for parameter in parameters)


def dynamic_frames(model: Any, names: list[str], axes: dict[str, tuple[int, int]], min_frames: int, max_frames: int) -> Any:
    """``torch.export``'s dynamic_shapes for ``model``: one symbolic frame count shared by every input's
    time axis (``axes``: name -> (axis, samples per frame), as ``Signature.time_axes`` gives them)."""
    import torch

    dim = torch.export.Dim("frames", min=max(min_frames, 2), max=max_frames)
    shapes = tuple({axes[name][0]: dim * axes[name][1] if axes[name][1] > 1 else dim} if name in axes else None for name in names)
    return (shapes,) if _var_positional(model) else shapes  # forward(*inputs): one parameter, so the specs nest in a 1-tuple


def export_program(
    model: Any, spec: Any, names: list[str], out_path: Path, *, min_frames: int, max_frames: int, static_frames: int | None = None,
    trace_frames: int = 64, component: Component | None = None,
) -> dict[str, Any]:
    """``torch.export`` the model (forward(*names)) with the same symbolic frame count as ``export_onnx``
    and save the program (``torch.export.save``) for backends that compile it (AOTInductor). Returns what
    they need to export it again after rewriting it (``program_shapes``): inputs, time axes, frame range."""
    import torch

    component = component or get_component("synthesizer")
    signature = component.signature(spec, names)
    frames = static_frames or min(max(trace_frames, min_frames), max_frames)
    example = tuple(torch.from_numpy(a) for a in graph_inputs(spec, names, frames, seed=0, component=component).values())
    axes = signature.time_axes()
    shapes = {"names": list(names), "axes": {name: list(axes[name]) for name in names if name in axes}, "example_frames": frames,
              "min_frames": min_frames, "max_frames": max_frames, "static_frames": static_frames}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(model.eval(), example, dynamic_shapes=program_shapes(model, shapes))
            torch.export.save(program, str(out_path))
    except Exception as exc:  # torch.export raises many types; the message is what the user needs
        raise BuildError(f"capture (torch.export program) failed: {type(exc).__name__}: {first_line(exc, 300, type(exc).__name__)}") from exc
    return shapes


def program_shapes(model: Any, shapes: dict[str, Any]) -> Any:
    """The dynamic_shapes of ``export_program``'s record (None for a static graph)."""
    if shapes["static_frames"] is not None:
        return None
    axes = {name: tuple(axis) for name, axis in shapes["axes"].items()}
    return dynamic_frames(model, list(shapes["names"]), axes, shapes["min_frames"], shapes["max_frames"])


def export_onnx(
    model: Any,
    spec: Any,
    names: list[str],
    out_path: Path,
    *,
    exporter: str = "dynamo",
    opset: int = 18,
    min_frames: int = 2,
    max_frames: int = 3000,
    static_frames: int | None = None,
    trace_frames: int = 64,
    component: Component | None = None,
) -> Path:
    """Export ``model`` (forward(*names)) to ONNX; dynamic frames unless ``static_frames`` is set.

    Input and output names and their time axes come from the component's signature (default: the
    synthesizer); every time axis shares one symbolic frame count."""
    import torch

    component = component or get_component("synthesizer")
    signature = component.signature(spec, names)
    frames = static_frames or min(max(trace_frames, min_frames), max_frames)
    example = tuple(torch.from_numpy(a) for a in graph_inputs(spec, names, frames, seed=0, component=component).values())
    axes = signature.time_axes()
    outputs = signature.output_names
    log = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            warnings.simplefilter("ignore")
            logging.getLogger("torch").setLevel(logging.ERROR)
            if exporter == "dynamo":
                dynamic_shapes = None if static_frames is not None else dynamic_frames(model, names, axes, min_frames, max_frames)
                program = torch.onnx.export(
                    model, example, dynamic_shapes=dynamic_shapes, input_names=names, output_names=outputs,
                    dynamo=True, opset_version=opset, optimize=True, verbose=False,
                )
                program.save(str(out_path))
            elif exporter == "torchscript":
                dynamic_axes = None
                if static_frames is None:
                    dynamic_axes = {name: {axis: "frames" if per_frame == 1 else "samples"} for name, (axis, per_frame) in axes.items()}
                    for tensor in (*signature.inputs, *signature.outputs):  # other dynamic axes keep their own names
                        for axis, dim in tensor.named_axes().items():
                            if tensor.name not in axes or axes[tensor.name][0] != axis:
                                dynamic_axes.setdefault(tensor.name, {})[axis] = dim
                torch.onnx.export(
                    model, example, str(out_path), input_names=names, output_names=outputs,
                    dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False,
                )
            else:
                raise BuildError(f"capture.exporter: unknown exporter {exporter!r}")
    except BuildError:
        raise
    except Exception as exc:  # the exporters raise many types; the message is what the user needs
        detail = first_line(exc, 300, type(exc).__name__)
        raise BuildError(f"capture ({exporter} exporter) failed: {type(exc).__name__}: {detail}") from exc
    if not out_path.exists():
        raise BuildError(f"capture ({exporter} exporter) wrote no graph to {out_path}")
    import onnx

    from ..precision.layers import name_layers

    graph = onnx.load(str(out_path))
    name_layers(graph)
    onnx.save(graph, str(out_path))
    return out_path
