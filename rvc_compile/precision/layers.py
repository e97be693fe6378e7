"""Layer names: every weighted node of a captured graph is named after the torch module it came from.

Users name layers in recipes (``precision_policy.keep_fp32``) and reports list per-layer precision and
sensitivity by the same names: the module paths of the checkpoint's state dict (``dec.conv_post``,
``dec.resblocks.3.convs1.2``, ``enc_p.encoder.attn_layers.0.conv_q``). Capture renames the ONNX nodes
accordingly, and the names survive simplification, quantization and conversion to OpenVINO, so one
name addresses a layer in every backend.
"""

from __future__ import annotations

import ast
import re
from typing import Any, Iterable

from ..errors import RecipeError

WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _module_path(node: Any) -> str | None:
    metadata = {prop.key: prop.value for prop in node.metadata_props}
    scopes = metadata.get("pkg.torch.onnx.name_scopes")
    if scopes:  # dynamo exporter: ['', 'dec', 'dec.ups.0', 'conv_transpose1d']
        try:
            parts = ast.literal_eval(scopes)
        except (ValueError, SyntaxError):
            parts = []
        modules = [p for p in parts[:-1] if p]
        if modules:
            return modules[-1]
    if node.name.startswith("/"):  # TorchScript exporter: /dec/ups.0/ConvTranspose
        parts = [p for p in node.name.split("/") if p][:-1]
        if parts:
            return ".".join(parts)
    return None


def name_layers(model: Any) -> list[str]:
    """Rename the weighted nodes of ``model`` (onnx.ModelProto, in place) to module paths; return them.

    Idempotent: nodes already named (no exporter metadata or exporter-style name left) keep their names,
    so it can run again after a tool such as onnxslim has fused and renamed nodes.
    """
    initializers = {init.name for init in model.graph.initializer}
    constants = {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    nodes = [node for node in model.graph.node if node.op_type in WEIGHTED_OPS]
    paths = {id(node): _module_path(node) for node in nodes}
    used = {node.name for node in nodes if paths[id(node)] is None}
    for node in nodes:
        path = paths[id(node)]
        if path is None:
            continue
        weighted = any(name in initializers or name in constants for name in node.input[1:2])
        base = path if weighted else f"{path}.{node.op_type.lower()}"
        name, count = base, 0
        while name in used:
            count += 1
            name = f"{base}#{count}"
        used.add(name)
        node.name = name
        del node.metadata_props[:]  # the names are final; the exporter's scopes would rename them again
    return [node.name for node in nodes]


def carry_names(before: Any, after: Any) -> None:
    """Give the weighted nodes of ``after`` (a rewritten copy of ``before``) their layer names back.

    Graph tools that fuse nodes (a Conv with the Add of a folded constant, say) name the fused node
    after a tensor of the original graph; the layer that produced that tensor lends its name."""
    by_tensor = {}
    names = set()
    for node in before.graph.node:
        if node.op_type in WEIGHTED_OPS:
            names.add(node.name)
            for output in node.output:
                by_tensor[output] = node.name
    used = {node.name for node in after.graph.node if node.op_type in WEIGHTED_OPS and node.name in names}
    for node in after.graph.node:
        if node.op_type not in WEIGHTED_OPS or node.name in names:
            continue
        candidate = by_tensor.get(node.name) or next((by_tensor[o] for o in node.output if o in by_tensor), None)
        if candidate is not None and candidate not in used:
            node.name = candidate
            used.add(candidate)


def weighted_layers(model: Any) -> list[str]:
    """Names of the nodes that carry weights (a Conv/MatMul/Gemm with a constant second input)."""
    initializers = {init.name for init in model.graph.initializer}
    constants = {out for node in model.graph.node if node.op_type == "Constant" for out in node.output}
    return [
        node.name for node in model.graph.node
        if node.op_type in WEIGHTED_OPS and any(name in initializers or name in constants for name in node.input[1:2])
    ]


def matches(pattern: str, name: str) -> bool:
    """A pattern names a layer exactly or every layer under a module prefix (``dec.ups`` covers ``dec.ups.0``)."""
    return name == pattern or name.startswith(pattern + ".") or name.startswith(pattern + "#")


def resolve(patterns: Iterable[str], names: list[str], key: str) -> list[str]:
    """The layers ``patterns`` select, in graph order; an unknown pattern is a RecipeError naming ``key``."""
    selected: list[str] = []
    for index, pattern in enumerate(patterns):
        hits = [name for name in names if matches(pattern, name)]
        if not hits:
            close = sorted({re.sub(r"\.\d+.*$", "", n) for n in names if n.split(".")[0] == pattern.split(".")[0]})[:5]
            hint = f"; layers look like {', '.join(close)}, ..." if close else f"; top-level modules: {', '.join(sorted({n.split('.')[0] for n in names}))}"
            raise RecipeError(f"{key}[{index}]: no layer named {pattern!r}{hint}")
        selected += [name for name in hits if name not in selected]
    return [name for name in names if name in selected]
