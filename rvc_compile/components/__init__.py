"""Component adapters: one per network family (the RVC synthesizer first); see ``components.base``.

``get_component(kind)`` finds an adapter by the kind a recipe's ``source.component`` or an artifact's
``manifest.component.kind`` names. Built-in adapters are imported on first use (their modules import
numpy only at the top, so the runtime can use them). Others come from the places the user controls,
never from an artifact: ``register(adapter)`` in the process, the ``RVC_COMPILE_COMPONENTS`` environment
variable (``module:Class`` entries separated by commas; child processes of a build inherit it), or a
package's ``rvc_compile.components`` entry point.
"""

from __future__ import annotations

import importlib
import os

from ..errors import ArtifactError, RecipeError
from .base import Component, LoadedSource, Signature, TensorSpec

BUILTIN = {
    "synthesizer": "rvc_compile.components.synthesizer.adapter:SynthesizerComponent",
    "content-encoder": "rvc_compile.components.encoder.adapter:ContentEncoderComponent",
    "rmvpe": "rvc_compile.components.pitch.adapter:RmvpeComponent",
}
ENV_VAR = "RVC_COMPILE_COMPONENTS"
ENTRY_POINT_GROUP = "rvc_compile.components"
DEFAULT_KIND = "synthesizer"  # artifacts of format 2 and 3 have no component section: all are synthesizers
_REGISTERED: dict[str, Component] = {}
_IMPORTED: set[str] = set()


def register(component: Component) -> Component:
    """Make ``component`` available under its ``KIND`` (replacing an earlier one of that kind)."""
    if not component.KIND:
        raise ValueError(f"{type(component).__name__} sets no KIND")
    _REGISTERED[component.KIND] = component
    return component


def _plugin_targets() -> list[str]:
    """"module:Class" of every adapter the environment and installed packages offer."""
    from importlib import metadata

    targets = [entry.value for entry in metadata.entry_points(group=ENTRY_POINT_GROUP)]
    targets += [part.strip() for part in os.environ.get(ENV_VAR, "").split(",") if part.strip()]
    return targets


def _import_plugins() -> None:
    for target in _plugin_targets():
        if target in _IMPORTED:
            continue
        module, _, name = target.partition(":")
        try:
            adapter = getattr(importlib.import_module(module), name)()
        except (ImportError, AttributeError, TypeError) as exc:
            raise RecipeError(f"{ENV_VAR} or entry point {target!r}: cannot import the component adapter ({exc})") from None
        register(adapter)
        _IMPORTED.add(target)


def known_kinds() -> list[str]:
    _import_plugins()
    return sorted({*BUILTIN, *_REGISTERED})


def get_component(kind: str, *, for_build: bool = True) -> Component:
    if kind not in _REGISTERED and kind in BUILTIN:
        module, name = BUILTIN[kind].split(":")
        register(getattr(importlib.import_module(module), name)())
    if kind not in _REGISTERED:
        _import_plugins()
    if kind not in _REGISTERED:
        message = f"component {kind!r} is not known to this rvc-compile (known: {', '.join(known_kinds())})"
        if for_build:
            raise RecipeError(f"source.component: {message}")
        raise ArtifactError(f"the artifact holds a {message}")
    return _REGISTERED[kind]


__all__ = ["Component", "LoadedSource", "Signature", "TensorSpec", "get_component", "known_kinds", "register"]
