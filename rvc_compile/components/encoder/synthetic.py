"""Random-weight content encoders in the Transformers folder format RVC ships (tests and measurements).

``write_encoder_folder`` writes ``config.json`` (a full ``HubertConfig`` with ``architectures:
["HubertModelWithFinalProj"]``, as lengyue233/content-vec-best and Applio's contentvec folder have) and
``model.safetensors`` or ``pytorch_model.bin`` holding ``HubertModel``'s tensors (optionally under a
``hubert.`` prefix) plus ``final_proj.weight``/``final_proj.bias`` and the training-only
``masked_spec_embed``. The positional convolution's weight norm is stored the way transformers 4.x saved
it (``weight_g``/``weight_v``, the shipped folders' layout) or the way 5.x does (``parametrizations``).

Initialisation. transformers' default (normal, std 0.02, for every Linear) leaves the transformer
layers almost idle in a small model: each adds under 1 % to its residual stream, so layer 9 and layer 12
give nearly the same features and a check could not tell them apart. Here every Linear is drawn with
std 1/sqrt(fan_in) (unit gain), biases and layer-norm parameters get small random offsets (so no
parameter is a trivial 0 or 1): every layer changes its input by a sizeable fraction while the
post-norm blocks keep the features well scaled (unit variance, no growth with depth), and final_proj
output has a unit-scale spread. The conv feature extractor keeps transformers' Kaiming init.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SIZES: dict[str, dict[str, Any]] = {
    # 12 layers, so that v1 (layer 9) and v2 (layer 12) both exist; narrow, so a build takes seconds.
    "tiny": {"hidden_size": 32, "num_hidden_layers": 12, "num_attention_heads": 2, "intermediate_size": 64,
             "conv_dim": [16] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4, "classifier_proj_size": 16},
    # tiny, with RVC's v1 feature width (final_proj to 256): pairs with v1 voices in pipeline tests
    "tiny-v1": {"hidden_size": 32, "num_hidden_layers": 12, "num_attention_heads": 2, "intermediate_size": 64,
                "conv_dim": [16] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4, "classifier_proj_size": 256},
    # hubert-base / ContentVec sizes
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
             "conv_dim": [512] * 7, "num_conv_pos_embeddings": 128, "num_conv_pos_embedding_groups": 16, "classifier_proj_size": 256},
}


def encoder_config(size: str = "tiny") -> dict[str, Any]:
    """The ``config.json`` mapping of a ``size`` encoder, as the shipped ContentVec folder writes it."""
    from transformers import HubertConfig

    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, not {size!r}")
    config = HubertConfig(**SIZES[size]).to_dict()
    config["architectures"] = ["HubertModelWithFinalProj"]
    return config


def _initialise(model: Any, seed: int) -> None:
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) / module.in_features ** 0.5)
                module.bias.copy_(0.02 * torch.randn(module.bias.shape, generator=generator))
            elif isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm)):
                module.weight.copy_(1.0 + 0.1 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
        # Training-only (spec-augment's mask vector): stored in the shipped files, unused at inference.
        if hasattr(model, "masked_spec_embed"):
            model.masked_spec_embed.copy_(torch.rand(model.masked_spec_embed.shape, generator=generator))


def encoder_state_dict(size: str = "tiny", seed: int = 0, *, weight_norm: str = "weight_g") -> tuple[dict[str, Any], dict[str, Any]]:
    """(config mapping, state dict in the plain layout: HubertModel's names, ``final_proj.*``)."""
    import torch
    from transformers import HubertConfig, HubertModel

    config = encoder_config(size)
    torch.manual_seed(seed)  # the conv layers' Kaiming init
    hubert = HubertModel(HubertConfig(**config)).eval()
    _initialise(hubert, seed)
    final_proj = torch.nn.Linear(config["hidden_size"], config["classifier_proj_size"])
    _initialise(final_proj, seed + 1)
    state = {name: tensor.detach().clone().contiguous() for name, tensor in hubert.state_dict().items()}
    if weight_norm == "weight_g":
        prefix = "encoder.pos_conv_embed.conv."
        state[prefix + "weight_g"] = state.pop(prefix + "parametrizations.weight.original0")
        state[prefix + "weight_v"] = state.pop(prefix + "parametrizations.weight.original1")
    elif weight_norm != "parametrizations":
        raise ValueError(f"weight_norm must be 'weight_g' or 'parametrizations', not {weight_norm!r}")
    state["final_proj.weight"] = final_proj.weight.detach().clone()
    state["final_proj.bias"] = final_proj.bias.detach().clone()
    return config, state


def write_encoder_folder(path: str | Path, size: str = "tiny", seed: int = 0, safetensors: bool = True, prefix: str = "",
                         *, weight_norm: str = "weight_g") -> Path:
    """A random-weight ContentVec/HuBERT folder at ``path`` (created): ``config.json`` and
    ``model.safetensors`` (or ``pytorch_model.bin``); ``prefix`` ("" or "hubert.") goes before
    HubertModel's tensor names (final_proj keeps its own)."""
    import torch

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config, state = encoder_state_dict(size, seed, weight_norm=weight_norm)
    state = {(name if name.startswith("final_proj.") else prefix + name): tensor for name, tensor in state.items()}
    (path / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if safetensors:
        from safetensors.torch import save_file

        save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    else:
        torch.save(state, path / "pytorch_model.bin")
    return path
