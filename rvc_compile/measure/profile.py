"""Where the time goes: per-module profiles of the eager reference and of a compiled artifact.

An artifact of any component profiles: its inputs are the component's (``example_inputs`` ->
``graph_feed``) and its groups the component's ``profile_group`` (by default a weight's top-level
module: ``conv_in.weight`` -> conv_in). The eager profile is the synthesizer's. For the synthesizer
both report the same groups, so the two can be read side by side:

    enc_p          content encoder (attention stack over frames)
    flow           reverse coupling flow
    dec.source     NSF harmonic source (sine generation over every output sample)
    dec.pre        decoder input conv and speaker conditioning
    dec.stageN     upsampling stage N: its transposed conv, its noise conv, its residual blocks
    dec.post       the output conv
    dec.other      (eager) decoder time outside those modules: activations, the averaging of blocks
    other          (eager) the rest of the forward pass; (artifact) ops not tied to a module (work on
                   the raw inputs before any weighted op, layout reorders the backend inserts)

Eager: forward pre/post hooks around each module, wall time per call (CPU execution is synchronous).
Artifacts: the backend's own profiler, its ``profile`` hook (``backends.base``; ONNX Runtime's session
profiling, OpenVINO's ``PERF_COUNT``), which times every executed node. A node is tied to a module
through the name of the weight it reads (``dec.resblocks.7.convs1.0.weight`` -> dec.stage2 when there
are 3 blocks per stage: ``module_group``, the synthesizer adapter's ``profile_group``); the weight is found by walking up through dequantize/convert nodes, so
quantized graphs map too. An op without weights (activation, add, reshape) belongs to the module that
produced its first grouped input, so a stage's activations and sums count with that stage.
FLOPs per group (to show the achieved rate) are counted by ``measure.flops``: on the torch model
(eager) or on the same graph with OpenVINO's shapes (artifacts).
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .flops import FLOP_OPS, leaf_modules, op_flops, read_graph, torch_flops

WEIGHTED_ONNX_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul", "Gather")
_MODULE_PATH = re.compile(r"(enc_p|flow|dec|emb_g)(\.[A-Za-z_0-9]+)*")

GroupOf = Callable[[str], "str | None"]  # a weight, node or module name -> its profile group (None: none)


def module_group(path: str, blocks_per_stage: int) -> str | None:
    """The synthesizer's profile group of a parameter or module path (None when it names no known module)."""
    match = _MODULE_PATH.search(path)
    if not match:
        return None
    parts = match.group(0).split(".")
    top = parts[0]
    if top in ("enc_p", "flow"):
        return top
    if top == "emb_g":
        return "speaker"
    if len(parts) < 2:
        return "dec"
    name = parts[1]
    if name == "m_source":
        return "dec.source"
    if name in ("conv_pre", "cond"):
        return "dec.pre"
    if name == "conv_post":
        return "dec.post"
    if name in ("ups", "noise_convs") and len(parts) > 2 and parts[2].isdigit():
        return f"dec.stage{int(parts[2])}"
    if name == "resblocks" and len(parts) > 2 and parts[2].isdigit():
        return f"dec.stage{int(parts[2]) // blocks_per_stage}"
    return "dec.other"


def _group_order(name: str) -> tuple:
    order = ["enc_p", "flow", "speaker", "dec.source", "dec.pre"]
    if name in order:
        return (order.index(name), 0)
    if name.startswith("dec.stage"):
        return (len(order), int(name[len("dec.stage"):]))
    return (len(order) + 1, {"dec.post": 0, "dec.other": 1, "other": 2}.get(name, 3))


def _table(times_s: dict[str, float], total_s: float, flops: dict[str, float] | None, runs: int, key: str) -> list[dict[str, Any]]:
    rows = []
    for name in sorted(times_s, key=_group_order if key == "module" else (lambda n: -times_s[n])):
        seconds = times_s[name] / runs
        row = {key: name, "ms": seconds * 1e3, "share": times_s[name] / total_s if total_s else None}
        if flops is not None:
            gflop = flops.get(name, 0.0) / 1e9
            row["gflop"] = gflop
            row["achieved_gops"] = gflop / seconds if seconds > 0 and gflop else None
        rows.append(row)
    return rows


