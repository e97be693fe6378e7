"""What a content encoder is: the HuBERT architecture of its ``config.json`` and which output it gives.

numpy-free and torch-free (the runtime reads it from a manifest). The spec keeps the architecture keys of
the HubertConfig only (``ARCHITECTURE_KEYS``): dropout rates, label maps and the transformers version that
saved the file do not change what the inference graph computes.

Output (``version``), as RVC's pipeline takes it from fairseq's ``extract_features(output_layer=L)``:
v2 voices the output of transformer layer 12 (``hidden_size`` wide, 768); v1 voices the output of layer 9
through ``final_proj`` (``classifier_proj_size`` wide, 256).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ...errors import CheckpointError

SAMPLE_RATE = 16000
# version -> (transformer layer whose output is taken, whether final_proj follows)
OUTPUTS = {"v1": (9, True), "v2": (12, False)}
DEFAULT_VERSION = "v2"

# The HubertConfig keys that define the inference graph, with their type (and, for lists, the item type).
ARCHITECTURE_KEYS: dict[str, type] = {
    "hidden_size": int,
    "num_hidden_layers": int,
    "num_attention_heads": int,
    "intermediate_size": int,
    "hidden_act": str,
    "layer_norm_eps": float,
    "feat_extract_norm": str,
    "feat_extract_activation": str,
    "feat_proj_layer_norm": bool,
    "conv_dim": list,
    "conv_stride": list,
    "conv_kernel": list,
    "conv_bias": bool,
    "num_conv_pos_embeddings": int,
    "num_conv_pos_embedding_groups": int,
    "conv_pos_batch_norm": bool,
    "do_stable_layer_norm": bool,
    "classifier_proj_size": int,
}
# HubertConfig's own defaults for keys a config.json may leave out (transformers fills them in alike).
DEFAULTS: dict[str, Any] = {
    "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072,
    "hidden_act": "gelu", "layer_norm_eps": 1e-5, "feat_extract_norm": "group", "feat_extract_activation": "gelu",
    "feat_proj_layer_norm": True, "conv_dim": [512] * 7, "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2], "conv_bias": False, "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16, "conv_pos_batch_norm": False, "do_stable_layer_norm": False,
    "classifier_proj_size": 256,
}
ACTIVATIONS = ("gelu", "relu", "silu", "swish", "gelu_new", "gelu_fast", "quick_gelu", "tanh")
LIMIT = 1 << 16  # far above any real width, kernel or layer count: past it a config is damaged


@dataclass(frozen=True)
class EncoderSpec:
    """A HuBERT-base style content encoder and the output the graph gives (``version`` v1 or v2)."""

    hubert: tuple[tuple[str, Any], ...]  # ARCHITECTURE_KEYS -> value (lists as tuples): hashable and frozen
    version: str = DEFAULT_VERSION

    @property
    def config(self) -> dict[str, Any]:
        """The architecture keys as plain JSON-able values (what ``transformers.HubertConfig`` takes)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in self.hubert}

    def get(self, key: str) -> Any:
        return dict(self.hubert)[key]

    @property
    def output_layer(self) -> int:
        return OUTPUTS[self.version][0]

    @property
    def final_proj(self) -> bool:
        return OUTPUTS[self.version][1]

    @property
    def feature_dim(self) -> int:
        return int(self.get("classifier_proj_size") if self.final_proj else self.get("hidden_size"))

    @property
    def hop(self) -> int:
        """Input samples per output frame: the product of the conv strides (320 for HuBERT-base)."""
        hop = 1
        for stride in self.get("conv_stride"):
            hop *= int(stride)
        return hop

    @property
    def receptive_field(self) -> int:
        """Input samples one output frame reads (400 for HuBERT-base): also the shortest input."""
        field, step = 1, 1
        for kernel, stride in zip(self.get("conv_kernel"), self.get("conv_stride")):
            field += (int(kernel) - 1) * step
            step *= int(stride)
        return field

    def frames_of(self, samples: int) -> int:
        """Output frames of ``samples`` input samples: (n - 400) // 320 + 1 for HuBERT-base (0 when too short).

        Exact for the stacked unpadded convolutions: floor((floor((n - k1) / s1) + 1 - k2) / s2) + 1 ==
        floor((n - k1 - (k2 - 1) s1) / (s1 s2)) + 1, and so on down the stack."""
        return max(0, (int(samples) - self.receptive_field) // self.hop + 1)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "output_layer": self.output_layer, "final_proj": self.final_proj,
                "feature_dim": self.feature_dim, "hubert": self.config}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], version: str | None, *, source: str) -> "EncoderSpec":
        """From a ``config.json``'s mapping (other keys ignored, missing ones at HubertConfig's defaults)."""
        values = {key: config.get(key, DEFAULTS[key]) for key in ARCHITECTURE_KEYS}
        return cls.from_dict({"version": version or DEFAULT_VERSION, "hubert": values}, source=source)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str) -> "EncoderSpec":
        """From ``to_dict``'s output (a manifest's ``component.spec``), checked; CheckpointError naming ``source``."""
        if not isinstance(data, Mapping) or not isinstance(data.get("hubert"), Mapping):
            raise CheckpointError.about(source, "not a content encoder spec (needs a 'hubert' mapping)")
        version = data.get("version", DEFAULT_VERSION)
        if version not in OUTPUTS:
            raise CheckpointError.about(source, f"version {version!r} is not v1 or v2")
        config = data["hubert"]
        values: list[tuple[str, Any]] = []
        for key, kind in ARCHITECTURE_KEYS.items():
            if key not in config:
                raise CheckpointError.about(source, f"the HuBERT config has no {key!r}")
            values.append((key, _checked(config[key], kind, key, source)))
        spec = cls(hubert=tuple(values), version=version)
        problem = _problem(spec)
        if problem:
            raise CheckpointError.about(source, problem)
        for key, expected in (("output_layer", spec.output_layer), ("final_proj", spec.final_proj), ("feature_dim", spec.feature_dim)):
            if key in data and data[key] != expected:
                raise CheckpointError.about(source, f"{key} {data[key]!r} disagrees with version {version} ({expected!r})")
        return spec


