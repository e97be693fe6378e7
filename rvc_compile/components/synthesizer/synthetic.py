"""Official-format RVC checkpoints with random weights, for tests and demos (nothing is downloaded).

Files are written the way RVC writes them: the small model as ``process_ckpt.savee`` does (fp16,
``enc_q`` removed, 18-entry config, ``info``/``sr``/``f0``/``version``), the training checkpoint as
``utils.save_checkpoint`` does (``model`` with ``enc_q``, ``iteration``, ``optimizer``,
``learning_rate``). Weight-normed layers are stored as magnitude/direction pairs in either key style.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .spec import SAMPLE_RATE_TAGS, from_config_list, official_config

# Layers that RVC wraps in weight norm (the keys hold g/v pairs instead of a weight).
WEIGHT_NORMED = re.compile(
    r"^(flow\.flows\.\d+\.enc\.(in_layers|res_skip_layers)\.\d+|flow\.flows\.\d+\.enc\.cond_layer"
    r"|dec\.ups\.\d+|dec\.resblocks\.\d+\.convs[12]?\.\d+|enc_q\.enc\.(in_layers|res_skip_layers)\.\d+"
    r"|enc_q\.enc\.cond_layer)\.weight$"
)
SIZES = ("small", "full")


def checkpoint_config(version: str, sample_rate: str, size: str = "full") -> list[Any]:
    """The official config, or a narrow one with the same rates and layer structure (size='small')."""
    config = official_config(version, sample_rate)
    if size == "small":
        config[2:8] = [16, 32, 64, 2, 2, 3]  # inter, hidden, filter, heads, layers, kernel
        config[10], config[11] = [3, 5], [[1, 3, 5], [1, 3, 5]]
        config[13] = 64  # upsample_initial_channel
        config[15], config[16] = 4, 16  # speakers, gin
    elif size != "full":
        raise ValueError(f"size must be one of {SIZES}")
    return config


def spread_channel_scales(state_dict: dict[str, Any], spread: float, seed: int) -> dict[str, Any]:
    """Give the decoder's ResBlock channels widely spread scales, as trained voices have, without changing
    the model's output.

    A default random initialisation gives every channel of a layer one scale, which flatters int8 (one
    activation range fits all channels). Trained voices have channels whose activations differ by orders
    of magnitude. Each ResBlock's first conv gets its output channel c scaled by s_c and the second conv
    its input channel c by 1/s_c (LeakyReLU between them commutes with positive scales), with log10(s_c)
    drawn from N(0, spread): the function is unchanged, its int8 quantization is not.
    """
    import torch

    if spread <= 0:
        return state_dict
    generator = torch.Generator().manual_seed(seed + 7919)
    out = dict(state_dict)
    pattern = re.compile(r"^dec\.resblocks\.(\d+)\.convs1\.(\d+)\.weight$")
    for key in state_dict:
        match = pattern.match(key)
        if not match:
            continue
        block, index = match.groups()
        second = f"dec.resblocks.{block}.convs2.{index}.weight"
        channels = state_dict[key].shape[0]
        scales = torch.pow(10.0, torch.randn(channels, generator=generator) * spread)
        out[key] = state_dict[key] * scales[:, None, None]
        bias = key[: -len("weight")] + "bias"
        if bias in out:
            out[bias] = state_dict[bias] * scales
        out[second] = state_dict[second] / scales[None, :, None]
    return out


def random_state_dict(config: list[Any], version: str, f0: bool, seed: int) -> dict[str, Any]:
    """Random inference weights whose output is audio-like: neither silent nor clipped."""
    import torch

    from .model import Synthesizer

    spec = from_config_list(config, version=version, f0=f0, source="synthetic")
    torch.manual_seed(seed)
    model = Synthesizer(spec)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("emb_rel_k") or name.endswith("emb_rel_v"):
                continue
            if name.startswith("flow.") and ".post." in name:
                param.mul_(0.3)  # RVC zero-initialises these; small random values keep the flow mild
        # Random decoders put a large DC offset into the last conv's input; remove it (project the
        # weights off the mean input) and scale so a test tone comes out at a speech-like level.
        frames = 40
        inputs = [torch.randn(1, frames, spec.feature_dim)] + ([torch.full((1, frames), 200.0)] if f0 else [])
        inputs += [torch.zeros(1, dtype=torch.long), torch.zeros(1, spec.inter_channels, frames)]
        if f0:
            inputs.append(torch.zeros(1, frames * spec.hop_length))
        captured = []
        hook = model.dec.conv_post.register_forward_hook(lambda module, args, out: captured.append(args[0]))
        model.eval()(*inputs)
        hook.remove()
        mean_input = torch.nn.functional.leaky_relu(captured[0]).mean(dim=2)[0]  # [C]
        weight = model.dec.conv_post.weight  # [1, C, K]
        dc_gain = (weight[0].sum(dim=1) * mean_input).sum()
        weight[0] -= (dc_gain / (mean_input.square().sum() * weight.shape[2])) * mean_input[:, None]
        pre_tanh = torch.nn.functional.conv1d(torch.nn.functional.leaky_relu(captured[0]), weight, padding=3)
        weight.mul_(0.1 / max(float(pre_tanh.square().mean().sqrt()), 1e-6))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _posterior_encoder_weights(config: list[Any], generator: Any) -> dict[str, Any]:
    """enc_q (the training-only posterior encoder), so training checkpoints look as RVC writes them."""
    import torch

    spec_channels, inter, hidden, gin = config[0], config[2], config[3], config[16]
    n_layers = 16
    weights = {
        "enc_q.pre.weight": torch.randn(hidden, spec_channels, 1, generator=generator) * 0.02,
        "enc_q.pre.bias": torch.zeros(hidden),
        "enc_q.proj.weight": torch.randn(inter * 2, hidden, 1, generator=generator) * 0.02,
        "enc_q.proj.bias": torch.zeros(inter * 2),
        "enc_q.enc.cond_layer.weight": torch.randn(2 * hidden * n_layers, gin, 1, generator=generator) * 0.02,
        "enc_q.enc.cond_layer.bias": torch.zeros(2 * hidden * n_layers),
    }
    for i in range(n_layers):
        out = 2 * hidden if i < n_layers - 1 else hidden
        weights[f"enc_q.enc.in_layers.{i}.weight"] = torch.randn(2 * hidden, hidden, 5, generator=generator) * 0.02
        weights[f"enc_q.enc.in_layers.{i}.bias"] = torch.zeros(2 * hidden)
        weights[f"enc_q.enc.res_skip_layers.{i}.weight"] = torch.randn(out, hidden, 1, generator=generator) * 0.02
        weights[f"enc_q.enc.res_skip_layers.{i}.bias"] = torch.zeros(out)
    return weights


def split_weight_norm(state_dict: dict[str, Any], key_style: str) -> dict[str, Any]:
    """Store weight-normed layers as (magnitude, direction) pairs, in RVC's old or new key style."""
    import torch

    if key_style not in ("weight_g", "parametrizations"):
        raise ValueError("key_style must be 'weight_g' or 'parametrizations'")
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        if not WEIGHT_NORMED.match(key):
            out[key] = value
            continue
        prefix = key[: -len(".weight")]
        magnitude = torch.linalg.vector_norm(value.reshape(value.shape[0], -1), dim=1)
        magnitude = magnitude.reshape((-1,) + (1,) * (value.dim() - 1))
        # A direction with another scale than the weight, as after training, so folding is exercised.
        direction = value * 1.7
        if key_style == "weight_g":
            out[prefix + ".weight_g"], out[prefix + ".weight_v"] = magnitude, direction
        else:
            out[prefix + ".parametrizations.weight.original0"] = magnitude
            out[prefix + ".parametrizations.weight.original1"] = direction
    return out


