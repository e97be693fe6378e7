"""The typed description of an RVC synthesizer: the official 18-entry config plus version and f0 flag.

A pruned model (``rvc_compile.compress.prune``) also carries a channel map: the narrower width of each layer
whose internal channels were removed, keyed by the module path of the convolution that produces them.
The official config cannot express per-layer widths, so the map travels beside it (``ModelSpec.channels``
and the ``channels`` entry of a pruned checkpoint, docs/PRUNING.md).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ...errors import CheckpointError

# The order RVC's small-model export writes ``config`` in (infer/lib/train/process_ckpt.py).
CONFIG_FIELDS = (
    "spec_channels",
    "segment_size",
    "inter_channels",
    "hidden_channels",
    "filter_channels",
    "n_heads",
    "n_layers",
    "kernel_size",
    "p_dropout",
    "resblock",
    "resblock_kernel_sizes",
    "resblock_dilation_sizes",
    "upsample_rates",
    "upsample_initial_channel",
    "upsample_kernel_sizes",
    "spk_embed_dim",
    "gin_channels",
    "sampling_rate",
)

FEATURE_DIM = {"v1": 256, "v2": 768}
SAMPLE_RATE_TAGS = {"32k": 32000, "40k": 40000, "48k": 48000}
FRAMES_PER_SECOND = 100  # content features after RVC's 2x upsampling

# The residual-coupling flow's structure is fixed in RVC's code (ResidualCouplingBlock(inter, hidden,
# 5, 1, 3, gin)), not in the config: four mean-only couplings, each a 3-layer WaveNet with kernel 5.
FLOW_COUPLINGS = 4
FLOW_LAYERS = 3
FLOW_KERNEL_SIZE = 5
# Real-time blocks: frames of context the flow sees before the rendered ones (RVC's ``skip_head - 24``),
# and the longest context a block may have (60 s).
FLOW_CONTEXT = 24
MAX_SKIP_FRAMES = 6000


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build the inference graph of one RVC synthesizer."""

    version: str  # "v1" or "v2"
    f0: bool  # True: NSF decoder with pitch input
    sampling_rate: int
    inter_channels: int
    hidden_channels: int
    filter_channels: int
    n_heads: int
    n_layers: int
    kernel_size: int
    resblock: str
    resblock_kernel_sizes: tuple[int, ...]
    resblock_dilation_sizes: tuple[tuple[int, ...], ...]
    upsample_rates: tuple[int, ...]
    upsample_initial_channel: int
    upsample_kernel_sizes: tuple[int, ...]
    n_speakers: int
    gin_channels: int
    spec_channels: int = 1025
    segment_size: int = 32
    p_dropout: float = 0.0
    # Pruned widths, sorted (layer key, width); empty for an unpruned model. See ``prunable_widths``.
    channels: tuple[tuple[str, int], ...] = ()
    # Real-time blocks (RVC's ``infer(skip_head, return_length)``): the first ``skip_frames`` input
    # frames are context only. The content encoder sees every frame, the flow the last T - skip frames
    # plus ``FLOW_CONTEXT`` before them, the decoder renders only the last T - skip. 0: render all.
    skip_frames: int = 0

    @property
    def channel_map(self) -> dict[str, int]:
        return dict(self.channels)

    def width(self, key: str) -> int:
        """The width of prunable layer ``key``: its pruned width, or the config's."""
        return self.channel_map.get(key) or prunable_widths(self)[key]

    @property
    def feature_dim(self) -> int:
        return FEATURE_DIM[self.version]

    @property
    def hop_length(self) -> int:
        """Output samples per feature frame (the decoder's total upsampling)."""
        return math.prod(self.upsample_rates)

    @property
    def frames_per_second(self) -> float:
        return self.sampling_rate / self.hop_length

    @property
    def sample_rate_tag(self) -> str:
        return f"{self.sampling_rate // 1000}k"

    def to_config_list(self) -> list[Any]:
        """The official 18-entry config list, as RVC writes it."""
        values = {
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
            "spk_embed_dim": self.n_speakers,
        }
        out: list[Any] = []
        for name in CONFIG_FIELDS:
            value = values[name]
            if isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            out.append(value)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "f0": self.f0,
            "sample_rate": self.sampling_rate,
            "hop_length": self.hop_length,
            "feature_dim": self.feature_dim,
            "n_speakers": self.n_speakers,
            "config": self.to_config_list(),
            **({"channels": self.channel_map} if self.channels else {}),
            **({"skip_frames": self.skip_frames} if self.skip_frames else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "spec") -> "ModelSpec":
        spec = from_config_list(
            data["config"],
            version=data["version"],
            f0=bool(data["f0"]),
            source=source,
            n_speakers=data.get("n_speakers"),
        )
        spec = with_channels(spec, data.get("channels") or {}, source=source)
        return with_skip(spec, data.get("skip_frames", 0), source=source)

    def rendered_frames(self, frames: int) -> int:
        """Frames of audio the graph renders for ``frames`` input frames."""
        return frames - self.skip_frames