def _checked(value: Any, kind: type, key: str, source: str) -> Any:
    if kind is list:
        if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise CheckpointError.about(source, f"config {key} must be a non-empty list of integers, got {value!r:.80}")
        if not all(1 <= v <= LIMIT for v in value):
            raise CheckpointError.about(source, f"config {key} must hold integers from 1 to {LIMIT}, got {list(value)!r:.80}")
        return tuple(int(v) for v in value)
    if kind is int:
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= LIMIT:
            raise CheckpointError.about(source, f"config {key} must be an integer from 1 to {LIMIT}, got {value!r:.80}")
        return int(value)
    if kind is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < float(value) < 1:
            raise CheckpointError.about(source, f"config {key} must be a number between 0 and 1, got {value!r:.80}")
        return float(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise CheckpointError.about(source, f"config {key} must be true or false, got {value!r:.80}")
        return value
    if not isinstance(value, str):
        raise CheckpointError.about(source, f"config {key} must be a string, got {value!r:.80}")
    return value


def _problem(spec: EncoderSpec) -> str | None:
    """What makes ``spec`` a network this component cannot compile exactly, or None."""
    c = spec.config
    if not len(c["conv_dim"]) == len(c["conv_stride"]) == len(c["conv_kernel"]):
        return f"config conv_dim, conv_stride and conv_kernel must have one entry per conv layer (got {len(c['conv_dim'])}, {len(c['conv_stride'])}, {len(c['conv_kernel'])})"
    if c["hidden_size"] % c["num_attention_heads"]:
        return f"config hidden_size {c['hidden_size']} is not a multiple of num_attention_heads {c['num_attention_heads']}"
    if c["hidden_size"] % c["num_conv_pos_embedding_groups"]:
        return f"config hidden_size {c['hidden_size']} is not a multiple of num_conv_pos_embedding_groups {c['num_conv_pos_embedding_groups']}"
    if c["feat_extract_norm"] not in ("group", "layer"):
        return f"config feat_extract_norm {c['feat_extract_norm']!r} is not 'group' or 'layer'"
    for key in ("hidden_act", "feat_extract_activation"):
        if c[key] not in ACTIVATIONS:
            return f"config {key} {c[key]!r} is not one of {', '.join(ACTIVATIONS)}"
    if c["do_stable_layer_norm"]:
        # HuBERT-large style (layer norm inside each block, one at the end): transformers' hidden_states
        # and fairseq's extract_features(output_layer) disagree there; RVC uses HuBERT-base only.
        return "config do_stable_layer_norm: true (a HuBERT-large style encoder); RVC's content encoders are HuBERT-base (false)"
    layers = c["num_hidden_layers"]
    if spec.output_layer > layers:
        return f"{spec.version} features are the output of transformer layer {spec.output_layer}, but the config has {layers} layers"
    return None
