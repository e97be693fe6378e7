"""AOTInductor backend (CPU, and CUDA where a GPU is present): the captured ``torch.export`` program
compiled ahead of time by TorchInductor into one ``.pt2`` package, with the recipe's dynamic frame range.

Unlike the ONNX backends it compiles the torch program (``PROGRAM``: capture saves it beside the ONNX
graph; the layer names and the precision plan still come from that graph). Precision is applied to the
program before compiling: every layer of the plan's ``low_precision_layers`` (convolutions and linear
layers, named by module path as ``precision.layers`` names them) takes its input and weights in bf16 or
fp16 and hands its output back in fp32, so the activations between layers, the residual adds and every
layer the policy keeps fp32 stay fp32: real fp32 islands. The NSF source is on the host already
(``host_source``). On CPUs every 1-d convolution runs as a channels-last 2-d one (``program.channels_last``),
which removes oneDNN's layout reorders around each. CPU code is generated for the target's ISA class
(``-march`` and vector width), not for the build machine; CUDA artifacts capture a CUDA graph per input
shape for static-shape graphs. The program rewrites are ``backends.program``'s.

Its runtime needs torch (the package's loader is torch's): the manifest says so, and ``load`` is the only
place that imports it, so ``rvc_compile.runtime`` stays importable without torch for the other backends.
"""

from __future__ import annotations

import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, BuildError, RecipeError, first_line
from .base import check_supported, require_native_bf16
from .program import DTYPES, channels_last, lower

NAME = "aoti"
MODEL_FILE = "model.pt2"
PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("cpu", "cuda")
ISA_EMULATION = False  # Inductor's C++ is compiled for the target class (-march); oneDNN's cap does not change it
LIBRARIES = ("torch", "numpy")
COMPILE_CACHE = False  # the package is the compiled form: loading it compiles nothing
PROGRAM = True  # compiles the captured torch.export program (build.steps.PROGRAM_FILE), not the ONNX graph
# ISA class -> (gcc -march, Inductor's vector width): the code runs on every CPU of the class.
CODEGEN = {
    "avx2": ("x86-64-v3", 256), "avx2-vnni": ("x86-64-v3", 256),
    "avx512": ("x86-64-v4", 512), "avx512-vnni": ("x86-64-v4", 512), "avx512-bf16": ("x86-64-v4", 512), "amx": ("x86-64-v4", 512),
}
_NO_FP16 = "CPUs here have no fp16 arithmetic: oneDNN converts every fp16 convolution (slower than fp32; use bf16 or fp32)"
SLOW_PRECISIONS = {
    name: {"fp16": _NO_FP16, **({} if name in ("avx512-bf16", "amx") else {"bf16": "no native bf16: emulated, slower than fp32"})}
    for name in CODEGEN
}


def check_target(target: Any) -> None:
    check_supported(sys.modules[__name__], target, {"int8": "int8 would need PT2E quantization, which left torch for torchao; not built: use the openvino or onnxruntime backend for int8"})
    if target.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise RecipeError(
                f"target.device: cuda needs an NVIDIA GPU and a CUDA build of torch on the build machine (torch {torch.__version__} "
                "sees no GPU here): the artifact is compiled and checked on the GPU"
            )
        return
    from ..machine import resolve_target_cpu

    isa = resolve_target_cpu(target.cpu)
    if isa.name not in CODEGEN:
        raise RecipeError(f"target.cpu: the aoti backend generates code for x86-64 CPUs with AVX2 or newer; {isa.name} is not one")
    require_native_bf16(target, "use fp32")


def check_policy(target: Any, policy: Any) -> None:
    """Every fp32 island is kept (layers are lowered one by one); int8 is refused by check_target."""


def codegen(target: Any) -> dict[str, Any]:
    """The ISA the package's CPU code is generated for: the target's class, whatever this machine has,
    and the CPU features that code needs (``requires``, what ``adapt_to_cpu`` checks). Inductor adds
    AVX-512 BF16 instructions to 512-bit code on a machine that has them; for a class without bf16 built
    on such a machine the vectors are 256 bits wide instead (gcc still uses AVX-512 under -march)."""
    if target.device == "cuda":
        return {"device": "cuda"}
    from ..machine import machine_isa, resolve_target_cpu

    isa = resolve_target_cpu(target.cpu)
    march, simdlen = CODEGEN[isa.name]
    requires = {"avx2"} | ({"avx512"} if march == "x86-64-v4" else set())
    if simdlen == 512 and machine_isa().native_bf16:
        if isa.native_bf16:
            requires.add("bf16")
        else:
            simdlen = 256
    return {"device": "cpu", "isa_class": isa.name, "march": march, "simdlen": simdlen, "requires": sorted(requires)}


# -- build -----------------------------------------------------------------------------------------

def _export_again(module: Any, example: tuple, program_shapes: dict[str, Any]) -> Any:
    import torch

    from ..capture.export import program_shapes as dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(module, example, dynamic_shapes=dynamic(module, program_shapes))


