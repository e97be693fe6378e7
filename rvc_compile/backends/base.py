"""The backend protocol: what one backend module provides, so that build, verify, bench, profile and the
runtime work on any of them without naming one.

A backend is a module (``rvc_compile/backends/<name>.py``), registered by name in ``backends.BACKENDS``.
Its module-level constants:

- ``NAME``: the registry name, also the manifest's ``backend.name``;
- ``PRECISIONS``, ``DEVICES``: what ``target.precision`` and ``target.device`` it accepts;
- ``ISA_EMULATION``: whether its kernels obey ``ONEDNN_MAX_CPU_ISA`` (builds then check a lower target
  class under that cap, see ``backends.emulated``);
- ``LIBRARIES``: the distributions whose versions key the build cache for its stage;
- ``COMPILE_CACHE``: whether ``load`` keeps compiled blobs in a ``cache_dir`` (the runtime then hands it
  the build cache's ``compiled/<name>`` area, per the artifact's ``target.compile_cache``);
- optionally ``SLOW_PRECISIONS``: ``{isa class: {precision: why}}``, precisions it runs slower than fp32
  there (``precision: auto`` leaves them out);
- optionally ``PROGRAM = True``: it compiles the captured ``torch.export`` program rather than the ONNX
  graph (AOTInductor). Capture then also saves the program, and ``build`` gets two more keywords,
  ``program`` (its file) and ``program_shapes`` (``capture.export.export_program``'s record, to export
  it again after a rewrite); the ONNX graph still names the layers the precision plan lists. Recipes
  with ONNX-stage passes or weight binding are refused for such a backend.

Its functions:

- ``check_target(target)``, ``check_policy(target, precision_policy)``: refuse what the backend cannot
  do (RecipeError), before any work;
- ``build(onnx_path, target, out_dir, plan, *, shapes, workdir) -> dict``: apply the
  ``precision.PrecisionPlan`` (fp16 islands, int8 quantization with calibration feeds), write the
  backend's files into the artifact folder and return the manifest's ``backend`` section (file names,
  session/compile options);
- ``load(artifact_dir, backend_section, threads=None, cache_dir=None) -> Runner``: ``runner.run(feed) ->
  audio`` for the graph's inputs (``cache_dir``: where the backend may keep compiled blobs);
- ``adapt_to_cpu(backend_section, isa) -> (section, notes)``: the section to load on a CPU of that ISA
  class (``machine.IsaClass``), and what it changed and why.

Optional hooks (``has_hook(backend, name)`` says whether a module has one):

- ``profile(artifact_dir, backend_section, feed, *, threads, repeat) -> NodeProfile``: per-node time of
  the artifact's graph with the backend's own profiler (``measure.profile``);
- ``peak_kernel(size, threads, precision) -> run``, with ``PEAK_KERNELS = {precision: kernel name}``: a
  ready ``size`` x ``size`` matrix product in that precision, the kernel the floor times
  (``measure.floor``); it raises when the library or kernel is missing.

Module top levels import numpy and the standard library only; each backend's library is imported in
the function that needs it, so ``import rvc_compile.runtime`` stays light.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

Feed = dict[str, np.ndarray]


class Runner(Protocol):
    """A loaded artifact graph. ``run`` may be called from several threads."""

    input_names: list[str]

    def run(self, feed: Feed) -> np.ndarray: ...


@dataclass(frozen=True)
class NodeTime:
    """One executed node of one run: its name, then the graph ops it stands for (fused into it)."""

    names: tuple[str, ...]
    op_type: str
    seconds: float


@dataclass(frozen=True)
class NodeProfile:
    """What a ``profile`` hook measured: every node of every timed run, and the runs' wall time."""

    nodes: list[NodeTime]
    total_s: float
    method: str  # the profiler, in words, for the report


