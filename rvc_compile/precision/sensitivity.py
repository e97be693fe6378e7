"""Per-layer int8 sensitivity, measured on the torch graph with simulated quantization.

For every weighted layer (a Conv1d or Linear, named by its module path as in ``rvc_compile.precision.layers``),
quantize that layer alone the way int8 backends do (weights symmetric per output channel, activations
asymmetric per tensor with ranges from the calibration set) and measure how far the output moves from
fp32 on held-out inputs. The result ranks layers for accuracy-aware quantization and tells the report
what keeping each layer in fp32 buys. Backend-independent: the same ranking drives NNCF and ONNX Runtime.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..verify.metrics import log_mel_distance_db, snr_db


def _fake_quantize_weight(weight: Any, per_channel: bool) -> Any:
    import torch

    flat = weight.reshape(weight.shape[0], -1)
    scale = flat.abs().amax(dim=1) if per_channel else flat.abs().max().expand(weight.shape[0])
    scale = (scale / 127.0).clamp_min(1e-12).reshape((-1,) + (1,) * (weight.dim() - 1))
    return torch.clamp(torch.round(weight / scale), -127, 127) * scale


def _fake_quantize_activation(x: Any, low: float, high: float) -> Any:
    import torch

    low, high = min(low, 0.0), max(high, 0.0)
    scale = max(high - low, 1e-12) / 255.0
    zero_point = round(-low / scale)
    return (torch.clamp(torch.round(x / scale) + zero_point, 0, 255) - zero_point) * scale


def quantizable_layers(model: Any) -> dict[str, Any]:
    """Module path -> module for every Conv1d / Linear (the layers int8 backends quantize)."""
    from torch import nn

    return {name: module for name, module in model.named_modules() if isinstance(module, (nn.Conv1d, nn.Linear))}


def activation_ranges(model: Any, layers: dict[str, Any], feeds: list[dict[str, np.ndarray]], names: list[str]) -> dict[str, tuple[float, float]]:
    """(min, max) of every layer's input over the calibration feeds."""
    import torch

    ranges: dict[str, tuple[float, float]] = {}
    hooks = []
    for name, module in layers.items():
        def hook(module: Any, args: Any, name: str = name) -> None:
            low, high = float(args[0].min()), float(args[0].max())
            old = ranges.get(name, (low, high))
            ranges[name] = (min(old[0], low), max(old[1], high))
        hooks.append(module.register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            for feed in feeds:
                model(*[torch.from_numpy(feed[n]) for n in names])
    finally:
        for handle in hooks:
            handle.remove()
    return ranges


def layer_sensitivity(
    model: Any,
    names: list[str],
    calibration: list[dict[str, np.ndarray]],
    validation: list[dict[str, np.ndarray]],
    sample_rate: int,
    *,
    per_channel: bool = True,
    layers: list[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, dict[str, float]]:
    """For each layer: output SNR (dB) and log-mel distance (dB) with only that layer quantized to int8."""
    import torch

    modules = quantizable_layers(model)
    if layers is not None:
        modules = {name: modules[name] for name in layers if name in modules}
    ranges = activation_ranges(model, modules, calibration, names)
    inputs = [[torch.from_numpy(feed[n]) for n in names] for feed in validation]
    with torch.inference_mode():
        references = [model(*args).numpy().reshape(-1) for args in inputs]
    result = {}
    for index, (name, module) in enumerate(modules.items()):
        if name not in ranges:
            continue  # never ran (e.g. a branch this model does not take)
        original = module.weight.data.clone()
        low, high = ranges[name]
        handle = module.register_forward_pre_hook(lambda m, args, low=low, high=high: (_fake_quantize_activation(args[0], low, high),) + tuple(args[1:]))
        module.weight.data = _fake_quantize_weight(original, per_channel)
        try:
            with torch.inference_mode():
                outputs = [model(*args).numpy().reshape(-1) for args in inputs]
        finally:
            module.weight.data = original
            handle.remove()
        snr = [snr_db(ref, out) for ref, out in zip(references, outputs)]
        mel = [log_mel_distance_db(ref, out, sample_rate) for ref, out in zip(references, outputs)]
        result[name] = {"snr_db": float(min(snr)), "log_mel_db": float(max(mel))}
        if progress:
            progress(index + 1, len(modules))
    return result


def layer_flops(model: Any, names: list[str], feed: dict[str, np.ndarray], *, seconds: float) -> dict[str, float]:
    """FLOPs (2 per multiply-add) per second of audio of every Conv1d / Linear, measured on ``feed``
    (counted by ``measure.flops.torch_flops``)."""
    import torch

    from ..measure.flops import torch_flops

    _, by_module = torch_flops(model, [torch.from_numpy(feed[n]) for n in names])
    return {name: by_module[name] / seconds for name in quantizable_layers(model) if name in by_module}
