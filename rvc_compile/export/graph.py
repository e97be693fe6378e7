"""One ONNX file for a client: the front (``export.front``) joined to the artifact's graph, the output
shaped and named as the client reads it, the client's unused inputs declared, the metadata written.

The artifact's graph is kept as built (every node and initializer, prefixed ``synth/`` so no name can
clash with the front's); only its inputs are now fed by the front and its output post-processed.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Sequence

from ..errors import ExportError, first_line
from .front import NOISE_MODES, PRIOR_NOISE_INPUT, SOURCE_NOISE_INPUT, build_front, example_front_inputs, front_inputs, output_name
from .profiles import FRAMES, SAMPLES, Profile, vc_client_metadata

SYNTH_PREFIX = "synth/"
TRACE_FRAMES = 24  # the front has no length-dependent shapes; any length above a few frames traces it
_ONNX_TYPES = {"float32": 1, "float16": 10, "int64": 7}  # onnx.TensorProto: FLOAT, FLOAT16, INT64


def default_opset(model: Any) -> int:
    """The artifact graph's ai.onnx opset (the front is exported at the same one)."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ExportError("the artifact's graph declares no ai.onnx opset")


def export_front(profile: Profile, spec: Any, graph_inputs: Sequence[str], precision: str, opset: int, path: Path, *, noise: str) -> Any:
    """The front exported to ONNX (TorchScript exporter: a handful of elementwise ops, symbolic time axis)."""
    import contextlib
    import io
    import warnings

    import onnx
    import torch

    front = build_front(profile, spec, graph_inputs, noise=noise)
    names = front_inputs(profile, spec.f0, noise)
    example = example_front_inputs(profile, spec, precision, TRACE_FRAMES, noise)
    axes: dict[str, dict[int, str]] = {}
    for item in profile.inputs_for(spec.f0):
        if FRAMES in item.shape:
            axes[item.name] = {item.shape.index(FRAMES): FRAMES}
    if noise == "inputs":
        if not profile.prior_noise_input:
            axes[PRIOR_NOISE_INPUT] = {2: FRAMES}
        if spec.f0:
            axes[SOURCE_NOISE_INPUT] = {1: SAMPLES}
    output_axes = {"features": {1: FRAMES}, "f0": {1: FRAMES}, "prior_noise": {2: FRAMES}, "source_noise": {1: SAMPLES}, "excitation": {1: SAMPLES}}
    for name in graph_inputs:
        if name in output_axes:
            axes[output_name(name)] = output_axes[name]
    log = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(front, example, str(path), input_names=names, output_names=[output_name(n) for n in graph_inputs],
                          dynamic_axes=axes, opset_version=opset, dynamo=False)
    return onnx.load(str(path))


def _value_info(name: str, dtype: str, shape: Sequence[int | str]) -> Any:
    from onnx import helper

    return helper.make_tensor_value_info(name, _ONNX_TYPES[dtype], [dim for dim in shape])


def compose(profile: Profile, spec: Any, synth: Any, graph_inputs: Sequence[str], precision: str, *, noise: str,
            metadata: dict[str, Any] | None) -> Any:
    """The client's model: front + ``synth`` (the artifact's ONNX ModelProto) + output handling."""
    import onnx
    from onnx import compose as onnx_compose
    from onnx import helper, numpy_helper
    import numpy as np

    if noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {', '.join(NOISE_MODES)}, not {noise!r}")
    opset = default_opset(synth)
    with tempfile.TemporaryDirectory(prefix="rvc-export-") as scratch:
        front = export_front(profile, spec, graph_inputs, precision, opset, Path(scratch) / "front.onnx", noise=noise)
    # One IR version and the same ai.onnx opset on both sides (merge_models requires it).
    ir_version = max(front.ir_version, synth.ir_version)
    front.ir_version = synth.ir_version = ir_version
    merged = onnx_compose.merge_models(
        front, synth, io_map=[(output_name(name), name) for name in graph_inputs], prefix2=SYNTH_PREFIX,
        producer_name="rvc-compile", producer_version=_version(),
    )
    opsets: dict[str, int] = {}
    for entry in merged.opset_import:  # merge_models lists a domain both models import twice
        opsets.setdefault(entry.domain, entry.version)
    del merged.opset_import[:]
    merged.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in opsets.items())
    graph = merged.graph
    (synth_output,) = [output.name for output in graph.output]

    # Output handling: VC Client (metadata version 2.1) takes a 1-D, clipped output; OnnxRVC [1, 1, N].
    shape = [-1] if profile.flat_output else [1, 1, -1]
    graph.initializer.append(numpy_helper.from_array(np.array(shape, dtype=np.int64), "export/output_shape"))
    reshaped = "export/audio_reshaped" if profile.clip else profile.output
    graph.node.append(helper.make_node("Reshape", [synth_output, "export/output_shape"], [reshaped], name="export/Reshape"))
    if profile.clip:
        graph.initializer.append(numpy_helper.from_array(np.array(-1.0, dtype=np.float32), "export/clip_min"))
        graph.initializer.append(numpy_helper.from_array(np.array(1.0, dtype=np.float32), "export/clip_max"))
        graph.node.append(helper.make_node("Clip", [reshaped, "export/clip_min", "export/clip_max"], [profile.output], name="export/Clip"))
    del graph.output[:]
    graph.output.append(_value_info(profile.output, "float32", [SAMPLES] if profile.flat_output else [1, 1, SAMPLES]))

    # Inputs in the client's order with the client's types, including those the graph does not read
    # (p_len, pitch; the speaker of a single-speaker artifact): VC Client binds every name it feeds,
    # OnnxRVC binds by position, and ONNX Runtime refuses a feed that names no graph input.
    types = profile.input_types(has_f0=spec.f0, feature_dim=spec.feature_dim, inter_channels=spec.inter_channels, precision=precision)
    declared = [_value_info(name, dtype, shape) for name, dtype, shape in types]
    if noise == "inputs":
        if not profile.prior_noise_input:
            declared.append(_value_info(PRIOR_NOISE_INPUT, "float32", [1, spec.inter_channels, FRAMES]))
        if spec.f0:
            declared.append(_value_info(SOURCE_NOISE_INPUT, "float32", [1, SAMPLES]))
    wanted = [info.name for info in declared]
    present = {graph_input.name for graph_input in graph.input}
    stray = sorted(present - set(wanted))
    if stray:
        raise ExportError(f"the composed graph has inputs the {profile.name} profile does not feed: {', '.join(stray)}")
    del graph.input[:]
    graph.input.extend(declared)
    # Stale intermediate annotations (the front's dim names, the artifact's) would contradict each other.
    del graph.value_info[:]

    del merged.metadata_props[:]
    if metadata is not None:
        entry = merged.metadata_props.add()
        entry.key, entry.value = "metadata", json.dumps(metadata)
    merged.doc_string = f"RVC {spec.version} voice for {profile.client} (profile {profile.name}), exported by rvc-compile"
    try:
        onnx.checker.check_model(merged, full_check=True)
    except Exception as exc:  # the checker raises its own types; the graph is ours, so this is a bug worth one line
        raise ExportError(f"the composed {profile.name} graph is not valid ONNX ({first_line(exc, 200)})") from None
    return merged


def profile_metadata(profile: Profile, spec: Any) -> dict[str, Any] | None:
    return vc_client_metadata(feature_dim=spec.feature_dim, sample_rate=spec.sampling_rate, has_f0=spec.f0) if profile.metadata else None


def _version() -> str:
    from .. import __version__

    return __version__