class Backend(Protocol):
    """The required part of a backend module (the functions are the module's, without ``self``)."""

    NAME: str
    PRECISIONS: tuple[str, ...]
    DEVICES: tuple[str, ...]
    ISA_EMULATION: bool
    LIBRARIES: tuple[str, ...]
    COMPILE_CACHE: bool

    def check_target(self, target: Any) -> None: ...

    def check_policy(self, target: Any, policy: Any) -> None: ...

    def build(self, onnx_path: Path, target: Any, out_dir: Path, plan: Any, *, shapes: Any = None, workdir: Path | None = None) -> dict[str, Any]: ...

    def load(self, artifact_dir: Path, backend_section: dict[str, Any], threads: int | None = None, cache_dir: Path | None = None) -> Runner: ...

    def adapt_to_cpu(self, section: dict[str, Any], isa: Any) -> tuple[dict[str, Any], list[str]]: ...


class Profiler(Protocol):
    """The optional ``profile`` hook."""

    def profile(self, artifact_dir: Path, backend_section: dict[str, Any], feed: Feed, *, threads: int, repeat: int) -> NodeProfile: ...


class PeakKernels(Protocol):
    """The optional ``peak_kernel`` hook."""

    PEAK_KERNELS: dict[str, str]

    def peak_kernel(self, size: int, threads: int, precision: str) -> Callable[[], Any]: ...


# The extra keyword-only parameters of ``build`` in a backend with ``PROGRAM = True``.
PROGRAM_BUILD_KEYWORDS = ("program", "program_shapes")
CONSTANTS: dict[str, type] = {"NAME": str, "PRECISIONS": tuple, "DEVICES": tuple, "ISA_EMULATION": bool, "LIBRARIES": tuple, "COMPILE_CACHE": bool}
FUNCTIONS = ("check_target", "check_policy", "build", "load", "adapt_to_cpu")
# hook -> (its function, the constants that come with it)
HOOKS: dict[str, tuple[str, ...]] = {"profile": (), "peak_kernel": ("PEAK_KERNELS",)}


def check_supported(module: Any, target: Any, hints: dict[str, str] | None = None) -> None:
    """RecipeError unless ``target.device`` and ``target.precision`` are among the backend module's
    ``DEVICES`` and ``PRECISIONS``; ``hints``: precision -> what to use instead, for the message."""
    from ..errors import RecipeError

    if target.device not in module.DEVICES:
        raise RecipeError(f"target.device: the {module.NAME} backend supports {', '.join(module.DEVICES)}, not {target.device!r}")
    if target.precision not in module.PRECISIONS:
        hint = f" ({hints[target.precision]})" if hints and target.precision in hints else ""
        raise RecipeError(f"target.precision: the {module.NAME} backend supports {', '.join(module.PRECISIONS)}, not {target.precision!r}{hint}")


def require_native_bf16(target: Any, instead: str) -> None:
    """RecipeError for bf16 on a target CPU class that would only emulate it (slower than fp32)."""
    from ..errors import RecipeError
    from ..machine import resolve_target_cpu

    isa = resolve_target_cpu(target.cpu)
    if target.precision == "bf16" and not isa.native_bf16:
        where = "this machine" if target.cpu == "auto" else f"target.cpu {target.cpu}"
        raise RecipeError(f"target.precision: bf16 needs a CPU with native bf16 (AVX-512 BF16 or AMX); {where} is {isa.name}, "
                          f"where bf16 is emulated and slower than fp32 ({instead})")


def problems(module: Any) -> list[str]:
    """What keeps ``module`` from being a backend: missing or mistyped names, half-provided hooks."""
    found = []
    for name, kind in CONSTANTS.items():
        if not hasattr(module, name):
            found.append(f"no {name}")
        elif not isinstance(getattr(module, name), kind):
            found.append(f"{name} is not a {kind.__name__}")
    found += [f"no function {name}()" for name in FUNCTIONS if not callable(getattr(module, name, None))]
    for hook, companions in HOOKS.items():
        present = [name for name in (hook, *companions) if hasattr(module, name)]
        if present and len(present) < 1 + len(companions):
            found.append(f"hook {hook} needs {', '.join((hook, *companions))} (has only {', '.join(present)})")
    return found


def has_hook(backend: Any, hook: str) -> bool:
    """Whether ``backend`` provides the optional ``hook`` ('profile', 'peak_kernel')."""
    if hook not in HOOKS:
        raise ValueError(f"unknown backend hook {hook!r}; hooks: {', '.join(HOOKS)}")
    return callable(getattr(backend, hook, None)) and all(hasattr(backend, name) for name in HOOKS[hook])
