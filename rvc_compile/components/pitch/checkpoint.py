"""Read and validate an RMVPE weights file (RVC's ``rmvpe.pt``) into a spec + fp32 state dict.

The official file is a bare state dict (stored in fp16) of ``E2E(4, 1, (2, 2))``; forks that save
``{"model": state_dict}`` or ``{"state_dict": ...}``, or a ``module.``-prefixed (DataParallel) dict, load
too. The widths are read from the tensor shapes (``RmvpeSpec``), then every tensor is checked against the
model those widths build: names and shapes must match exactly, as ``load_state_dict(strict=True)`` needs.
The file is read with the synthesizer's guarded loader (zip and pickle checks, then
``torch.load(weights_only=True)``); every problem is a one-line ``CheckpointError`` naming the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import CheckpointError
from ...hashing import sha256_file
from .spec import RmvpeSpec

NESTED_KEYS = ("model", "state_dict")  # forks that wrap the state dict
MARKERS = ("unet.encoder.bn.weight", "cnn.weight", "fc.1.weight")


@dataclass(frozen=True)
class RmvpeCheckpoint:
    path: Path
    sha256: str
    spec: RmvpeSpec
    state_dict: dict[str, Any]  # floating tensors fp32; BatchNorm's num_batches_tracked as stored (int64)
    layout: str  # "state-dict", "nested:model", "nested:state_dict"
    stored_dtype: str


def _count(weights: dict[str, Any], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({match.group(1) for key in weights if (match := regex.match(key))})


def infer_spec(weights: dict[str, Any], path: Path) -> RmvpeSpec:
    """The widths and depths an RMVPE state dict's tensor shapes imply."""

    def shape(key: str, ndim: int) -> tuple[int, ...]:
        if key not in weights:
            raise CheckpointError.about(path, f"not an RMVPE state dict matching RVC's E2E layout: missing tensor {key}")
        value = tuple(weights[key].shape)
        if len(value) != ndim:
            raise CheckpointError.about(path, f"tensor {key} has shape {list(value)}, expected {ndim} dimensions")
        return value

    channels = shape("unet.encoder.layers.0.conv.0.conv.0.weight", 4)[0]
    gru_hidden = shape("fc.0.gru.weight_hh_l0", 2)[1]
    values = {
        "channels": channels,
        "blocks": _count(weights, r"^unet\.encoder\.layers\.0\.conv\.(\d+)\."),
        "levels": _count(weights, r"^unet\.encoder\.layers\.(\d+)\."),
        "inter_layers": _count(weights, r"^unet\.intermediate\.layers\.(\d+)\."),
        "gru_hidden": gru_hidden,
        "gru_layers": _count(weights, r"^fc\.0\.gru\.weight_ih_l(\d+)$"),
    }
    return RmvpeSpec.from_dict(values, source=str(path))


def expected_shapes(spec: RmvpeSpec) -> dict[str, tuple[int, ...]]:
    """Every tensor name of an RMVPE of ``spec`` and its shape (built on the meta device: no memory)."""
    import torch

    from .model import Rmvpe

    with torch.device("meta"):
        model = Rmvpe(spec)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def validate(weights: dict[str, Any], spec: RmvpeSpec, path: Path) -> None:
    import torch

    expected = expected_shapes(spec)
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise CheckpointError.about(path, f"not an RMVPE state dict matching RVC's E2E layout: missing tensor {missing[0]} ({len(missing)} missing)")
    unexpected = sorted(set(weights) - set(expected))
    if unexpected:
        raise CheckpointError.about(path, f"unexpected tensor {unexpected[0]} ({len(unexpected)} unexpected): not RVC's RMVPE layout")
    for key, shape in expected.items():
        tensor = weights[key]
        if tuple(tensor.shape) != shape:
            raise CheckpointError.about(path, f"tensor {key} has shape {list(tensor.shape)}, expected {list(shape)} for {spec.to_dict()}")
        if key.endswith("num_batches_tracked"):
            continue
        if not tensor.is_floating_point():
            raise CheckpointError.about(path, f"tensor {key} has non-float dtype {tensor.dtype}")
        if not bool(torch.isfinite(tensor).all()):
            raise CheckpointError.about(path, f"tensor {key} contains NaN or Inf")


def load_rmvpe(path: str | Path) -> RmvpeCheckpoint:
    """Load and validate an RMVPE weights file; every problem is a one-line ``CheckpointError``."""
    import torch

    from ..synthesizer.checkpoint import _describe, _torch_load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError.about(path, "no such RMVPE file")
    if path.stat().st_size == 0:
        raise CheckpointError.about(path, "file is empty")
    digest = sha256_file(path)
    data = _torch_load(path)
    if not isinstance(data, dict):
        raise CheckpointError.about(path, f"not an RMVPE state dict (top level is {type(data).__name__}, not a dict)")
    layout = "state-dict"
    for key in NESTED_KEYS:
        if key in data and isinstance(data[key], dict) and not any(marker in data for marker in MARKERS):
            data, layout = data[key], f"nested:{key}"
            break
    if data and all(isinstance(key, str) and key.startswith("module.") for key in data):
        data = {key[len("module."):]: value for key, value in data.items()}
    # A voice checkpoint ({"weight": {...}, "config": [...], ...}) is not a mapping of names to tensors
    # either: name it before the generic complaint, or a user who swapped the two files never learns so.
    if not any(marker in data for marker in MARKERS) and (
            "weight" in data or "config" in data or any(str(key).startswith(("enc_p.", "dec.", "flow.")) for key in data)):
        raise CheckpointError.about(path, "an RVC voice checkpoint, not RMVPE weights (rmvpe.pt)")
    if not all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in data.items()):
        raise CheckpointError.about(path, "not an RMVPE state dict (not a mapping of names to tensors)")
    if not any(marker in data for marker in MARKERS):
        keys = ", ".join(sorted(_describe(key) for key in list(data)[:6]))
        raise CheckpointError.about(path, f"not an RMVPE state dict (no unet/cnn/fc tensors; keys: {keys or 'none'})")
    for key, value in data.items():
        if value.layout != torch.strided or value.device.type != "cpu":
            raise CheckpointError.about(path, f"tensor {key[:80]} is not a dense tensor ({value.layout}, {value.device.type})")
    spec = infer_spec(data, path)
    validate(data, spec, path)
    stored = sorted({str(value.dtype).replace("torch.", "") for key, value in data.items() if value.is_floating_point()})
    weights = {key: (value.float() if value.is_floating_point() else value).contiguous() for key, value in data.items()}
    return RmvpeCheckpoint(path=path, sha256=digest, spec=spec, state_dict=weights, layout=layout, stored_dtype="/".join(stored))
