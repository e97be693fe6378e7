"""The physical floor: how much arithmetic a second of audio needs, and how fast this machine can do it.

Two numbers make the floor of a precision: the model's FLOPs per second of audio (one multiply-add is
2 operations; convolutions, transposed convolutions and matrix products, which are >99 % of the
work) and the machine's peak rate in that precision, measured as the best of a few large square matrix
products on the benchmark's thread count. ``floor time = FLOPs / peak``: no implementation of that
precision can be faster on this machine, so ``measured / floor`` says how much is left to win.

The peak is measured, not taken from a data sheet, with every implementation that is installed:
torch's (oneDNN ``matmul`` for fp32 and bf16, ``_int_mm`` s8 x s8 -> s32 for int8), the eager
baseline, and each backend's ``peak_kernel`` hook (``backends.base``): OpenVINO's MatMul for every
precision (for int8 a FakeQuantize -> MatMul its CPU plugin runs as an int8 ``FullyConnected``, the
path int8 artifacts take), ONNX Runtime's ``MatMulInteger`` (u8 x s8 -> s32) for int8. The best one is
the peak; the others are recorded beside it. The FLOP counts come from ``measure.flops``. torch and
the backends' libraries are imported inside the functions that need them.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

from ..errors import first_line
from .flops import graph_flops, synthesizer_flops

__all__ = ["PRECISIONS", "floor_seconds", "graph_flops", "measure_peaks", "model_flops", "precision_class"]

PRECISIONS = ("fp32", "bf16", "int8")
DEFAULT_MATRIX_SIZE = 2048  # large enough to be compute bound, small enough for ~20 ms per product
TORCH_KERNELS = {"fp32": "torch.matmul fp32", "bf16": "torch.matmul bf16", "int8": "torch._int_mm s8s8"}


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


def implementations(precision: str) -> list[tuple[str, Callable[[int, int, str], Callable[[], Any]]]]:
    """The candidate kernels for ``precision``: torch's (the eager baseline), then every registered
    backend's ``peak_kernel`` that has one for it, as ``(name, make(size, threads, precision) -> run)``."""
    from ..backends import backend_modules, has_hook

    found = [(TORCH_KERNELS[precision], _torch_matmul)]
    for backend in backend_modules():
        if has_hook(backend, "peak_kernel") and precision in backend.PEAK_KERNELS:
            found.append((f"{backend.NAME} {backend.PEAK_KERNELS[precision]}", backend.peak_kernel))
    return found


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
        for name, make in implementations(precision):
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

# measure.bench counts with these two under their names here.
model_flops = synthesizer_flops


def floor_seconds(flops: float, precision: str, peaks: dict[str, Any]) -> float | None:
    """The least time ``flops`` can take at ``precision`` on the measured machine (None: no peak)."""
    entry = peaks.get(precision_class(precision)) or {}
    gops = entry.get("gops")
    return flops / (gops * 1e9) if gops else None
