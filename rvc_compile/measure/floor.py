"""The physical floor: how much arithmetic a second of audio needs, and how fast this machine can do it.

Two numbers make the floor of a precision: the model's FLOPs per second of audio (one multiply-add is
2 operations; convolutions, transposed convolutions and matrix products, which are >99 % of the
work) and the machine's peak rate in that precision, measured as the best of a few large square matrix
products on the benchmark's thread count. ``floor time = FLOPs / peak``: no implementation of that
precision can be faster on this machine, so ``measured / floor`` says how much is left to win.

The peak is measured, not taken from a data sheet, with every implementation that is installed:
torch (oneDNN) and OpenVINO for fp32 and bf16; for int8 torch's ``_int_mm`` (s8 x s8 -> s32),
ONNX Runtime's ``MatMulInteger`` (u8 x s8 -> s32) and an OpenVINO FakeQuantize -> MatMul that its CPU
plugin runs as an int8 ``FullyConnected`` (the path int8 artifacts take). The best one is the peak; the
others are recorded beside it. torch, onnxruntime and openvino are imported inside the functions
that need them.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import first_line

PRECISIONS = ("fp32", "bf16", "int8")
DEFAULT_MATRIX_SIZE = 2048  # large enough to be compute bound, small enough for ~20 ms per product
FLOP_OPS = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul")


def precision_class(precision: str | None) -> str:
    """Which peak bounds a precision label: int8 anywhere -> int8, bf16 -> bf16, everything else fp32.

    fp16 maps to fp32: this CPU has no fp16 arithmetic (no AVX512-FP16/AMX-FP16), so fp16 weights are
    computed in fp32 (or bf16 where a backend chooses to); the fp32 floor is the honest bound.
    """
    label = (precision or "fp32").lower()
    if "int8" in label or "i8" in label:
        return "int8"
    if "bf16" in label:
        return "bf16"
    return "fp32"


# -- peak rates -----------------------------------------------------------------------------------

def _best_time(run: Callable[[], Any], repeat: int) -> float:
    run()
    run()  # the first calls pay for kernel selection, packing and page faults
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _torch_matmul(size: int, threads: int, precision: str) -> Callable[[], Any]:
    import torch

    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    if precision == "int8":
        a = torch.randint(-128, 128, (size, size), dtype=torch.int8, generator=generator)
        b = torch.randint(-128, 128, (size, size), dtype=torch.int8, generator=generator)
        return lambda: torch._int_mm(a, b)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(size, size, generator=generator).to(dtype)
    b = torch.randn(size, size, generator=generator).to(dtype)
    return lambda: torch.matmul(a, b)


def _onnxruntime_matmul_integer(size: int, threads: int, precision: str) -> Callable[[], Any]:
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

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


def _openvino_matmul(size: int, threads: int, precision: str) -> Callable[[], Any]:
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(0)
    weights = rng.standard_normal((size, size)).astype(np.float32)
    x = ops.parameter([size, size], ov.Type.f32, name="x")
    if precision == "int8":
        def quantize(node: Any, low: float, high: float) -> Any:
            lo, hi = ops.constant(np.float32(low)), ops.constant(np.float32(high))
            return ops.fake_quantize(node, lo, hi, lo, hi, 256)

        y = ops.matmul(quantize(x, 0.0, 2.55), quantize(ops.constant(weights), -1.28, 1.27), False, True)
    else:
        y = ops.matmul(x, ops.constant(weights), False, True)
    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
    compiled = ov.Core().compile_model(ov.Model([y], [x]), "CPU", config)
    request = compiled.create_infer_request()
    data = (rng.random((size, size)) * 2.5).astype(np.float32)
    return lambda: request.infer({0: data})


IMPLEMENTATIONS: dict[str, list[tuple[str, Callable[[int, int, str], Callable[[], Any]]]]] = {
    "fp32": [("torch.matmul fp32", _torch_matmul), ("openvino MatMul f32", _openvino_matmul)],
    "bf16": [("torch.matmul bf16", _torch_matmul), ("openvino MatMul bf16", _openvino_matmul)],
    "int8": [
        ("torch._int_mm s8s8", _torch_matmul),
        ("onnxruntime MatMulInteger u8s8", _onnxruntime_matmul_integer),
        ("openvino FakeQuantize+MatMul u8s8", _openvino_matmul),
    ],
}


def measure_peaks(threads: int, *, size: int = DEFAULT_MATRIX_SIZE, repeat: int = 5) -> dict[str, Any]:
    """Peak operations per second for fp32, bf16 and int8 on ``threads`` threads.

    Returns ``{"threads", "matrix_size", "repeat", "<precision>": {"gops", "implementation",
    "candidates": {name: gops or None}, "errors": {name: message}}}`` (gops = 1e9 operations/s).
    """
    result: dict[str, Any] = {"threads": threads, "matrix_size": size, "repeat": repeat,
                              "method": f"best of {repeat} {size}x{size} @ {size}x{size} products after 2 warm-up runs"}
    operations = 2.0 * size**3
    for precision in PRECISIONS:
        candidates: dict[str, float | None] = {}
        errors: dict[str, str] = {}
        for name, make in IMPLEMENTATIONS[precision]:
            try:
                seconds = _best_time(make(size, threads, precision), repeat)
                candidates[name] = round(operations / seconds / 1e9, 1)
            except Exception as exc:  # a missing library or kernel is a fact to record, not a failure
                candidates[name] = None
                errors[name] = f"{type(exc).__name__}: {first_line(exc, 160)}"
        measured = {name: value for name, value in candidates.items() if value}
        best = max(measured, key=measured.get) if measured else None
        result[precision] = {
            "gops": measured[best] if best else None,
            "implementation": best,
            "candidates": candidates,
            "errors": errors,
        }
    return result


# -- FLOPs ----------------------------------------------------------------------------------------

def model_flops(spec: Any, frames: int) -> dict[str, float]:
    """FLOPs of the synthesizer for ``frames`` frames, per top-level module and ``total``.

    Counted by torch's FlopCounterMode on the meta device: no weights, no arithmetic, milliseconds.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..components.synthesizer.model import Synthesizer

    with torch.device("meta"):
        model = Synthesizer(spec).eval().requires_grad_(False)
        inputs = [torch.zeros(1, frames, spec.feature_dim)]
        if spec.f0:
            inputs.append(torch.full((1, frames), 200.0))
        inputs += [torch.zeros(1, dtype=torch.long), torch.zeros(1, spec.inter_channels, frames)]
        if spec.f0:
            inputs.append(torch.zeros(1, frames * spec.hop_length))
        counter = FlopCounterMode(display=False, depth=1)
        with counter, torch.inference_mode():
            model(*inputs)
    per_module = {name.split(".")[-1]: float(sum(ops.values())) for name, ops in counter.get_flop_counts().items() if name.count(".") == 1}
    per_module["total"] = float(counter.get_total_flops())
    return per_module


def _op_flops(op: Any) -> float:
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


def graph_flops(model_path: str | Path, input_shapes: dict[str, list[int]]) -> float:
    """FLOPs of an ONNX or OpenVINO IR graph at concrete input shapes, counted op by op from its shapes.

    OpenVINO reads both formats and propagates shapes through every op, so a pruned or quantized
    graph is counted as it is, not as the checkpoint it came from.
    """
    import openvino as ov

    model = ov.Core().read_model(str(model_path))
    names = {port.get_any_name() for port in model.inputs}
    model.reshape({name: shape for name, shape in input_shapes.items() if name in names})
    return float(sum(_op_flops(op) for op in model.get_ordered_ops() if op.get_type_name() in FLOP_OPS))


def floor_seconds(flops: float, precision: str, peaks: dict[str, Any]) -> float | None:
    """The least time ``flops`` can take at ``precision`` on the measured machine (None: no peak)."""
    entry = peaks.get(precision_class(precision)) or {}
    gops = entry.get("gops")
    return flops / (gops * 1e9) if gops else None