def prunable_widths(spec: ModelSpec) -> dict[str, int]:
    """Every layer whose output channels are internal to its block, with its unpruned (config) width.

    - ``dec.resblocks.B.convs1.J``: the middle of a ResBlock1 conv pair (x + conv2(act(conv1(act(x))))).
      ResBlock2 has no internal width.
    - ``enc_p.encoder.ffn_layers.L.conv_1``: the encoder feed-forward's filter width.
    - ``flow.flows.F.enc.in_layers.I``: a flow WaveNet layer's gate width (its tanh and sigmoid halves,
      its rows of the shared conditioning conv, its input to the res/skip conv).
    """
    widths: dict[str, int] = {}
    if spec.resblock == "1":
        n_kernels = len(spec.resblock_kernel_sizes)
        for stage in range(len(spec.upsample_rates)):
            channels = spec.upsample_initial_channel // (2 ** (stage + 1))
            for kernel_index, dilations in enumerate(spec.resblock_dilation_sizes):
                block = stage * n_kernels + kernel_index
                for j in range(len(dilations)):
                    widths[f"dec.resblocks.{block}.convs1.{j}"] = channels
    for layer in range(spec.n_layers):
        widths[f"enc_p.encoder.ffn_layers.{layer}.conv_1"] = spec.filter_channels
    for coupling in range(FLOW_COUPLINGS):
        for layer in range(FLOW_LAYERS):
            widths[f"flow.flows.{2 * coupling}.enc.in_layers.{layer}"] = spec.hidden_channels
    return widths


def with_channels(spec: ModelSpec, channels: Any, *, source: str) -> ModelSpec:
    """``spec`` with the channel map ``channels`` ({layer key: width}); CheckpointError names a bad entry.

    Entries at the full width are dropped, so equal models have equal specs.
    """
    if not isinstance(channels, dict):
        raise CheckpointError(f"{source}: channel map must be a mapping of layer names to widths, got {type(channels).__name__}")
    full = prunable_widths(spec)
    canonical = []
    for key, width in channels.items():
        if key not in full:
            raise CheckpointError(f"{source}: channel map entry {key!r} is not a prunable layer of this model")
        if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= full[key]:
            raise CheckpointError(f"{source}: channel map entry {key}={width!r} must be an integer in 1..{full[key]}")
        if width < full[key]:
            canonical.append((key, int(width)))
    return dataclasses.replace(spec, channels=tuple(sorted(canonical)))


def with_skip(spec: ModelSpec, skip_frames: Any, *, source: str) -> ModelSpec:
    """``spec`` rendering only the frames after the first ``skip_frames`` (real-time blocks)."""
    if isinstance(skip_frames, bool) or not isinstance(skip_frames, int) or not 0 <= skip_frames <= MAX_SKIP_FRAMES:
        raise CheckpointError(f"{source}: skip_frames={skip_frames!r} must be an integer in 0..{MAX_SKIP_FRAMES}")
    return dataclasses.replace(spec, skip_frames=int(skip_frames))