def make_checkpoint(
    path: str | Path,
    *,
    version: str = "v2",
    sample_rate: str = "40k",
    f0: bool = True,
    size: str = "full",
    layout: str = "small-model",
    key_style: str = "weight_g",
    seed: int = 0,
    scale_spread: float = 0.0,
) -> Path:
    """Write an RVC checkpoint with random weights; returns its path.

    ``scale_spread``: std of log10 of per-channel scales in the decoder (``spread_channel_scales``): 0 is
    a default initialisation; about 0.5 spreads channel ranges over two decades, like trained voices."""
    import torch

    if sample_rate not in SAMPLE_RATE_TAGS:
        raise ValueError(f"sample_rate must be one of {list(SAMPLE_RATE_TAGS)}")
    config = checkpoint_config(version, sample_rate, size)
    weights = spread_channel_scales(random_state_dict(config, version, f0, seed), scale_spread, seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "small-model":
        weights = split_weight_norm(weights, key_style)
        payload: dict[str, Any] = {
            "weight": {k: v.half() for k, v in weights.items()},
            "config": config,
            "info": "0epoch",
            "sr": sample_rate,
            "f0": int(f0),
            "version": version,
        }
    elif layout == "training":
        generator = torch.Generator().manual_seed(seed + 1)
        weights.update(_posterior_encoder_weights(config, generator))
        weights = split_weight_norm(weights, key_style)
        payload = {
            "model": weights,
            "iteration": 1,
            "optimizer": {
                "state": {},
                "param_groups": [{"lr": 1e-4, "betas": (0.8, 0.99), "eps": 1e-9, "weight_decay": 0, "params": list(range(len(weights)))}],
            },
            "learning_rate": 1e-4,
        }
    else:
        raise ValueError("layout must be 'small-model' or 'training'")
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path
