"""The voice's own discriminator (``D_*.pth`` in an RVC training folder) and RVC's GAN losses, for distillation.

RVC trains its generator against a multi-period discriminator: one scale discriminator on the raw
waveform and one 2-D discriminator per period (v1: periods 2, 3, 5, 7, 11, 17; v2: also 23 and 37),
all with weight norm (``infer/module/models.py``: ``MultiPeriodDiscriminator``/``V2``). Its training
script saves the discriminator as ``{"model": state_dict, "iteration", "optimizer", "learning_rate"}``
(``train/utils.py: save_checkpoint``); the weight norm appears as ``weight_g``/``weight_v`` (older torch)
or ``parametrizations.weight.original0``/``original1`` (newer). We build the same modules and load
either spelling; anything else (another version's discriminator, a generator file, missing or
misshapen weights) is a one-line ``CheckpointError`` naming the file.

Losses, as RVC's ``train/losses.py``: least-squares adversarial losses and feature matching (L1
between the discriminator's feature maps of the real and the generated audio, times 2). In
distillation "real" is the teacher's output for the same inputs and noise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from ..errors import CheckpointError

LRELU_SLOPE = 0.1
PERIODS = {"v1": (2, 3, 5, 7, 11, 17), "v2": (2, 3, 5, 7, 11, 17, 23, 37)}


def _conv_stack(convs: nn.ModuleList, conv_post: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Every sub-discriminator's body: leaky-ReLU convs, then conv_post; (flattened score, every feature map)."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LRELU_SLOPE)
        features.append(x)
    x = conv_post(x)
    features.append(x)
    return torch.flatten(x, 1, -1), features


class ScaleDiscriminator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layers = [(1, 16, 15, 1, 1, 7), (16, 64, 41, 4, 4, 20), (64, 256, 41, 4, 16, 20), (256, 1024, 41, 4, 64, 20),
                  (1024, 1024, 41, 4, 256, 20), (1024, 1024, 5, 1, 1, 2)]
        self.convs = nn.ModuleList(weight_norm(nn.Conv1d(i, o, k, s, groups=g, padding=p)) for i, o, k, s, g, p in layers)
        self.conv_post = weight_norm(nn.Conv1d(1024, 1, 3, 1, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return _conv_stack(self.convs, self.conv_post, x)


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, kernel_size: int = 5, stride: int = 3) -> None:
        super().__init__()
        self.period = period
        widths = [1, 32, 128, 512, 1024, 1024]
        padding = (kernel_size - 1) // 2
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(widths[i], widths[i + 1], (kernel_size, 1), (stride if i < 4 else 1, 1), padding=(padding, 0)))
            for i in range(5)
        )
        self.conv_post = weight_norm(nn.Conv2d(1024, 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, c, t = x.shape
        if t % self.period:
            pad = self.period - t % self.period
            x = F.pad(x, (0, pad), "reflect")
            t += pad
        return _conv_stack(self.convs, self.conv_post, x.view(b, c, t // self.period, self.period))


class MultiPeriodDiscriminator(nn.Module):
    """RVC's discriminator of ``version`` (v1: 7 sub-discriminators, v2: 9)."""

    def __init__(self, version: str) -> None:
        super().__init__()
        self.version = version
        self.discriminators = nn.ModuleList([ScaleDiscriminator(), *(PeriodDiscriminator(p) for p in PERIODS[version])])

    def forward(self, audio: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        """audio [B, samples] -> (scores per sub-discriminator, feature maps per sub-discriminator)."""
        x = audio.unsqueeze(1)
        scores, features = [], []
        for discriminator in self.discriminators:
            score, maps = discriminator(x)
            scores.append(score)
            features.append(maps)
        return scores, features


def _modern_key(key: str) -> str:
    """weight_g / weight_v (torch's old weight norm) -> the parametrization's names."""
    if key.endswith(".weight_g"):
        return key[: -len(".weight_g")] + ".parametrizations.weight.original0"
    if key.endswith(".weight_v"):
        return key[: -len(".weight_v")] + ".parametrizations.weight.original1"
    return key


def load_discriminator(path: Path | str, version: str) -> MultiPeriodDiscriminator:
    """The discriminator in RVC's ``D_*.pth`` at ``path``, checked against RVC's ``version`` architecture."""
    path = Path(path)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such discriminator file (distillation.discriminator)") from None
    except Exception as exc:  # torch raises many types for a damaged or pickled file
        raise CheckpointError(f"{path}: not a readable RVC discriminator checkpoint ({type(exc).__name__})") from None
    state = saved.get("model", saved) if isinstance(saved, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: not an RVC discriminator checkpoint (RVC's D_*.pth holds its weights as tensors under 'model')")
    state = {_modern_key(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    if not any(k.startswith("discriminators.") for k in state):
        raise CheckpointError(f"{path}: not an RVC discriminator (no 'discriminators.' weights; a G_*.pth or small model is the generator)")
    model = MultiPeriodDiscriminator(version)
    expected = model.state_dict()
    count = len({k.split(".")[1] for k in state if k.startswith("discriminators.")})
    if count != len(model.discriminators):
        other = next((v for v, periods in PERIODS.items() if len(periods) + 1 == count), None)
        hint = f" (a {other} voice's discriminator)" if other else ""
        raise CheckpointError(f"{path}: {count} sub-discriminators{hint}, but a {version} voice's has {len(model.discriminators)}")
    for key, value in expected.items():
        if key not in state:
            raise CheckpointError(f"{path}: missing discriminator weight {key}")
        if tuple(state[key].shape) != tuple(value.shape):
            raise CheckpointError(f"{path}: {key} is {list(state[key].shape)}, RVC's {version} discriminator has {list(value.shape)}")
        if not torch.isfinite(state[key]).all():
            raise CheckpointError(f"{path}: {key} holds NaN or infinite values")
    unknown = sorted(set(state) - set(expected))
    if unknown:
        raise CheckpointError(f"{path}: unexpected discriminator weight {unknown[0]} (not RVC's {version} architecture)")
    model.load_state_dict({k: state[k].float() for k in expected})
    return model


def save_discriminator(model: MultiPeriodDiscriminator, path: Path | str, *, legacy_keys: bool = True) -> Path:
    """Write ``model`` as RVC's training writes D_*.pth (tests, and a discriminator trained further)."""
    state = {}
    for key, value in model.state_dict().items():
        if legacy_keys:
            key = key.replace(".parametrizations.weight.original0", ".weight_g").replace(".parametrizations.weight.original1", ".weight_v")
        state[key] = value.detach().clone()
    path = Path(path)
    torch.save({"model": state, "iteration": 1, "optimizer": {}, "learning_rate": 1e-4}, path)
    return path


def feature_loss(real: list[list[torch.Tensor]], generated: list[list[torch.Tensor]]) -> torch.Tensor:
    """RVC's feature matching: 2 x the sum over every feature map of mean |real - generated| (real detached)."""
    total = 0.0
    for maps_real, maps_generated in zip(real, generated):
        for r, g in zip(maps_real, maps_generated):
            total = total + (r.float().detach() - g.float()).abs().mean()
    return total * 2


def generator_loss(scores: list[torch.Tensor]) -> torch.Tensor:
    return sum(((1 - s.float()) ** 2).mean() for s in scores)


def discriminator_loss(real: list[torch.Tensor], generated: list[torch.Tensor]) -> torch.Tensor:
    return sum(((1 - r.float()) ** 2).mean() + (g.float() ** 2).mean() for r, g in zip(real, generated))
