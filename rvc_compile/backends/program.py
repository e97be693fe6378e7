"""Rewrites of a captured ``torch.export`` program (an unlifted FX GraphModule, ``ExportedProgram.module()``)
that the AOTInductor backend applies before compiling it: the precision plan's layers lowered to bf16 or
fp16 with fp32 islands (``lower``), and 1-d convolutions as channels-last 2-d ones (``channels_last``).
Layers are named as ``precision.layers`` names the ONNX graph's (``layer_names``), so one recipe name
addresses the same layer in every backend. torch is imported inside the functions only.
"""

from __future__ import annotations

from typing import Any

# Weighted ATen ops a low-precision plan lowers (their layer is the module that called them).
LOWERED_OPS = ("conv1d", "conv_transpose1d", "conv2d", "convolution", "linear")
DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def _op_name(node: Any) -> str | None:
    import torch

    if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
        return None
    return node.target._schema.name.split("::")[-1]


def _module_path(node: Any) -> str | None:
    stack = node.meta.get("nn_module_stack") or {}
    paths = [path for path, _ in stack.values() if path]
    return paths[-1] if paths else None


def layer_names(graph: Any) -> dict[Any, str]:
    """The weighted nodes of an FX graph -> their layer names, as ``precision.layers.name_layers`` names the
    ONNX nodes: the calling module's path, ``#n`` for a module's later calls."""
    names, used = {}, set()
    for node in graph.nodes:
        if _op_name(node) not in LOWERED_OPS:
            continue
        path = _module_path(node)
        if path is None:
            continue
        name, count = path, 0
        while name in used:
            count += 1
            name = f"{path}#{count}"
        used.add(name)
        names[node] = name
    return names


def lower(module: Any, layers: list[str], dtype_name: str) -> list[str]:
    """Run ``layers`` of ``module`` (an unlifted FX GraphModule, ``ExportedProgram.module()``) in ``dtype_name``:
    their input is cast down, their weights are stored in that dtype, their output is cast back to fp32.
    Returns the layers lowered (those of ``layers`` the graph has)."""
    import torch

    dtype = getattr(torch, DTYPES[dtype_name])
    graph = module.graph
    wanted = set(layers)
    named = {node: name for node, name in layer_names(graph).items() if name in wanted}
    lowered_users = set(named)
    converted: set[str] = set()
    for node, name in named.items():
        args = list(node.args)
        for index in range(min(3, len(args))):  # input, weight, bias
            arg = args[index]
            if not isinstance(arg, torch.fx.Node):
                continue
            if arg.op == "get_attr" and all(user in lowered_users for user in arg.users):
                if arg.target not in converted:  # stored in the low dtype: no cast at run time
                    owner, _, leaf = arg.target.rpartition(".")
                    holder = module.get_submodule(owner) if owner else module
                    tensor = getattr(holder, leaf)
                    setattr(holder, leaf, torch.nn.Parameter(tensor.detach().to(dtype), requires_grad=False))
                    converted.add(arg.target)
                continue
            with graph.inserting_before(node):
                args[index] = graph.call_function(torch.ops.aten._to_copy.default, (arg,), {"dtype": dtype})
        node.args = tuple(args)
        with graph.inserting_after(node):
            back = graph.call_function(torch.ops.aten._to_copy.default, (node,), {"dtype": torch.float32})
        node.replace_all_uses_with(back, delete_user_cb=lambda user: user is not back)
    graph.lint()
    module.recompile()
    return list(named.values())


def _conv_args(node: Any) -> dict[str, Any] | None:
    """A ``conv1d``/``conv_transpose1d`` (default overloads) call's arguments by name, defaults filled in."""
    import torch

    aten = torch.ops.aten
    schemas = {
        aten.conv1d.default: ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
        aten.conv_transpose1d.default: ("input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation"),
    }
    if node.op != "call_function" or node.target not in schemas:
        return None
    values = {"bias": None, "stride": [1], "padding": [0], "dilation": [1], "groups": 1, "output_padding": [0]}
    values.update(zip(schemas[node.target], node.args))
    values.update(node.kwargs)
    return values


def channels_last(module: Any) -> int:
    """Run every 1-d convolution of ``module`` (an unlifted FX GraphModule) as a 2-d one of height 1 on
    channels-last activations; returns how many. Exact (the same products and sums), and it removes the
    layout reorders oneDNN otherwise does around every convolution: on the full-size voice (2 threads,
    AMX) a bf16 run of 2 s went from 551 to 242 ms in eager, half of it spent in those copies before.
    Between convolutions the activations stay [N, C, W] tensors with channels-last strides, which
    elementwise ops keep, so no copy is left but the first."""
    import torch

    aten = torch.ops.aten
    graph = module.graph
    count = 0
    for node in list(graph.nodes):
        args = _conv_args(node)
        if args is None:
            continue
        with graph.inserting_before(node):
            x = graph.call_function(aten.unsqueeze.default, (args["input"], 2))
            x = graph.call_function(aten.contiguous.default, (x,), {"memory_format": torch.channels_last})
            w = graph.call_function(aten.unsqueeze.default, (args["weight"], 2))
            pair = {key: [1 if key in ("stride", "dilation") else 0, *args[key]] for key in ("stride", "padding", "dilation", "output_padding")}
            if node.target == aten.conv1d.default:
                y = graph.call_function(aten.conv2d.default, (x, w, args["bias"], pair["stride"], pair["padding"], pair["dilation"], args["groups"]))
            else:
                y = graph.call_function(aten.conv_transpose2d.input, (x, w, args["bias"], pair["stride"], pair["padding"], pair["output_padding"],
                                                                    args["groups"], pair["dilation"]))
            y = graph.call_function(aten.squeeze.dim, (y, 2))
        node.replace_all_uses_with(y)
        graph.erase_node(node)
        count += 1
    graph.lint()
    module.recompile()
    return count
