"""ONNX Runtime backend (CPU). The artifact holds the ONNX graph and the session options used.

Beyond the protocol (``backends.base``) it runs plain ONNX graphs for the build's checks
(``reference_runner``).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ArtifactError, RecipeError, first_line
from .base import NodeProfile, NodeTime, check_supported

NAME = "onnxruntime"
MODEL_FILE = "model.onnx"
PRECISIONS = ("fp32", "fp16", "int8")
# calibration_method -> onnxruntime.quantization.CalibrationMethod
CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
DEVICES = ("cpu",)
# MLAS picks its kernels from cpuid and ignores ONEDNN_MAX_CPU_ISA. None is needed: with 7-bit weights
# (reduce_range) no u8 x s8 pair sum saturates, so int8 results are the same exact integers on every class.
ISA_EMULATION = False
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")
LIBRARIES = ("onnx", "onnxruntime", "onnxconverter-common", "numpy")
COMPILE_CACHE = False  # ONNX Runtime optimizes the graph in memory at every load: nothing to cache
PEAK_KERNELS = {"int8": "MatMulInteger u8s8"}


def check_target(target: Any) -> None:
    check_supported(sys.modules[__name__], target, {"bf16": "its CPU execution provider has no bf16 kernels; use fp16 here, or bf16 with the openvino backend"})


def check_policy(target: Any, policy: Any) -> None:
    """Every policy ONNX Runtime is given can be applied (fp16 islands, int8 exclusions, any method)."""


def session_options(threads: int, graph_optimization: str) -> dict[str, Any]:
    return {
        "intra_op_num_threads": int(threads),
        "inter_op_num_threads": 1,
        "execution_mode": "sequential",
        "graph_optimization_level": graph_optimization,
        "providers": ["CPUExecutionProvider"],
    }


def _to_fp16(onnx_path: Path, out_path: Path, plan: Any) -> None:
    """fp16 weights and activations except the plan's fp32 islands (inputs and output stay float32)."""
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(onnx_path))
    del model.graph.value_info[:]  # stale fp32 annotations would contradict the converted graph
    converted = float16.convert_float_to_float16(
        model, keep_io_types=True, node_block_list=list(plan.keep_fp32),
        op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST), disable_shape_infer=False,
    )
    # The converter retypes a Cast's output to fp16 but leaves Cast(bool -> float) casting to fp32.
    fp16_values = {info.name for info in converted.graph.value_info if info.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16}
    for node in converted.graph.node:
        if node.op_type == "Cast" and node.output[0] in fp16_values:
            for attribute in node.attribute:
                if attribute.name == "to" and attribute.i == onnx.TensorProto.FLOAT:
                    attribute.i = onnx.TensorProto.FLOAT16
    onnx.save(converted, str(out_path))


class _CalibrationReader:
    """onnxruntime.quantization's data reader over the plan's calibration feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]], names: list[str]):
        self._feeds = iter([{name: feed[name] for name in names} for feed in feeds])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def _to_int8(onnx_path: Path, out_path: Path, plan: Any, workdir: Path) -> None:
    """Static QDQ quantization: int8 weights (per channel), uint8 activations, the islands excluded."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not plan.calibration:
        raise RecipeError("calibration: int8 needs calibration data (set calibration.source)")
    names = [graph_input.name for graph_input in onnx.load(str(onnx_path), load_external_data=False).graph.input]
    quantize_static(
        str(onnx_path), str(out_path), _CalibrationReader(plan.calibration, names),
        quant_format=QuantFormat.QDQ, per_channel=plan.per_channel,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        op_types_to_quantize=["Conv", "MatMul", "Gemm"],
        nodes_to_exclude=list(plan.keep_fp32),
        calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[plan.calibration_method]),
        # reduce_range: 7-bit weights, for CPUs without VNNI (its u8s8 kernels' vpmaddubsw saturates).
        reduce_range=plan.weight_bits < 8,
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True, "CalibTensorRangeSymmetric": False},
    )


