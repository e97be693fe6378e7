"""The backend registry: name -> module. What a backend module provides is ``backends.base``'s protocol."""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import ArtifactError, RecipeError
from .base import has_hook, problems

BACKENDS = {
    "onnxruntime": "rvc_compile.backends.onnxruntime",
    "openvino": "rvc_compile.backends.openvino",
    "aoti": "rvc_compile.backends.aoti",
}
# Names the recipe schema knows that no backend implements here, with why.
NOT_AVAILABLE = {
    "tensorrt": "TensorRT's libraries come only from NVIDIA's own package index, which no machine of ours can reach, so it cannot be "
                "installed or tested; for NVIDIA GPUs use the aoti backend with target.device: cuda",
}

__all__ = ["BACKENDS", "NOT_AVAILABLE", "backend_modules", "get_backend", "has_hook"]


def get_backend(name: str, *, for_build: bool = True) -> ModuleType:
    """The backend module registered as ``name``, checked against the protocol.

    An unknown name is the user's error (RecipeError for a build, ArtifactError for an artifact); a
    registered module that lacks part of the protocol is ours (TypeError, naming what is missing).
    """
    if name not in BACKENDS:
        if for_build:
            hint = f" ({NOT_AVAILABLE[name]})" if name in NOT_AVAILABLE else ""
            raise RecipeError(f"target.backend: backend {name!r} is not available{hint}; available: {', '.join(BACKENDS)}")
        raise ArtifactError(f"artifact uses backend {name!r}, which this rvc-compile cannot load")
    module = importlib.import_module(BACKENDS[name])
    missing = problems(module)
    if missing:
        raise TypeError(f"backend module {module.__name__} does not implement the backend protocol (backends/base.py): {'; '.join(missing)}")
    if module.NAME != name:
        raise TypeError(f"backend module {module.__name__} is registered as {name!r} but its NAME is {module.NAME!r}")
    return module


def backend_modules() -> list[ModuleType]:
    """Every registered backend, in registry order (imports each module, not its library)."""
    return [get_backend(name) for name in BACKENDS]
