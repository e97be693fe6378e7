"""OpenVINO backend (CPU): IR files in the artifact; fp32, bf16 and int8 (NNCF post-training quantization).

The inference precision hint and thread count are always explicit and recorded: on CPUs with bf16
support OpenVINO otherwise runs bf16 silently. bf16 is the compile hint over a graph whose NSF source is
already on the host; int8 is NNCF's quantization with the plan's fp32 islands in its ignored scope, run
with the fp32 hint (measured here: bf16 for the unquantized rest was slower and less accurate).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ArtifactError, BuildError, RecipeError, first_line
from .base import NodeProfile, NodeTime, check_supported, require_native_bf16

NAME = "openvino"
MODEL_FILE = "model.xml"
WEIGHTS_FILE = "model.bin"
PRECISIONS = ("fp32", "bf16", "int8")
DEVICES = ("cpu",)
ISA_EMULATION = True  # its CPU plugin obeys ONEDNN_MAX_CPU_ISA: builds check lower ISA classes under it
LIBRARIES = ("onnx", "openvino", "nncf", "numpy")
COMPILE_CACHE = True  # compiled blobs in CACHE_DIR make a second load fast (target.compile_cache)
PEAK_KERNELS = {"fp32": "MatMul f32", "bf16": "MatMul bf16", "int8": "FakeQuantize+MatMul u8s8"}
# Precisions this backend runs slower than fp32 on a CPU class (precision: auto leaves them out there).
# Measured with OpenVINO 2026.4 on the full-size v2 40k voice, 2 threads (docs/PRECISION.md): on AMX its int8
# convolutions compile for 42 s, take 5 GB and run 2 s of audio in 1.9 s (0.41 s capped to AVX512_CORE_VNNI).
SLOW_PRECISIONS = {"amx": {"int8": "OpenVINO's AMX int8 kernels run this model slower than fp32 (docs/PRECISION.md)"}}
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
# calibration_method -> NNCF's activation range estimator
RANGE_ESTIMATORS = {"minmax": "MINMAX", "percentile": "MEAN_QUANTILE", "entropy": "HISTOGRAM"}


def check_target(target: Any) -> None:
    check_supported(sys.modules[__name__], target, {"fp16": "this backend's CPU plugin has no fp16 compute on CPUs without AVX512-FP16; use bf16"})
    require_native_bf16(target, "use int8 or fp32, or precision: auto")


def check_policy(target: Any, policy: Any) -> None:
    if target.precision == "bf16" and policy.keep_fp32:
        raise RecipeError.at(
            "precision_policy.keep_fp32", "OpenVINO's bf16 hint cannot keep single layers in fp32 (it ignores "
            "per-node fp32 marks); use int8 with keep_fp32, or fp32"
        )
    if target.precision == "int8" and not policy.per_channel:
        raise RecipeError.at("precision_policy.per_channel", "NNCF quantizes OpenVINO weights per channel only; set it to true")


def compile_options(precision: str, threads: int) -> dict[str, Any]:
    return {
        "INFERENCE_PRECISION_HINT": HINTS[precision],
        "INFERENCE_NUM_THREADS": int(threads),
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
    }


def adapt_to_cpu(section: dict[str, Any], isa: Any) -> tuple[dict[str, Any], list[str]]:
    """The backend section to load on a CPU of class ``isa``, and what changed. A bf16 artifact on a CPU
    without native bf16 runs in f32: OpenVINO would otherwise emulate bf16 (slower than f32) or, under a
    oneDNN ISA cap, fail to compile."""
    options = section.get("compile_options", {})
    if options.get("INFERENCE_PRECISION_HINT") == "bf16" and not isa.native_bf16:
        adapted = {**section, "compile_options": {**options, "INFERENCE_PRECISION_HINT": "f32"}}
        return adapted, [f"bf16 artifact on a {isa.name} CPU without native bf16: running in f32 (fp32 accuracy, fp32 speed)"]
    return section, []


def _quantize(model: Any, plan: Any) -> Any:
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    if not plan.calibration:
        raise RecipeError("calibration: int8 needs calibration data (set calibration.source)")
    estimator = getattr(RangeEstimatorParametersSet, RANGE_ESTIMATORS[plan.calibration_method])
    ignored = nncf.IgnoredScope(names=_ov_names(model, plan.keep_fp32), validate=False) if plan.keep_fp32 else None
    from nncf.quantization.advanced_parameters import OverflowFix

    # 7-bit weights (the overflow fix on every layer) for CPUs without VNNI; with VNNI NNCF's default,
    # which applies it to the first layer only.
    overflow_fix = OverflowFix.ENABLE if plan.weight_bits < 8 else OverflowFix.FIRST_LAYER
    with _quiet():
        return nncf.quantize(
            model,
            nncf.Dataset(plan.calibration),
            subset_size=len(plan.calibration),
            preset=nncf.QuantizationPreset.MIXED,  # symmetric weights, asymmetric activations
            # NNCF's transformer scheme quantizes the inputs of weighted ops only; its default scheme also
            # put FakeQuantize on the 164 residual Adds of the decoder. Measured on the v2 40k voice at
            # 2 s: 41.3 dB SNR / 0.38 dB log-mel against 25.6 dB / 3.06 dB, and no slower.
            model_type=nncf.ModelType.TRANSFORMER,
            ignored_scope=ignored,
            advanced_parameters=AdvancedQuantizationParameters(activations_range_estimator_params=estimator, overflow_fix=overflow_fix),
        )


def _ov_names(model: Any, layers: list[str]) -> list[str]:
    """OpenVINO op names for our layer names (the converter keeps the ONNX node name, or adds a suffix)."""
    wanted = set(layers)
    names = []
    for op in model.get_ops():
        name = op.get_friendly_name()
        if name.split("/")[0] in wanted and op.get_type_name() in ("Convolution", "MatMul", "ConvolutionBackpropData", "GroupConvolution"):
            names.append(name)
    return names


class _quiet:
    """NNCF draws progress bars and logs on stdout/stderr; the build prints its own progress."""

    def __enter__(self) -> None:
        import contextlib
        import io
        import logging

        self._stack = contextlib.ExitStack()
        buffer = io.StringIO()
        self._stack.enter_context(contextlib.redirect_stdout(buffer))
        self._stack.enter_context(contextlib.redirect_stderr(buffer))
        logging.getLogger("nncf").setLevel(logging.ERROR)

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()


def build(onnx_path: Path, target: Any, out_dir: Path, plan: Any, *, shapes: Any = None, workdir: Path | None = None) -> dict[str, Any]:
    import openvino as ov

    try:
        model = ov.Core().read_model(str(onnx_path))
    except Exception as exc:
        raise BuildError(f"openvino: cannot convert the graph ({first_line(exc, 200)})") from None
    if plan.precision == "int8":
        model = _quantize(model, plan)
    ov.save_model(model, str(out_dir / MODEL_FILE), compress_to_fp16=False)
    # A dynamic graph is also compiled with static shapes at the recipe's optimal length (like a TensorRT
    # optimisation profile): measured ~13% faster than the dynamic compilation at that length.
    # The runtime's windows (see runtime/windows.py) all have the window's length: compile that too.
    static_frames = []
    if shapes is not None and shapes.mode == "dynamic":
        window = shapes.window()
        static_frames = sorted({int(shapes.opt_frames)} | ({window[0]} if window else set()))
    return {
        "name": NAME,
        "library_version": ov.get_version(),
        "files": {"model": MODEL_FILE, "weights": WEIGHTS_FILE},
        "compile_options": compile_options(plan.precision, target.threads),
        "static_frames": static_frames,
        "precision": plan.summary(),
    }


def _input_name(port: Any) -> str:
    """The graph-input name of a compiled input port. A port carries every tensor name fused onto it
    (the f0 input of a pitch model also answers to '/m_source/Cast_output_0'), and ``get_any_name`` may
    return any of them, so prefer a plain identifier (graph inputs are; fused tensor names have '/' or ':')."""
    import re

    plain = sorted(name for name in port.get_names() if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name))
    return plain[0] if plain else port.get_any_name()


class Runner:
    """A compiled model, plus static-shape compilations for the lengths the artifact is tuned for.

    ``run`` may be called from several threads: each thread gets its own infer request.
    """

    def __init__(self, model_path: Path, options: dict[str, Any], threads: int | None = None, static_frames: tuple[int, ...] = (), cache_dir: Path | None = None):
        import openvino as ov

        self.options = dict(options)
        if threads:
            self.options["INFERENCE_NUM_THREADS"] = int(threads)
        self.core = ov.Core()
        if cache_dir is not None:
            self.core.set_property({"CACHE_DIR": str(cache_dir)})
        self.model_path = Path(model_path)
        self._model = None  # read only when a static-shape compilation needs it
        try:
            # Compiling from the path lets OpenVINO skip reading the IR when its cache holds the blob.
            self.compiled = self.core.compile_model(str(model_path), "CPU", self.options)
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses for bad IR
            raise ArtifactError(f"{model_path}: openvino cannot load the model ({first_line(exc, 200)})") from None
        self.input_names = [_input_name(port) for port in self.compiled.inputs]
        # The first dynamic axis of each input: the frames (or samples = frames x k) of a time axis.
        self._time_axes = {}
        for name, port in zip(self.input_names, self.compiled.inputs):
            dynamic = [axis for axis, dim in enumerate(port.get_partial_shape()) if dim.is_dynamic]
            if dynamic:
                self._time_axes[name] = dynamic[0]
        self.static_frames = tuple(static_frames)
        self._static: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def executed_precisions(self) -> dict[str, int]:
        """How many convolutions and matrix products the compiled model runs in each precision (int8, bf16,
        fp32): what OpenVINO actually executes, read from its runtime graph (u8 and i8 inputs are int8)."""
        names = {"u8": "int8", "i8": "int8", "bf16": "bf16", "f32": "fp32", "f16": "fp16"}
        counts: dict[str, int] = {}
        for op in self.compiled.get_runtime_model().get_ops():
            info = op.get_rt_info()
            if "layerType" not in info or "runtimePrecision" not in info:
                continue
            if info["layerType"].astype(str) in ("Convolution", "Deconvolution", "FullyConnected", "MatMul"):
                precision = names.get(info["runtimePrecision"].astype(str).lower(), info["runtimePrecision"].astype(str))
                counts[precision] = counts.get(precision, 0) + 1
        return counts

    def _request(self, compiled: Any) -> Any:
        requests = getattr(self._local, "requests", None)
        if requests is None:
            requests = self._local.requests = {}
        key = id(compiled)
        if key not in requests:
            requests[key] = compiled.create_infer_request()
        return requests[key]

    def _frames(self, feed: dict[str, np.ndarray]) -> int | None:
        """The frame count of ``feed``: the shortest time axis (others hold frames x samples per frame)."""
        sizes = [int(feed[name].shape[axis]) for name, axis in self._time_axes.items()]
        return min(sizes) if sizes else None

    def add_static_frames(self, frames: int) -> None:
        """Also run inputs of exactly ``frames`` frames on a static-shape compilation (made on first use):
        a caller that repeats one length (a real-time stream's window) gets the static graph's speed."""
        with self._lock:
            if int(frames) not in self.static_frames:
                self.static_frames = (*self.static_frames, int(frames))

    def compile_static(self, feed: dict[str, np.ndarray]) -> None:
        """Compile a static-shape model for the shapes of ``feed`` (one frame count)."""
        frames = self._frames(feed)
        with self._lock:
            if frames in self._static:
                return
            if self._model is None:
                self._model = self.core.read_model(str(self.model_path))
            model = self._model.clone()
            model.reshape({name: list(feed[name].shape) for name in self.input_names})
            self._static[frames] = self.core.compile_model(model, "CPU", self.options)

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        feed = {name: inputs[name] for name in self.input_names}
        compiled = self.compiled
        if self.static_frames:
            frames = self._frames(feed)
            if frames in self.static_frames and frames not in self._static:
                self.compile_static(feed)
            compiled = self._static.get(frames, self.compiled)
        request = self._request(compiled)
        result = request.infer(feed)
        return np.array(result[compiled.output(0)], copy=True)


def load(artifact_dir: Path, backend: dict[str, Any], threads: int | None = None, cache_dir: Path | None = None) -> Runner:
    return Runner(
        Path(artifact_dir) / backend["files"]["model"], backend["compile_options"], threads,
        static_frames=tuple(backend.get("static_frames", ())), cache_dir=cache_dir,
    )


# -- optional hooks (backends.base) ----------------------------------------------------------------

def profile(artifact_dir: Path, backend: dict[str, Any], feed: dict[str, np.ndarray], *, threads: int, repeat: int) -> NodeProfile:
    """Per-executed-node real time from OpenVINO's ``PERF_COUNT``, over ``repeat`` runs after a warm-up."""
    import openvino as ov

    model_path = Path(artifact_dir) / backend["files"]["model"]
    config = {k: v for k, v in backend.get("compile_options", {}).items() if isinstance(v, (str, int, float, bool))}
    config.setdefault("INFERENCE_PRECISION_HINT", "f32")
    config.update({"INFERENCE_NUM_THREADS": int(threads), "PERF_COUNT": True})
    try:
        compiled = ov.Core().compile_model(str(model_path), "CPU", config)
    except Exception as exc:
        raise ArtifactError(f"{model_path}: openvino cannot load the model ({first_line(exc, 200)})") from None
    # An executed node often fuses several graph ops (a conv with its bias add and activation) and may
    # carry a generated name; the runtime model lists the original op names each one stands for.
    fused: dict[str, list[str]] = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        originals = info["originalLayersNames"].astype(str) if "originalLayersNames" in info else ""
        fused[op.get_friendly_name()] = [name for name in originals.split(",") if name]
    inputs = {name: feed[name] for name in (_input_name(port) for port in compiled.inputs)}
    request = compiled.create_infer_request()
    request.infer(inputs)
    nodes: list[NodeTime] = []
    start = time.perf_counter()
    for _ in range(repeat):
        request.infer(inputs)
        nodes += [NodeTime((p.node_name, *fused.get(p.node_name, [])), p.node_type, p.real_time.total_seconds()) for p in request.get_profiling_info()]
    total = time.perf_counter() - start
    return NodeProfile(nodes, total, "openvino PERF_COUNT (per executed node real time)")


def peak_kernel(size: int, threads: int, precision: str) -> Callable[[], Any]:
    """A ``size`` x ``size`` MatMul at ``precision``'s hint; for int8 FakeQuantize on both inputs, which
    the CPU plugin runs as an int8 ``FullyConnected`` (the path int8 artifacts take)."""
    import openvino as ov
    import openvino.opset13 as ops

    if precision not in PEAK_KERNELS:
        raise ValueError(f"openvino has no peak kernel for {precision}")
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