def build(onnx_path: Path, target: Any, out_dir: Path, plan: Any, *, shapes: Any = None, workdir: Path | None = None) -> dict[str, Any]:
    import onnx
    import onnxruntime

    out = out_dir / MODEL_FILE
    if plan.precision == "fp16":
        _to_fp16(onnx_path, out, plan)
    elif plan.precision == "int8":
        _to_int8(onnx_path, out, plan, workdir or out_dir)
    else:
        shutil.copyfile(onnx_path, out)
    onnx.checker.check_model(str(out), full_check=True)
    return {
        "name": NAME,
        "library_version": onnxruntime.__version__,
        "files": {"model": MODEL_FILE},
        "session_options": session_options(target.threads, target.graph_optimization),
        "precision": plan.summary(),
    }


def adapt_to_cpu(section: dict[str, Any], isa: Any) -> tuple[dict[str, Any], list[str]]:
    """Nothing to change: MLAS picks its kernels at run time (see ISA_EMULATION for int8)."""
    return section, []


def _session(model_path: Path, options: dict[str, Any], threads: int | None, profile_prefix: str | None = None) -> Any:
    """An InferenceSession with the artifact's recorded ``options`` (``threads`` overrides its count)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or options["intra_op_num_threads"])
    so.inter_op_num_threads = int(options.get("inter_op_num_threads", 1))
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    level = options.get("graph_optimization_level", "all")
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    so.log_severity_level = 3
    if profile_prefix is not None:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    try:
        return ort.InferenceSession(str(model_path), sess_options=so, providers=list(options.get("providers", ["CPUExecutionProvider"])))
    except Exception as exc:  # ORT raises its own exception types for bad graphs
        raise ArtifactError(f"{model_path}: onnxruntime cannot load the graph ({first_line(exc, 200)})") from None


class Runner:
    """One InferenceSession; ``run`` is safe to call from several threads (ORT sessions are)."""

    def __init__(self, model_path: Path, options: dict[str, Any], threads: int | None = None):
        self.session = _session(model_path, options, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, {name: inputs[name] for name in self.input_names})[0]


def load(artifact_dir: Path, backend: dict[str, Any], threads: int | None = None, cache_dir: Path | None = None) -> Runner:
    return Runner(Path(artifact_dir) / backend["files"]["model"], backend["session_options"], threads)


def reference_runner(onnx_path: Path, threads: int) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    """``run(feed) -> output`` for a plain fp32 ONNX graph with every graph optimization: how the build
    checks each captured or transformed graph against the PyTorch reference."""
    return Runner(Path(onnx_path), session_options(threads, "all")).run


# -- optional hooks (backends.base) ----------------------------------------------------------------

def profile(artifact_dir: Path, backend: dict[str, Any], feed: dict[str, np.ndarray], *, threads: int, repeat: int) -> NodeProfile:
    """Per-node kernel time from ONNX Runtime's session profiling, over ``repeat`` runs after a warm-up."""
    model_path = Path(artifact_dir) / backend["files"]["model"]
    with tempfile.TemporaryDirectory(prefix="rvc-profile-") as scratch:
        session = _session(model_path, backend["session_options"], threads, profile_prefix=str(Path(scratch) / "ort"))
        names = [item.name for item in session.get_inputs()]
        inputs = {name: feed[name] for name in names}
        session.run(None, inputs)  # warm-up: the first run allocates; its events are dropped below
        start = time.perf_counter()
        for _ in range(repeat):
            session.run(None, inputs)
        total = time.perf_counter() - start
        events = json.loads(Path(session.end_profiling()).read_text())
    # The profile holds the warm-up run too: keep the events of the last ``repeat`` runs only.
    runs = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    cutoff = runs[-repeat] if len(runs) >= repeat else 0
    nodes = [
        NodeTime((e["name"].removesuffix("_kernel_time"),), e["args"].get("op_name", "?"), e["dur"] / 1e6)
        for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= cutoff
    ]
    return NodeProfile(nodes, total, "onnxruntime session profiling (per-node kernel time)")


def peak_kernel(size: int, threads: int, precision: str) -> Callable[[], Any]:
    """A ``size`` x ``size`` MatMulInteger (u8 x s8 -> s32): the MLAS kernel int8 QDQ graphs run."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    if precision not in PEAK_KERNELS:
        raise ValueError(f"onnxruntime has no peak kernel for {precision}")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (size, size)).astype(np.uint8)
    b = rng.integers(-128, 128, (size, size)).astype(np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "peak",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [size, size])],
        [numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda: session.run(None, {"a": a})
