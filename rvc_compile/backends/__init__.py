"""Backends: one module each, with one small interface.

- ``check_target(target)``, ``check_policy(target, precision_policy)``: refuse what the backend cannot
  do (RecipeError), before any work;
- ``build(onnx_path, target, out_dir, plan, workdir=...) -> dict``: apply the ``precision.PrecisionPlan``
  (fp16 islands, int8 quantization with calibration feeds), write the backend's files into the artifact
  folder and return the manifest's ``backend`` section (file names, session/compile options);
- ``load(artifact_dir, backend_section, threads=None, cache_dir=None) -> runner``: ``runner.run(feed) ->
  audio`` for the graph's inputs (``cache_dir``: where the backend may keep compiled blobs);
- ``adapt_to_cpu(backend_section, isa) -> (section, notes)``: the section to load on a CPU of that ISA
  class (``machine.IsaClass``), and what it changed and why;
- ``ISA_EMULATION``: whether its kernels obey ``ONEDNN_MAX_CPU_ISA`` (builds then check a lower target
  class under that cap).

Module top levels import numpy and the standard library only; each backend's library is imported in
the function that needs it, so ``import rvc_compile.runtime`` stays light.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import ArtifactError, RecipeError

BACKENDS = {
    "onnxruntime": "rvc_compile.backends.onnxruntime",
    "openvino": "rvc_compile.backends.openvino",
}
PLANNED = {"tensorrt", "aoti"}


def get_backend(name: str, *, for_build: bool = True) -> ModuleType:
    if name not in BACKENDS:
        if for_build:
            hint = " (planned, not implemented yet)" if name in PLANNED else ""
            raise RecipeError(f"target.backend: backend {name!r} is not available{hint}; available: {', '.join(BACKENDS)}")
        raise ArtifactError(f"artifact uses backend {name!r}, which this rvc-compile cannot load")
    return importlib.import_module(BACKENDS[name])