def _int(value: Any, name: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value <= 0:
        raise CheckpointError(f"{source}: config entry {name}={value!r} must be a positive integer")
    return int(value)


def _int_tuple(value: Any, name: str, source: str) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise CheckpointError(f"{source}: config entry {name}={value!r} must be a non-empty list of integers")
    return tuple(_int(v, name, source) for v in value)


def from_config_list(
    config: Any,
    *,
    version: str,
    f0: bool,
    source: str,
    n_speakers: int | None = None,
) -> ModelSpec:
    """Validate RVC's 18-entry config list and turn it into a ModelSpec."""
    if version not in FEATURE_DIM:
        raise CheckpointError(f"{source}: unknown version {version!r} (expected 'v1' or 'v2')")
    if not isinstance(config, (list, tuple)) or len(config) != len(CONFIG_FIELDS):
        raise CheckpointError(f"{source}: 'config' must be RVC's {len(CONFIG_FIELDS)}-entry list")
    raw = dict(zip(CONFIG_FIELDS, config))
    resblock = str(raw["resblock"])
    if resblock not in ("1", "2"):
        raise CheckpointError(f"{source}: config entry resblock={raw['resblock']!r} must be '1' or '2'")
    dilations = raw["resblock_dilation_sizes"]
    if not isinstance(dilations, (list, tuple)) or not dilations:
        raise CheckpointError(f"{source}: config entry resblock_dilation_sizes must be a list of lists")
    dilation_sizes = tuple(_int_tuple(d, "resblock_dilation_sizes", source) for d in dilations)
    kernel_sizes = _int_tuple(raw["resblock_kernel_sizes"], "resblock_kernel_sizes", source)
    if len(kernel_sizes) != len(dilation_sizes):
        raise CheckpointError(f"{source}: resblock_kernel_sizes and resblock_dilation_sizes differ in length")
    upsample_rates = _int_tuple(raw["upsample_rates"], "upsample_rates", source)
    upsample_kernels = _int_tuple(raw["upsample_kernel_sizes"], "upsample_kernel_sizes", source)
    if len(upsample_rates) != len(upsample_kernels):
        raise CheckpointError(f"{source}: upsample_rates and upsample_kernel_sizes differ in length")
    p_dropout = raw["p_dropout"]
    if not isinstance(p_dropout, (int, float)) or isinstance(p_dropout, bool):
        raise CheckpointError(f"{source}: config entry p_dropout={p_dropout!r} must be a number")
    spec = ModelSpec(
        version=version,
        f0=bool(f0),
        sampling_rate=_int(raw["sampling_rate"], "sampling_rate", source),
        inter_channels=_int(raw["inter_channels"], "inter_channels", source),
        hidden_channels=_int(raw["hidden_channels"], "hidden_channels", source),
        filter_channels=_int(raw["filter_channels"], "filter_channels", source),
        n_heads=_int(raw["n_heads"], "n_heads", source),
        n_layers=_int(raw["n_layers"], "n_layers", source),
        kernel_size=_int(raw["kernel_size"], "kernel_size", source),
        resblock=resblock,
        resblock_kernel_sizes=kernel_sizes,
        resblock_dilation_sizes=dilation_sizes,
        upsample_rates=upsample_rates,
        upsample_initial_channel=_int(raw["upsample_initial_channel"], "upsample_initial_channel", source),
        upsample_kernel_sizes=upsample_kernels,
        n_speakers=_int(n_speakers if n_speakers is not None else raw["spk_embed_dim"], "spk_embed_dim", source),
        gin_channels=_int(raw["gin_channels"], "gin_channels", source),
        spec_channels=_int(raw["spec_channels"], "spec_channels", source),
        segment_size=_int(raw["segment_size"], "segment_size", source),
        p_dropout=float(p_dropout),
    )
    if spec.hidden_channels % spec.n_heads:
        raise CheckpointError(f"{source}: hidden_channels {spec.hidden_channels} is not divisible by n_heads {spec.n_heads}")
    if spec.inter_channels % 2:
        raise CheckpointError(f"{source}: inter_channels {spec.inter_channels} must be even")
    if spec.upsample_initial_channel % (2 ** len(spec.upsample_rates)):
        raise CheckpointError(f"{source}: upsample_initial_channel cannot be halved {len(spec.upsample_rates)} times")
    return spec


# The official configs RVC ships (configs/v1/*.json, configs/v2/*.json), as small-model config lists.
def official_config(version: str, sample_rate: str) -> list[Any]:
    if version not in FEATURE_DIM or sample_rate not in SAMPLE_RATE_TAGS:
        raise ValueError(f"no official config for {version} {sample_rate}")
    rates, kernels = {
        ("v1", "32k"): ([10, 4, 2, 2, 2], [16, 16, 4, 4, 4]),
        ("v1", "40k"): ([10, 10, 2, 2], [16, 16, 4, 4]),
        ("v1", "48k"): ([10, 6, 2, 2, 2], [16, 16, 4, 4, 4]),
        ("v2", "32k"): ([10, 8, 2, 2], [20, 16, 4, 4]),
        ("v2", "40k"): ([10, 10, 2, 2], [16, 16, 4, 4]),
        ("v2", "48k"): ([12, 10, 2, 2], [24, 20, 4, 4]),
    }[(version, sample_rate)]
    spec_channels = 513 if sample_rate == "32k" else 1025
    return [
        spec_channels, 32, 192, 192, 768, 2, 6, 3, 0, "1", [3, 7, 11],
        [[1, 3, 5], [1, 3, 5], [1, 3, 5]], rates, 512, kernels, 109, 256, SAMPLE_RATE_TAGS[sample_rate],
    ]