def _inputs_for(component: Any, spec: Any, frames: int, seed: int, speaker: int, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """The component's example inputs as the graph inputs ``names`` (default: the eager model's); for
    the synthesizer the host-side ``excitation`` included."""
    names = list(names or component.input_names(spec))
    return component.graph_feed(spec, component.example_inputs(spec, frames, seed, speaker=speaker), names)


# -- eager reference -------------------------------------------------------------------------------

def profile_reference(checkpoint: str | Path, *, seconds: float = 2.0, threads: int = 2, repeat: int = 3, seed: int = 0) -> dict[str, Any]:
    """Per-module wall time of the eager fp32 reference at ``seconds`` of audio (mean of ``repeat`` runs)."""
    import torch

    from ..components import get_component
    from ..components.synthesizer.checkpoint import load_checkpoint
    from ..components.synthesizer.model import build_model

    torch.set_num_threads(threads)
    checkpoint = load_checkpoint(checkpoint)
    spec = checkpoint.spec
    model = build_model(spec, checkpoint.state_dict)
    blocks = len(spec.resblock_kernel_sizes)
    frames = max(1, int(round(seconds * spec.frames_per_second)))
    inputs = [torch.from_numpy(a) for a in _inputs_for(get_component("synthesizer"), spec, frames, seed, 0).values()]

    leaves: dict[str, Any] = {"enc_p": model.enc_p, "flow": model.flow, "speaker": model.emb_g}
    dec = model.dec
    if getattr(dec, "nsf", False):
        leaves["dec.source"] = dec.m_source
    watched = [(name, module) for name, module in leaves.items()]
    for name, module in dec.named_children():
        if name == "m_source":
            continue
        if isinstance(module, torch.nn.ModuleList):
            watched += [(module_group(f"dec.{name}.{i}", blocks), child) for i, child in enumerate(module)]
        else:
            watched.append((module_group(f"dec.{name}", blocks), module))
    spent: dict[str, float] = defaultdict(float)
    starts: dict[int, float] = {}
    running: set[str] = set()
    handles = []

    def attach(group: str, module: Any) -> None:
        def before(mod: Any, args: Any) -> None:
            starts[id(mod)] = time.perf_counter()
            running.add(group)

        def after(mod: Any, args: Any, output: Any) -> None:
            elapsed = time.perf_counter() - starts.pop(id(mod))
            running.discard(group)
            spent[group] += elapsed
            if group == "dec.source" and "__dec__" in running:
                spent["__source_in_dec__"] += elapsed  # counted once, as dec.source

        handles.append(module.register_forward_pre_hook(before))
        handles.append(module.register_forward_hook(after))

    for group, module in watched:
        attach(group, module)
    attach("__dec__", dec)
    with torch.inference_mode():
        model(*inputs)  # warm-up
        spent.clear()
        start = time.perf_counter()
        for _ in range(repeat):
            model(*inputs)
        total = time.perf_counter() - start
    for handle in handles:
        handle.remove()

    dec_total = spent.pop("__dec__")
    source_in_dec = spent.pop("__source_in_dec__", 0.0)
    # The decoder makes its NSF source inside its forward (or is handed one made before it): only the
    # part of dec.source timed inside the decoder is part of dec_total.
    dec_parts = sum(v for k, v in spent.items() if k.startswith("dec.") and k != "dec.source") + source_in_dec
    spent["dec.other"] = max(dec_total - dec_parts, 0.0)
    spent["other"] = max(total - sum(spent.values()), 0.0)

    with torch.device("meta"):
        _, by_module = torch_flops(build_model(spec), [torch.empty(a.shape, dtype=a.dtype) for a in inputs])
    flops: dict[str, float] = defaultdict(float)
    for name, value in leaf_modules(by_module).items():
        group = module_group(name, blocks)
        if group:
            flops[group] += value

    return {
        "what": "eager fp32 reference (PyTorch)",
        "method": "forward hooks, wall time per module; FLOPs by torch FlopCounterMode",
        "seconds": frames / spec.frames_per_second,
        "frames": frames,
        "threads": threads,
        "runs": repeat,
        "total_ms": total / repeat * 1e3,
        "by_module": _table(dict(spent), total, dict(flops), repeat, "module"),
    }


# -- artifacts -------------------------------------------------------------------------------------

def _onnx_node_groups(model_path: Path, group_name: GroupOf) -> dict[str, str]:
    """ONNX node name -> profile group, through the (possibly dequantized) weight each node reads."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    producers = {output: node for node in model.graph.node for output in node.output}

    def group_of(name: str, depth: int = 0) -> str | None:
        if name in initializers:
            return group_name(name)
        node = producers.get(name)
        if node is None or depth > 4:
            return group_name(name)
        for value in node.input:
            found = group_of(value, depth + 1)
            if found:
                return found
        return None

    groups: dict[str, str] = {}
    value_groups: dict[str, str] = {}
    for node in model.graph.node:  # topological order, as ONNX requires
        found = None
        if node.op_type in WEIGHTED_ONNX_OPS:
            found = next((g for g in (group_of(v) for v in node.input[1:] if v) if g), None)
        if found is None:  # no weights: the module whose output it works on
            found = next((value_groups[v] for v in node.input if v in value_groups), None)
        if found:
            groups[node.name] = found
            for output in node.output:
                value_groups[output] = found
    return groups


def _ov_weight_group(op: Any, group_name: GroupOf) -> str | None:
    """The group of an OpenVINO op, from the name of the constant its weight input comes from."""
    frontier = [op.input_value(i).get_node() for i in range(1, op.get_input_size())]
    for _ in range(6):
        following = []
        for node in frontier:
            names = [node.get_friendly_name(), *(n for port in node.outputs() for n in port.get_names())]
            for name in names:
                found = group_name(name)
                if found:
                    return found
            following += [node.input_value(i).get_node() for i in range(node.get_input_size())]
        frontier = following
    return None


def _graph_group_flops(model_path: Path, shapes: dict[str, list[int]], group_name: GroupOf) -> tuple[dict[str, float], dict[str, str]]:
    """FLOPs per group of a graph (OpenVINO shapes), and OpenVINO op name -> group for every weighted op."""
    model = read_graph(model_path, shapes)
    flops: dict[str, float] = defaultdict(float)
    op_groups: dict[str, str] = {}
    for op in model.get_ordered_ops():  # topological order
        kind = op.get_type_name()
        if kind in ("Constant", "Parameter", "Result"):
            continue
        group = _ov_weight_group(op, group_name) if kind in FLOP_OPS or kind == "Gather" else None
        if group is None:  # no weights: the module whose output it works on
            producers = (op.input_value(i).get_node().get_friendly_name() for i in range(op.get_input_size()))
            group = next((op_groups[name] for name in producers if name in op_groups), None)
        if group:
            op_groups[op.get_friendly_name()] = group
        if kind in FLOP_OPS:
            flops[group or "other"] += op_flops(op)
    return dict(flops), op_groups


def profile_artifact(path: str | Path, *, seconds: float = 2.0, threads: int = 2, repeat: int = 3, seed: int = 0) -> dict[str, Any]:
    """Per-module and per-op-type time of an artifact's graph (any component), with its backend's own profiler."""
    from ..artifact.manifest import verify_or_raise
    from ..artifact.schema import parse_manifest
    from ..backends import get_backend, has_hook
    from ..components import get_component
    from ..errors import ArtifactError

    path = Path(path)
    manifest = parse_manifest(verify_or_raise(path), path)
    component = get_component(manifest.component.kind, for_build=False)
    spec = component.spec_from_manifest(manifest, path)
    frames_per_second = float(component.frames_per_second(spec))
    frame_range = manifest.model.frames
    frames = min(max(int(round(seconds * frames_per_second)), frame_range.min), frame_range.max)
    speaker = manifest.model.get("fixed_speaker") or 0
    inputs = _inputs_for(component, spec, frames, seed, speaker, list(manifest.input_names))
    shapes = {k: list(v.shape) for k, v in inputs.items()}

    def group_name(name: str) -> str | None:
        return component.profile_group(spec, name)

    backend = manifest["backend"]  # the raw section, as the backend wrote it
    graph = next((name for name in backend.get("files", {}).values() if name.endswith((".onnx", ".xml"))), None)
    if graph is None:
        raise ArtifactError(f"{path}: no graph file to profile in the backend's files")
    try:
        flops, ov_groups = _graph_group_flops(path / graph, shapes, group_name)
    except Exception:  # profiling still works without FLOPs
        flops, ov_groups = None, {}
    node_groups = dict(ov_groups)
    if graph.endswith(".onnx"):
        node_groups.update(_onnx_node_groups(path / graph, group_name))
    module = get_backend(backend["name"], for_build=False)
    if not has_hook(module, "profile"):
        raise ArtifactError(f"{path}: no profiler for backend {backend['name']!r}")
    measured = module.profile(path, backend, inputs, threads=threads, repeat=repeat)

    by_module: dict[str, float] = defaultdict(float)
    by_op: dict[str, float] = defaultdict(float)
    for node in measured.nodes:
        by_op[node.op_type] += node.seconds
        candidates = [key for name in node.names for key in (name, name.split("/")[0])]
        by_module[next((node_groups[key] for key in candidates if key in node_groups), "other")] += node.seconds
    busy = sum(by_op.values())
    return {
        "what": f"{manifest['name']} {manifest['version']} ({backend['name']}, {manifest['target'].get('precision')})",
        "method": measured.method,
        "component": component.KIND,
        "seconds": frames / frames_per_second,
        "frames": frames,
        "threads": threads,
        "runs": repeat,
        "total_ms": measured.total_s / repeat * 1e3,
        "node_time_ms": busy / repeat * 1e3,
        "by_module": _table(dict(by_module), busy, flops, repeat, "module"),
        "by_op_type": _table(dict(by_op), busy, None, repeat, "op_type")[:15],
    }
