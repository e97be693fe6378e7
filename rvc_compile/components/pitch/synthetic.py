"""RMVPE weight files with random weights, in the official ``rmvpe.pt`` layout, for tests and
measurements (nothing is downloaded).

``write_rmvpe(path)`` writes a bare state dict stored in fp16, as the official file is; ``width`` narrows
the network (U-Net channels ``width``, GRU hidden ``16 * width``; the official width is 16) with the same
names and depths, for fast tests.

Random weights alone give a meaningless salience: every frame "voiced" somewhere random, and quantization
errors that say nothing about a trained network. ``informative=True`` (the default) makes the output
behave like a pitch estimator's while the U-Net stays random:

1. BatchNorm statistics from data: the model runs once in training mode over real speech (the bundled
   clips' log-mel), so every BatchNorm's running mean and variance are those of its real inputs and the
   activations keep unit scale through the five levels (a trained network's do too);
2. a "pitch dial" head: the BiGRU's units become frame-wise threshold units on one projection ``p`` of
   the ``cnn`` features (the first principal component over speech frames, which tracks loudness and
   timbre): unit j is ``tanh(a * (p - t_j))``, no recurrence (update gate shut, recurrent weights 0).
   The output layer takes differences of neighbouring units, so bin k's logit is a bump that peaks where
   ``p`` lies between thresholds t_k and t_k+1: one sharp peak of fixed height (about 3 bins wide, peak
   salience about 0.97, background 0.0003), moving continuously with ``p`` over bins 100-220 (100-400 Hz).
   Frames whose ``p`` is below its 30th percentile over speech (quiet frames) have no peak: unvoiced.

A quantized graph then perturbs the U-Net's features, which moves ``p`` and so the decoded pitch, by an
amount set by how much the features move relative to their spread over speech: what the accuracy budgets
of ``RmvpeComponent`` are measured on. The head is sharper than a cosine over bins could be and never
saturates (a linear layer over raw GRU outputs cannot give a sharp peak of bounded height).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .spec import CLASSES, RmvpeSpec

OFFICIAL_WIDTH = 16
DIAL_BINS = (100, 220)  # the salience bins the dial spans: 100 Hz to 400 Hz
UNVOICED_QUANTILE = 0.30  # frames with p below this quantile over speech have no peak
TOP_QUANTILE = 0.995
UNIT_STEEPNESS = 0.4  # a * (t_j+1 - t_j): a unit's transition spans about 1 / this bins
PEAK_LOGIT = 3.5  # sigmoid(3.5) = 0.97 in the middle of a bin
BACKGROUND_LOGIT = -8.0  # sigmoid(-8) = 0.0003, far below RVC's 0.03 threshold


def spec_for_width(width: int | None) -> RmvpeSpec:
    if width is None:
        return RmvpeSpec()
    if width < 1:
        raise ValueError(f"width must be positive, got {width}")
    return RmvpeSpec(channels=width, gru_hidden=16 * width)


def _speech_batch(frames: int = 256, crops: int = 6, seed: int = 0) -> Any:
    import torch

    from .speech import bundled_clips, mel_crop, speech_mels

    mels = speech_mels(bundled_clips())
    return torch.from_numpy(np.concatenate([mel_crop(mels, frames, seed + index) for index in range(crops)]))


def _calibrate_batchnorm(model: Any, mel: Any) -> None:
    """Running statistics = the batch statistics of real speech at every BatchNorm (cumulative average).
    Every BatchNorm is in the U-Net, so only the U-Net runs (``mel``'s frames are a multiple of 32: the
    model would not pad them)."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        model.unet(mel.transpose(-1, -2).unsqueeze(1))
    model.eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 0.01  # as the official modules are built


def _dial_head(model: Any, mel: Any) -> None:
    """Turn the BiGRU + output layer into the pitch dial described in the module docstring."""
    import torch

    spec: RmvpeSpec = model.spec
    with torch.no_grad():
        x = mel.transpose(-1, -2).unsqueeze(1)
        features = model.cnn(model.unet(x)).transpose(1, 2).flatten(-2).reshape(-1, 3 * 128).double()
    mean = features.mean(dim=0)
    _, _, directions = torch.linalg.svd(features - mean, full_matrices=False)
    direction = directions[0]
    p = (features - mean) @ direction
    low, high = (float(torch.quantile(p, q)) for q in (UNVOICED_QUANTILE, TOP_QUANTILE))
    units = 2 * spec.gru_hidden
    first = DIAL_BINS[0]
    bins = min(DIAL_BINS[1] - first, units - 1)  # narrow test models have fewer units than bins
    # bin first + i spans p in [t_i, t_i+1]; thresholds past the last edge are never crossed
    edges = np.linspace(low, high, bins + 1)
    step = float(edges[1] - edges[0])
    thresholds = np.concatenate([edges, high + step * (1 + np.arange(units - bins - 1))])
    steepness = UNIT_STEEPNESS / step
    gru = model.fc[0].gru
    hidden = spec.gru_hidden
    for direction_index, suffix in enumerate(("", "_reverse")):
        own = torch.from_numpy(thresholds[direction_index * hidden:(direction_index + 1) * hidden])
        weight_ih = getattr(gru, f"weight_ih_l0{suffix}")
        weight_hh = getattr(gru, f"weight_hh_l0{suffix}")
        bias_ih = getattr(gru, f"bias_ih_l0{suffix}")
        bias_hh = getattr(gru, f"bias_hh_l0{suffix}")
        with torch.no_grad():
            weight_ih.zero_()
            weight_hh.zero_()
            bias_hh.zero_()
            bias_ih.zero_()
            bias_ih[hidden:2 * hidden] = -30.0  # update gate shut: h_t = n_t, no memory
            weight_ih[2 * hidden:] = (steepness * direction).float()[None, :]
            bias_ih[2 * hidden:] = (-steepness * (own + float(mean @ direction))).float()
    # the difference of neighbouring units peaks at 2 * tanh(UNIT_STEEPNESS / 2) in the middle of a bin
    gain = (PEAK_LOGIT - BACKGROUND_LOGIT) / (2 * np.tanh(UNIT_STEEPNESS / 2))
    linear = model.fc[1]
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.fill_(BACKGROUND_LOGIT)
        for i in range(bins):
            linear.weight[first + i, i] = gain
            linear.weight[first + i, i + 1] = -gain


def make_state_dict(seed: int = 0, width: int | None = None, informative: bool = True) -> dict[str, Any]:
    """The fp32 state dict of a random RMVPE (see the module docstring)."""
    import torch

    from .model import Rmvpe

    spec = spec_for_width(width)
    torch.manual_seed(seed)
    model = Rmvpe(spec).eval()
    if informative:
        mel = _speech_batch(seed=seed)
        _calibrate_batchnorm(model, mel)
        _dial_head(model, mel)
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def write_rmvpe(path: str | Path, seed: int = 0, width: int | None = None, *, informative: bool = True,
                dtype: str = "float16", wrap: str | None = None) -> Path:
    """A random-weight ``rmvpe.pt`` in the official layout (a bare state dict, floating tensors in
    ``dtype``; ``wrap`` nests it under that key, as some forks save it)."""
    import torch

    path = Path(path)
    state = make_state_dict(seed, width, informative)
    cast = getattr(torch, dtype)
    state = {name: tensor.to(cast) if tensor.is_floating_point() else tensor for name, tensor in state.items()}
    torch.save({wrap: state} if wrap else state, path)
    return path


__all__ = ["CLASSES", "write_rmvpe", "make_state_dict", "spec_for_width"]
