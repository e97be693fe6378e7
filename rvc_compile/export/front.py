"""The front: a small torch module from a client's inputs to the artifact graph's inputs.

It is exported to ONNX and joined in front of the artifact's graph (``export.graph``). What it adds is
what the clients do not compute and our artifacts take as inputs:

- the NSF excitation (``excitation``, for artifacts built with the ``host_source`` pass), from ``pitchf``
  in float64 exactly as the runtime computes it on the host (``model.source.sine_excitation``);
- the noise draws: the source noise always, the prior noise unless the client feeds it (``rnd``), drawn
  in the graph with ``randn_like`` (``noise="graph"``) or taken as extra inputs (``noise="inputs"``, the
  deterministic variant verification runs);
- float16 features cast to float32 (the artifact's graph takes float32 and casts where it runs fp16).

The client's ``pitch`` and length inputs are not read: the synthesizer's encoder derives the coarse pitch
from f0 with the clients' formula, and the length is the features' own.
"""

from __future__ import annotations

from typing import Any, Sequence

from .profiles import FEATURES, PITCHF, PRIOR_NOISE, SPEAKER, Profile, prior_channels

NOISE_MODES = ("graph", "inputs")
PRIOR_NOISE_INPUT = "prior_noise"
SOURCE_NOISE_INPUT = "source_noise"


def front_inputs(profile: Profile, has_f0: bool, noise: str) -> list[str]:
    """The front's inputs, in order: the client's, then (``noise="inputs"``) the noise draws it would make."""
    names = [item.name for item in profile.inputs_for(has_f0)]
    if noise == "inputs":
        if not profile.prior_noise_input:
            names.append(PRIOR_NOISE_INPUT)
        if has_f0:
            names.append(SOURCE_NOISE_INPUT)
    return names


def output_name(graph_input: str) -> str:
    """The front's output that feeds the artifact graph's input ``graph_input``."""
    return f"front_{graph_input}"


def build_front(profile: Profile, spec: Any, graph_inputs: Sequence[str], *, noise: str = "graph") -> Any:
    """The front as a torch module: ``forward(*front_inputs)`` -> the tensors of ``graph_inputs``, in order."""
    import torch
    from torch import nn

    from ..components.synthesizer.model.source import sine_excitation

    if noise not in NOISE_MODES:
        raise ValueError(f"noise must be one of {', '.join(NOISE_MODES)}, not {noise!r}")
    names = front_inputs(profile, spec.f0, noise)
    roles = {item.name: item.role for item in profile.inputs_for(spec.f0)}
    by_role = {role: name for name, role in roles.items()}
    hop, sample_rate, inter = spec.hop_length, spec.sampling_rate, spec.inter_channels
    wanted = list(graph_inputs)
    rnd_channels = next((prior_channels(item) for item in profile.inputs_for(spec.f0) if item.role == PRIOR_NOISE), inter)

    class Front(nn.Module):
        def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
            given = dict(zip(names, inputs))
            features = given[by_role[FEATURES]].float()  # [1, T, C]
            pitchf = given[by_role[PITCHF]].float() if PITCHF in by_role else None  # [1, T] Hz
            if PRIOR_NOISE in by_role:
                prior_noise = given[by_role[PRIOR_NOISE]]
                if rnd_channels != inter:  # OnnxRVC's rnd is 192 wide; a narrower prior reads its first channels
                    prior_noise = prior_noise[:, :inter, :]
            elif noise == "inputs":
                prior_noise = given[PRIOR_NOISE_INPUT]
            else:
                # [1, inter, T] shaped from the features, so the time axis stays symbolic in the graph.
                prior_noise = torch.randn_like(features[:, :, :1].transpose(1, 2).expand(-1, inter, -1))
            source_noise = None
            if pitchf is not None:
                if noise == "inputs":
                    source_noise = given[SOURCE_NOISE_INPUT]
                else:
                    source_noise = torch.randn_like(pitchf.unsqueeze(-1).expand(-1, -1, hop).reshape(1, -1))
            out = {"features": features, "prior_noise": prior_noise}
            if pitchf is not None:
                out["f0"] = pitchf
                out["source_noise"] = source_noise
                if "excitation" in wanted:
                    out["excitation"] = sine_excitation(pitchf, hop, sample_rate, source_noise).squeeze(-1)
            if SPEAKER in by_role:
                out["speaker"] = given[by_role[SPEAKER]]
            return tuple(out[name] for name in wanted)

    return Front().eval()


def example_front_inputs(profile: Profile, spec: Any, precision: str, frames: int, noise: str) -> tuple[Any, ...]:
    """Torch tensors of the front's inputs at ``frames`` (what the exporter traces with)."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    items = profile.inputs_for(spec.f0)
    types = profile.input_types(has_f0=spec.f0, feature_dim=spec.feature_dim, inter_channels=spec.inter_channels, precision=precision)
    tensors = []
    for item, (_, dtype, shape) in zip(items, types):
        shape = tuple(frames if dim == "frames" else dim for dim in shape)
        if item.role == PITCHF:
            array = np.full(shape, 200.0, dtype=np.float32)
        elif dtype == "int64":
            array = np.full(shape, 0 if item.role == SPEAKER else frames, dtype=np.int64)
        else:
            array = rng.standard_normal(shape).astype(dtype)
        tensors.append(torch.from_numpy(array))
    if noise == "inputs":
        if not profile.prior_noise_input:
            tensors.append(torch.from_numpy(rng.standard_normal((1, spec.inter_channels, frames)).astype(np.float32)))
        if spec.f0:
            tensors.append(torch.from_numpy(rng.standard_normal((1, frames * spec.hop_length)).astype(np.float32)))
    return tuple(tensors)
