"""Read and validate a ContentVec/HuBERT source folder (torch, build side only).

The format the RVC ecosystem ships (lengyue233/content-vec-best, Applio's ``contentvec`` folder): a
Transformers folder with ``config.json`` (a ``HubertConfig``, ``architectures: ["HubertModelWithFinalProj"]``)
and ``model.safetensors`` or ``pytorch_model.bin`` (safetensors first when both are there). The tensors
carry ``HubertModel``'s names (``feature_extractor.conv_layers.0.conv.weight``...), optionally under a
``hubert.`` prefix, plus ``final_proj.weight``/``final_proj.bias`` (Linear hidden_size -> classifier_proj_size).
Also accepted, as the transformers versions wrote them: the positional convolution's weight norm as
``weight_g``/``weight_v`` (4.x), as ``parametrizations.weight.original0``/``original1`` (5.x) or folded
into a plain ``weight``; ``masked_spec_embed`` (spec-augment's training-only vector) is ignored.

A ``.bin`` file is read with ``torch.load(weights_only=True)`` (data, never code); safetensors with the
safetensors library. Every problem is a one-line ``CheckpointError`` naming the folder or the file.

The weights handed on are those of the inference model only (``model.ContentEncoderModel``'s canonical
names: ``hubert.`` prefix, folded positional weight, fp32): the transformer layers up to the output
layer, and final_proj for v1.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import CheckpointError
from ...hashing import sha256_file
from .spec import EncoderSpec

CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
PREFIX = "hubert."
IGNORED = ("masked_spec_embed",)  # training only
_POS = "encoder.pos_conv_embed.conv."
_WEIGHT_NORM = {  # stored names of the positional conv's (g, v), per transformers version
    "weight_g": (_POS + "weight_g", _POS + "weight_v"),
    "parametrizations": (_POS + "parametrizations.weight.original0", _POS + "parametrizations.weight.original1"),
}
_LAYER = re.compile(r"^hubert\.encoder\.layers\.(\d+)\.")
MAX_LISTED = 4  # tensor names quoted in an error message


@dataclass(frozen=True)
class EncoderSource:
    """A read and validated source folder."""

    path: Path
    weights_file: Path
    spec: EncoderSpec
    weights: dict[str, Any]  # the inference model's fp32 tensors (canonical names)
    config_sha256: str
    weights_sha256: str
    layout: str  # "hubert." (prefixed) or "plain"
    weight_norm: str  # how the file stored the positional conv: weight_g, parametrizations or folded
    stored_dtype: str


def _listed(names: list[str]) -> str:
    shown = ", ".join(sorted(names)[:MAX_LISTED])
    return shown + (f" ... ({len(names)} in all)" if len(names) > MAX_LISTED else "")


def read_config(folder: Path, version: str | None) -> tuple[EncoderSpec, Path]:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {CONFIG_FILE} (a ContentVec/HuBERT Transformers folder holds config.json and model.safetensors or pytorch_model.bin)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not a text file (expected a HubertConfig in JSON)") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: not a HuBERT config (a JSON {type(config).__name__}, not an object)")
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    hubert = model_type == "hubert" or (model_type is None and any(str(name).startswith("Hubert") for name in architectures))
    if not hubert:
        raise CheckpointError(f"{path}: not a HuBERT config (model_type {model_type!r}, architectures {architectures!r:.80}); "
                              "a content encoder source is a ContentVec/HuBERT-base folder")
    return EncoderSpec.from_config(config, version, source=str(path)), path


def _read_tensors(path: Path) -> dict[str, Any]:
    import torch

    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            data = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types for a damaged header
            raise CheckpointError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})") from None
    else:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a damaged or unsafe file
            raise CheckpointError(f"{path}: not a readable PyTorch weights file ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not data or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items()):
        raise CheckpointError(f"{path}: not a state dict (a mapping of tensor names to tensors)")
    return data


def _canonical(stored: dict[str, Any], path: Path) -> tuple[dict[str, Any], str, str]:
    """The stored tensors under the canonical names (``hubert.`` prefix, folded positional weight);
    the layout and weight-norm form found."""
    import torch

    prefixed = [name for name in stored if name.startswith(PREFIX)]
    layout = "hubert." if prefixed else "plain"
    tensors: dict[str, Any] = {}
    for name, tensor in stored.items():
        if name.startswith("final_proj."):
            key = name
        else:
            bare = name[len(PREFIX):] if name.startswith(PREFIX) else name
            if bare in IGNORED:
                continue
            if layout == "hubert." and not name.startswith(PREFIX):
                raise CheckpointError(f"{path}: mixes tensor names with and without the 'hubert.' prefix ({name!r} has none)")
            key = PREFIX + bare
        tensors[key] = tensor
    weight_norm = "folded"
    for form, (gain, direction) in _WEIGHT_NORM.items():
        g, v = PREFIX + gain, PREFIX + direction
        if g in tensors or v in tensors:
            if not (g in tensors and v in tensors):
                raise CheckpointError(f"{path}: has {(g if g in tensors else v)[len(PREFIX):]!r} without its weight-norm partner")
            g_tensor, v_tensor = tensors.pop(g).float(), tensors.pop(v).float()
            if g_tensor.dim() != 3 or v_tensor.dim() != 3 or g_tensor.shape[2] != v_tensor.shape[2]:
                raise CheckpointError(f"{path}: positional conv weight norm has shapes {list(g_tensor.shape)} and {list(v_tensor.shape)}")
            tensors[PREFIX + _POS + "weight"] = torch._weight_norm(v_tensor, g_tensor, 2)
            weight_norm = form
    return tensors, layout, weight_norm


def read_folder(folder: str | Path, version: str | None) -> EncoderSource:
    """Read ``folder`` for ``version`` (v1, v2; None: v2) features; CheckpointError on any problem."""
    import torch

    folder = Path(folder)
    if not folder.exists():
        raise CheckpointError(f"{folder}: no such folder (a ContentVec/HuBERT Transformers folder: config.json and model.safetensors or pytorch_model.bin)")
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a folder; a content encoder source is a Transformers folder (config.json and model.safetensors or pytorch_model.bin)")
    spec, config_path = read_config(folder, version)
    weights_path = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if weights_path is None:
        raise CheckpointError(f"{folder}: no weights file (model.safetensors or pytorch_model.bin)")
    stored = _read_tensors(weights_path)
    stored_dtype = str(next(iter(stored.values())).dtype).replace("torch.", "")
    tensors, layout, weight_norm = _canonical(stored, weights_path)

    expected = _expected_shapes(spec)
    if spec.final_proj and not {"final_proj.weight", "final_proj.bias"} <= set(tensors):
        raise CheckpointError(f"{weights_path}: v1 features are layer {spec.output_layer} through final_proj, but the file has no final_proj.weight/bias")
    missing = [name for name in expected if name not in tensors and not name.startswith("final_proj.")]
    if missing:
        raise CheckpointError(f"{weights_path}: missing tensors of the config's HuBERT: {_listed(_stored_names(missing, layout))}")
    extra = [name for name in tensors if name not in expected]
    if extra:
        raise CheckpointError(f"{weights_path}: tensors the config's HuBERT does not have: {_listed(_stored_names(extra, layout))}")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != expected[name]:
            raise CheckpointError(f"{weights_path}: tensor {_stored_names([name], layout)[0]} has shape {list(tensor.shape)}, "
                                  f"the config gives {list(expected[name])}")
        if not tensor.is_floating_point():
            raise CheckpointError(f"{weights_path}: tensor {_stored_names([name], layout)[0]} is {str(tensor.dtype).replace('torch.', '')}, not floating point")

    weights = {}
    for name, tensor in tensors.items():
        layer = _LAYER.match(name)
        if layer and int(layer.group(1)) >= spec.output_layer:
            continue  # after the output layer: cannot change the features
        if name.startswith("final_proj.") and not spec.final_proj:
            continue
        tensor = tensor.float().contiguous()
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f"{weights_path}: tensor {_stored_names([name], layout)[0]} has NaN or Inf values")
        weights[name] = tensor
    return EncoderSource(
        path=folder, weights_file=weights_path, spec=spec, weights=weights, config_sha256=sha256_file(config_path),
        weights_sha256=sha256_file(weights_path), layout=layout, weight_norm=weight_norm, stored_dtype=stored_dtype,
    )


def _expected_shapes(spec: EncoderSpec) -> dict[str, tuple[int, ...]]:
    from .model import expected_shapes

    return expected_shapes(spec)


def _stored_names(names: list[str], layout: str) -> list[str]:
    """Canonical names as the file spells them (for messages)."""
    if layout == "hubert.":
        return list(names)
    return [name[len(PREFIX):] if name.startswith(PREFIX) else name for name in names]