def build(onnx_path: Path, target: Any, out_dir: Path, plan: Any, *, shapes: Any = None, workdir: Path | None = None,
          program: Path | None = None, program_shapes: dict[str, Any] | None = None) -> dict[str, Any]:
    import torch

    if program is None or program_shapes is None:
        raise BuildError("the aoti backend compiles the captured torch program, and the capture stage saved none")
    exported = torch.export.load(str(program))
    example = tuple(exported.example_inputs[0])
    device = "cuda" if target.device == "cuda" else "cpu"
    module = exported.module()
    lowered: list[str] = []
    if plan.precision != "fp32":
        lowered = lower(module, list(plan.low_precision_layers), plan.precision)
    layout = "ncw"
    if device == "cpu":  # measured on CPUs only (docs/AOTI.md); CUDA keeps cuDNN's own choice
        channels_last(module)
        layout = "channels_last_2d"
    module = module.to(device)
    example = tuple(tensor.to(device) for tensor in example)
    exported = _export_again(module, example, program_shapes)
    generated = codegen(target)
    configs: dict[str, Any] = {}
    if device == "cpu":
        configs = {"cpp.march": generated["march"], "cpp.simdlen": generated["simdlen"]}
    out = Path(out_dir) / MODEL_FILE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch._inductor.aoti_compile_and_package(exported, package_path=str(out), inductor_configs=dict(configs))
    except Exception as exc:  # Inductor and the C++ compiler raise many types
        raise BuildError(f"AOTInductor could not compile the program: {type(exc).__name__}: {first_line(exc, 300, type(exc).__name__)}") from exc
    missing = sorted(set(plan.low_precision_layers) - set(lowered)) if plan.precision != "fp32" else []
    return {
        "name": NAME,
        "library_version": torch.__version__,
        "files": {"model": MODEL_FILE},
        # Loading needs torch (its AOTInductor loader), of the version that compiled the package.
        "requires": {"torch": torch.__version__.split("+")[0]},
        "device": device,
        "input_names": list(program_shapes["names"]),
        "threads": int(target.threads),
        "codegen": generated,
        "inductor_configs": configs,
        "lowered": {"dtype": DTYPES.get(plan.precision), "layers": len(lowered), "not_found": missing},
        "conv_layout": layout,
        "cuda_graphs": device == "cuda" and program_shapes.get("static_frames") is not None,
        "precision": plan.summary(),
    }


# -- runtime ---------------------------------------------------------------------------------------

def adapt_to_cpu(section: dict[str, Any], isa: Any) -> tuple[dict[str, Any], list[str]]:
    """Refuse a CPU without the features the package's code was compiled with (the process would die on
    an illegal instruction); else nothing changes."""
    generated = section.get("codegen", {})
    if section.get("device", "cpu") == "cpu":
        missing = sorted(set(generated.get("requires", [])) - set(isa.features))
        if missing:
            raise ArtifactError(f"this aoti artifact's code was compiled for {generated.get('isa_class')} CPUs and this {isa.name} CPU lacks "
                                f"{', '.join(missing)}; rebuild it with target.cpu: {isa.name}")
    return section, []


def _import_torch(section: dict[str, Any]) -> Any:
    wanted = section.get("requires", {}).get("torch", "?")
    try:
        import torch
    except ImportError:
        raise ArtifactError(f"this artifact was compiled with AOTInductor and its runtime needs torch {wanted} (pip install torch=={wanted})") from None
    have = torch.__version__.split("+")[0]
    if have.split(".")[:2] != str(wanted).split(".")[:2]:
        raise ArtifactError(f"this AOTInductor package was compiled by torch {wanted} and this torch is {have}: install torch=={wanted}, or rebuild the artifact")
    return torch


class Runner:
    """One loaded package. Calls are serialised (a package runs one call at a time per model instance);
    on CUDA with ``cuda_graphs``, each input shape is captured once as a CUDA graph and replayed."""

    def __init__(self, path: Path, section: dict[str, Any], threads: int | None = None):
        torch = _import_torch(section)
        self._torch = torch
        self.device = section.get("device", "cpu")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ArtifactError(f"{path}: this aoti artifact runs on an NVIDIA GPU and torch sees none here")
        if self.device == "cpu":
            torch.set_num_threads(int(threads or section.get("threads", 1)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = torch._inductor.aoti_load_package(str(path))
        self.input_names = list(section["input_names"])
        self._lock = threading.Lock()
        self._graphs: dict[tuple, Any] | None = {} if section.get("cuda_graphs") else None

    def _call(self, tensors: list[Any]) -> Any:
        out = self.model(*tensors)
        return out[0] if isinstance(out, (list, tuple)) else out

    def _replay(self, tensors: list[Any]) -> Any:
        """CUDA graph per input shape: captured on first use (after a warm-up run), then replayed."""
        torch = self._torch
        key = tuple((tuple(t.shape), t.dtype) for t in tensors)
        entry = self._graphs.get(key)
        if entry is None:
            static = [t.clone() for t in tensors]
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                self._call(static)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    output = self._call(static)
            except Exception as exc:  # a package whose kernels cannot be captured: run it plainly
                warnings.warn(f"CUDA graph capture failed, running without it ({first_line(exc, 120)})", RuntimeWarning, stacklevel=3)
                self._graphs = None
                return self._call(tensors)
            entry = self._graphs[key] = (graph, static, output)
        graph, static, output = entry
        for slot, tensor in zip(static, tensors):
            slot.copy_(tensor)
        graph.replay()
        return output

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        tensors = [torch.from_numpy(np.ascontiguousarray(feed[name])).to(self.device) for name in self.input_names]
        with self._lock, torch.inference_mode():
            out = self._replay(tensors) if self._graphs is not None else self._call(tensors)
            # A copy the caller owns: on CPU the package's output buffer, on CUDA a replayed graph's, is its own.
            return out.float().cpu().numpy().copy() if self.device == "cpu" else out.float().cpu().numpy()


def load(artifact_dir: Path, backend: dict[str, Any], threads: int | None = None, cache_dir: Path | None = None) -> Runner:
    return Runner(Path(artifact_dir) / backend["files"]["model"], backend, threads)
