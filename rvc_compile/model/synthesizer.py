"""The whole inference graph: content encoder -> prior sample -> reverse flow -> (NSF-)HiFi-GAN.

State-dict compatible with RVC's ``SynthesizerTrnMs{256,768}NSFsid[_nono]`` minus ``enc_q`` (only used
in training), with weight norm already folded into plain weights. The random draws of the training
code are inputs: ``prior_noise`` (standard normal, [1, inter, T]) and, for pitch models,
``source_noise`` (standard normal, [1, T*hop]). Zeros give the deterministic output.
"""

from __future__ import annotations

import torch
from torch import nn

from ..spec import ModelSpec
from .encoder import ContentEncoder
from .flow import CouplingFlow
from .vocoder import HiFiGAN

# RVC scales the prior's noise by this constant at inference (SynthesizerTrn*.infer).
PRIOR_NOISE_SCALE = 0.66666


def input_names(spec: ModelSpec) -> list[str]:
    """The graph's inputs, in the order ``forward`` takes them."""
    if spec.f0:
        return ["features", "f0", "speaker", "prior_noise", "source_noise"]
    return ["features", "speaker", "prior_noise"]


class Synthesizer(nn.Module):
    """RVC synthesizer for inference. Call through :meth:`forward` with the inputs of ``input_names``."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.spec = spec
        self.enc_p = ContentEncoder(
            spec.feature_dim,
            spec.inter_channels,
            spec.hidden_channels,
            spec.filter_channels,
            spec.n_heads,
            spec.n_layers,
            spec.kernel_size,
            use_pitch=spec.f0,
        )
        self.flow = CouplingFlow(spec.inter_channels, spec.hidden_channels, spec.gin_channels)
        self.dec = HiFiGAN(
            spec.inter_channels,
            spec.resblock,
            spec.resblock_kernel_sizes,
            spec.resblock_dilation_sizes,
            spec.upsample_rates,
            spec.upsample_initial_channel,
            spec.upsample_kernel_sizes,
            spec.gin_channels,
            sampling_rate=spec.sampling_rate if spec.f0 else None,
        )
        self.emb_g = nn.Embedding(spec.n_speakers, spec.gin_channels)

    def speaker_embedding(self, speaker: torch.Tensor) -> torch.Tensor:
        return self.emb_g(speaker).unsqueeze(-1)  # [1, gin, 1]

    def synthesize(
        self,
        features: torch.Tensor,
        f0: torch.Tensor | None,
        g: torch.Tensor,
        prior_noise: torch.Tensor,
        source_noise: torch.Tensor | None,
    ) -> torch.Tensor:
        """The graph body with the speaker already embedded (``g`` [1, gin, 1]); returns audio [1, T*hop]."""
        mean, log_scale = self.enc_p(features, f0)
        z_p = mean + torch.exp(log_scale) * prior_noise * PRIOR_NOISE_SCALE
        z = self.flow(z_p, g)
        source = self.dec.m_source(f0, source_noise) if self.spec.f0 else None
        return self.dec(z, g, source).squeeze(1)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.spec.f0:
            features, f0, speaker, prior_noise, source_noise = inputs
        else:
            (features, speaker, prior_noise), f0, source_noise = inputs, None, None
        return self.synthesize(features, f0, self.speaker_embedding(speaker), prior_noise, source_noise)
