"""The whole inference graph: content encoder -> prior sample -> reverse flow -> (NSF-)HiFi-GAN.

State-dict compatible with RVC's ``SynthesizerTrnMs{256,768}NSFsid[_nono]`` minus ``enc_q`` (only used
in training), with weight norm already folded into plain weights. The random draws of the training
code are inputs: ``prior_noise`` (standard normal, [1, inter, T]) and, for pitch models,
``source_noise`` (standard normal, [1, T*hop]). Zeros give the deterministic output.
"""

from __future__ import annotations

import torch
from torch import nn

from ..spec import FLOW_CONTEXT, FLOW_COUPLINGS, FLOW_LAYERS, ModelSpec
from .encoder import ContentEncoder
from .flow import CouplingFlow
from .vocoder import HiFiGAN

# RVC scales the prior's noise by this constant at inference (SynthesizerTrn*.infer).
PRIOR_NOISE_SCALE = 0.66666


def input_names(spec: ModelSpec, *, fixed_speaker: bool = False, host_source: bool = False) -> list[str]:
    """The graph's inputs, in the order ``forward`` takes them.

    ``fixed_speaker``: the speaker is folded in (no ``speaker`` input). ``host_source``: the NSF
    excitation is computed on the host (``rvc_compile.components.synthesizer.nsf``) and fed as ``excitation`` [1, T*hop]
    instead of ``source_noise``.
    """
    names = ["features"]
    if spec.f0:
        names.append("f0")
    if not fixed_speaker:
        names.append("speaker")
    names.append("prior_noise")
    if spec.f0:
        names.append("excitation" if host_source else "source_noise")
    return names


def _resblock_middles(spec: ModelSpec) -> dict[int, list[int]] | None:
    """Per ResBlock1, the widths between its conv pairs (None for an unpruned decoder)."""
    decoder = {key: width for key, width in spec.channels if key.startswith("dec.")}
    if not decoder:
        return None
    middles: dict[int, list[int]] = {}
    n_kernels = len(spec.resblock_kernel_sizes)
    for stage in range(len(spec.upsample_rates)):
        for kernel_index, dilations in enumerate(spec.resblock_dilation_sizes):
            block = stage * n_kernels + kernel_index
            middles[block] = [spec.width(f"dec.resblocks.{block}.convs1.{j}") for j in range(len(dilations))]
    return middles


class Synthesizer(nn.Module):
    """RVC synthesizer for inference. Call :meth:`forward` with the inputs named by :attr:`input_names`.

    Graph options that passes set: :meth:`fix_speaker` folds one speaker's embedding in; ``host_source``
    takes the NSF excitation as an input instead of computing it from f0 and noise.
    """

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
            filter_widths=[spec.width(f"enc_p.encoder.ffn_layers.{i}.conv_1") for i in range(spec.n_layers)],
        )
        gate_widths = [
            [spec.width(f"flow.flows.{2 * k}.enc.in_layers.{i}") for i in range(FLOW_LAYERS)] for k in range(FLOW_COUPLINGS)
        ]
        self.flow = CouplingFlow(spec.inter_channels, spec.hidden_channels, spec.gin_channels, gate_widths=gate_widths)
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
            middle_widths=_resblock_middles(spec),
        )
        self.emb_g = nn.Embedding(spec.n_speakers, spec.gin_channels)
        self.fixed_speaker: int | None = None
        self.host_source = False

    @property
    def input_names(self) -> list[str]:
        return input_names(self.spec, fixed_speaker=self.fixed_speaker is not None, host_source=self.host_source)

    def speaker_embedding(self, speaker: torch.Tensor) -> torch.Tensor:
        return self.emb_g(speaker).unsqueeze(-1)  # [1, gin, 1]

    def fix_speaker(self, speaker: int) -> None:
        """Fold ``speaker``'s embedding in as a constant; the graph loses its ``speaker`` input."""
        with torch.no_grad():
            g = self.speaker_embedding(torch.tensor([speaker], dtype=torch.long))
        # Not persistent: the state dict stays the checkpoint's.
        self.register_buffer("fixed_g", g.clone(), persistent=False)
        self.fixed_speaker = int(speaker)

    def synthesize(
        self,
        features: torch.Tensor,
        f0: torch.Tensor | None,
        g: torch.Tensor,
        prior_noise: torch.Tensor,
        source: torch.Tensor | None,
        *,
        source_noise: torch.Tensor | None = None,
        excitation: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The graph body with the speaker embedded (``g`` [1, gin, 1]); the NSF source [1, 1, T*hop]
        either already made, or made by the decoder from f0 and ``source_noise`` or the host's
        ``excitation``. Returns audio [1, T*hop]."""
        mean, log_scale = self.enc_p(features, f0)
        skip = self.spec.skip_frames
        if skip:
            # Real-time blocks, as RVC's infer(skip_head, return_length): the flow over the rendered
            # frames and FLOW_CONTEXT before them, the decoder over the rendered frames only.
            flow_head = max(skip - FLOW_CONTEXT, 0)
            mean, log_scale, prior_noise = mean[:, :, flow_head:], log_scale[:, :, flow_head:], prior_noise[:, :, flow_head:]
        z_p = mean + torch.exp(log_scale) * prior_noise * PRIOR_NOISE_SCALE
        z = self.flow(z_p, g)
        if skip:
            hop = self.spec.hop_length
            z = z[:, :, skip - flow_head :]
            f0 = f0[:, skip:] if f0 is not None else None
            source_noise = source_noise[:, skip * hop :] if source_noise is not None else None
            excitation = excitation[:, skip * hop :] if excitation is not None else None
        return self.dec(z, g, source, f0=f0, noise=source_noise, excitation=excitation).squeeze(1)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        args = dict(zip(self.input_names, inputs))
        g = self.fixed_g if self.fixed_speaker is not None else self.speaker_embedding(args["speaker"])
        return self.synthesize(
            args["features"], args.get("f0"), g, args["prior_noise"], None,
            source_noise=args.get("source_noise"), excitation=args.get("excitation"),
        )
