"""The content encoder's inference model (torch, build side only): transformers' ``HubertModel`` cut to
the layers RVC reads, plus ``final_proj`` for v1 voices.

RVC's pipeline runs fairseq's ``extract_features(output_layer=L)``: for HuBERT-base (``do_stable_layer_norm``
false: the encoder's layer norm is applied before the layers, every layer ends with its own) that is the
output of transformer layer L, transformers' ``hidden_states[L]``. Layers after L cannot change it, so
the model holds the first L only (v1: 9 of 12), and ``last_hidden_state`` of the cut encoder is
``hidden_states[L]`` of the whole one (``tests/test_encoder.py`` checks both against transformers).

Built for inference and export: eval mode, eager attention (one plain MatMul/Softmax graph every
exporter and backend takes), no spec-augment masking or layer drop, the positional convolution's
weight norm folded into a plain weight (the graph computes no norm of the weights at run time), and the
first conv layer's ``GroupNorm`` (one group per channel: each channel normalised over time) spelled as
the reductions it is (``ChannelNorm``, same parameters). Exported as a GroupNorm it becomes ONNX
``InstanceNormalization``, which OpenVINO (2026.4) runs in a kernel that crashes (SIGSEGV) when oneDNN is
capped to AVX2, as the build's checks for ``target.cpu: portable`` and AVX2-only CPUs are; the
reductions run everywhere and agree with transformers' module to ~1e-7.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from .spec import EncoderSpec

POS_CONV = "hubert.encoder.pos_conv_embed.conv"


def transformers_config(spec: EncoderSpec, layers: int | None = None) -> Any:
    """A ``HubertConfig`` of ``spec``'s architecture for inference (``layers``: cut the encoder there)."""
    from transformers import HubertConfig

    values = spec.config
    if layers is not None:
        values["num_hidden_layers"] = int(layers)
    config = HubertConfig(
        **values, apply_spec_augment=False, mask_time_prob=0.0, mask_feature_prob=0.0, layerdrop=0.0,
        hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0,
    )
    config._attn_implementation = "eager"
    return config


def fold_weight_norm(conv: torch.nn.Module) -> None:
    """Replace a weight-norm parametrization by the plain weight it gives (a no-op without one)."""
    from torch.nn.utils import parametrize

    if parametrize.is_parametrized(conv, "weight"):
        parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)


class ChannelNorm(torch.nn.Module):
    """``GroupNorm(C, C)`` on [batch, C, time] (each channel over time), as plain reductions; the same
    ``weight``/``bias`` parameters, so it loads the same state dict."""

    def __init__(self, norm: torch.nn.GroupNorm):
        super().__init__()
        self.weight, self.bias, self.eps = norm.weight, norm.bias, float(norm.eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        mean = hidden.mean(dim=-1, keepdim=True)
        centred = hidden - mean
        variance = centred.pow(2).mean(dim=-1, keepdim=True)
        return centred * torch.rsqrt(variance + self.eps) * self.weight[:, None] + self.bias[:, None]


def spell_group_norm(hubert: torch.nn.Module) -> None:
    """Replace the first conv layer's per-channel GroupNorm (feat_extract_norm "group") by ``ChannelNorm``."""
    first = hubert.feature_extractor.conv_layers[0]
    norm = getattr(first, "layer_norm", None)
    if isinstance(norm, torch.nn.GroupNorm) and norm.num_groups == norm.num_channels:
        first.layer_norm = ChannelNorm(norm)


class ContentEncoderModel(torch.nn.Module):
    """``forward(audio [1, n] float32, 16 kHz) -> features [1, (n - 400) // 320 + 1, feature_dim]``."""

    def __init__(self, spec: EncoderSpec, *, layers: int | None = None, final_proj: bool | None = None):
        super().__init__()
        from transformers import HubertModel

        self.spec = spec
        self.hubert = HubertModel(transformers_config(spec, layers or spec.output_layer))
        fold_weight_norm(self.hubert.encoder.pos_conv_embed.conv)
        spell_group_norm(self.hubert)
        hidden, projected = spec.get("hidden_size"), spec.get("classifier_proj_size")
        with_proj = spec.final_proj if final_proj is None else final_proj
        self.final_proj = torch.nn.Linear(hidden, projected) if with_proj else None
        self.input_names = ["audio"]

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        features = self.hubert(audio).last_hidden_state
        if self.final_proj is not None:
            features = self.final_proj(features)
        return features


def expected_shapes(spec: EncoderSpec) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of the whole source network in the canonical layout (``hubert.``
    prefix, folded positional weight): all of the config's layers and final_proj. Built on the meta
    device: no memory, no initialisation."""
    with torch.device("meta"):
        model = ContentEncoderModel(spec, layers=spec.get("num_hidden_layers"), final_proj=True)
        return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def build_model(spec: EncoderSpec, weights: Mapping[str, torch.Tensor] | None) -> ContentEncoderModel:
    """The fp32 model in eval mode; ``weights`` in the canonical layout (``folder.read_folder``), or
    None for freshly initialised ones (FLOP counting, shapes)."""
    if weights is None:
        model = ContentEncoderModel(spec)
    else:
        with torch.device("meta"):
            model = ContentEncoderModel(spec)
        model.load_state_dict({name: tensor.float() for name, tensor in weights.items()}, strict=True, assign=True)
    return model.eval().requires_grad_(False)
