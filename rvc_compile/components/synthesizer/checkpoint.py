"""Read RVC checkpoint files safely and turn them into a validated ModelSpec + fp32 state dict.

Two layouts exist in the wild:
- the "small model" that RVC WebUI / Applio export and users share: ``{"weight", "config", "info",
  "sr", "f0", "version"}`` with fp16 weights and ``enc_q`` removed;
- the training checkpoint ``G_*.pth``: ``{"model", "iteration", "optimizer", "learning_rate"}`` with
  ``enc_q`` still present and no config (given as RVC's JSON config, or inferred from weight shapes).

and one of our own: the pruned checkpoint ``rvc-compile prune`` writes (``format:
"rvc-compile-pruned"``, docs/PRUNING.md): the small-model layout plus a versioned header and the
channel map that the official config cannot express. It loads, and is validated, like the others.

A checkpoint is data, never code: only ``torch.load(weights_only=True)`` touches it, after the zip
container has been checked for sizes that would exhaust memory.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import pickletools
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import CheckpointError, first_line
from ...hashing import sha256_file
from .spec import CONFIG_FIELDS, FEATURE_DIM, SAMPLE_RATE_TAGS, ModelSpec, from_config_list, official_config, with_channels

# Far above any RVC checkpoint (a v2 training checkpoint with optimizer state is ~0.5 GB).
MAX_UNPACKED_BYTES = 4 * 1024**3
# torch.save stores members uncompressed; a high ratio means a crafted archive.
MAX_COMPRESSION_RATIO = 50
PRUNED_FORMAT = "rvc-compile-pruned"
PRUNED_FORMAT_VERSION = 1  # bump on any change a version-1 reader would misread
# A pickle builds its objects from references to earlier ones, so a 1 MB file can describe 10^9 nested
# values: harmless until something walks or hashes them (the unpickler hashes dict keys, error messages
# print values), then hours of CPU. An RVC checkpoint's pickle holds ~10^4 values; a training one ~10^5.
MAX_PICKLE_VALUES = 10_000_000
MAX_PICKLE_DEPTH = 1000
# Bounds on a checkpoint's 18-entry config, far above any RVC model (6 layers, <= 5 upsampling stages,
# channels <= 768, 48 kHz). A config past them is crafted: building even a meta-device model of it would
# spend minutes and gigabytes before the weights are compared with it.
MAX_CONFIG_INT = 1 << 20
MAX_CONFIG_LIST = 16
MAX_LAYERS = 128
# Errors the interpretation of an unpickled payload can raise on malformed data that no specific check
# names: they become one CheckpointError naming the file, never a traceback.
_MALFORMED = (TypeError, ValueError, IndexError, KeyError, AttributeError, ZeroDivisionError, OverflowError, RuntimeError, NotImplementedError, RecursionError)
# What zipfile raises on damaged headers (NotImplementedError: a header claiming "zip file version 6.4").
_ZIP_ERRORS = (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, zlib.error, struct.error, IndexError)
WEIGHT_NORM_SUFFIXES = {
    "weight_g": "g",
    "weight_v": "v",
    "parametrizations.weight.original0": "g",
    "parametrizations.weight.original1": "v",
}


@dataclass
class Checkpoint:
    """A loaded, validated checkpoint: what every later stage starts from."""

    path: Path
    spec: ModelSpec
    state_dict: dict[str, Any]  # inference keys only, fp32, weight norm folded
    sha256: str
    layout: str  # "small-model" or "training"
    stored_dtype: str
    info: str | None = None
    weight_norm_style: str | None = None  # "weight_g/weight_v", "parametrizations", or None (folded)
    pruning: dict[str, Any] | None = None  # pruned checkpoints: what was removed, from which source
    distillation: dict[str, Any] | None = None  # pruned checkpoints: how it was fine-tuned, if it was


def _describe(value: Any) -> str:
    """A short description of an untrusted value for an error message: never a full repr, which for a
    crafted payload (a list nested through shared references) would take exponential time and memory."""
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, int):
        return repr(value) if abs(value) < 10**12 else f"an integer of {value.bit_length()} bits"
    if isinstance(value, str):
        return repr(value[:40]) + ("..." if len(value) > 40 else "")
    try:
        return f"a {type(value).__name__} of {len(value)} items"
    except TypeError:
        return f"a {type(value).__name__}"


def _is_zipfile(path: Path) -> bool:
    """``zipfile.is_zipfile``, which itself raises on some damaged end records (a zip64 locator claiming
    several disks): those are corrupt archives."""
    try:
        return zipfile.is_zipfile(path)
    except _ZIP_ERRORS as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint archive ({first_line(exc, 120, type(exc).__name__)})") from None


def _check_container(path: Path) -> None:
    """Refuse archives whose declared contents would exhaust memory before torch reads them."""
    if not _is_zipfile(path):
        # Pre-1.6 torch files are bare pickles; weights_only still refuses code, and size is bounded
        # by the file itself.
        return
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except _ZIP_ERRORS as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint archive ({first_line(exc, 120, type(exc).__name__)})") from None
    total = sum(member.file_size for member in members)
    if total > MAX_UNPACKED_BYTES:
        raise CheckpointError(f"{path}: archive declares {total} bytes of tensors, over the {MAX_UNPACKED_BYTES}-byte limit")
    stored = sum(member.compress_size for member in members)
    if stored > path.stat().st_size:
        raise CheckpointError(f"{path}: archive declares {stored} bytes of members but the file has {path.stat().st_size}; refusing a crafted archive")
    for member in members:
        if member.file_size > MAX_COMPRESSION_RATIO * max(member.compress_size, 1) and member.file_size > 1 << 20:
            raise CheckpointError(f"{path}: archive member {member.filename} is compressed {member.file_size // max(member.compress_size, 1)}x; refusing a possible zip bomb")


_MUTATORS = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}


def _pickle_graph(stream: io.BufferedIOBase) -> list | None:
    """The object graph one pickle in ``stream`` builds, as nested lists (each node lists its parts),
    found by reading opcodes only: nothing is constructed, imported or called. None if unparsable (the
    real unpickler then refuses the file itself)."""
    stack: list[Any] = []
    marks: list[int] = []
    memo: dict[Any, Any] = {}
    try:
        for op, arg, _position in pickletools.genops(stream):
            name = op.name
            if name == "STOP":
                return stack[-1]
            if name == "MARK":
                marks.append(len(stack))
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[arg])
            elif name == "DUP":
                stack.append(stack[-1])
            elif name == "POP":
                if marks and marks[-1] == len(stack):
                    marks.pop()
                else:
                    stack.pop()
            else:
                before = op.stack_before
                if pickletools.markobject in before:
                    start = marks.pop() - before.index(pickletools.markobject)
                else:
                    start = len(stack) - len(before)
                if start < 0:
                    return None
                popped = stack[start:]
                del stack[start:]
                if name in _MUTATORS:  # the container keeps its identity (other references see the items)
                    popped[0].extend(popped[1:])
                    stack.append(popped[0])
                else:
                    stack.extend(list(popped) for _ in op.stack_after)
    except (ValueError, KeyError, IndexError, EOFError):
        return None
    return None


def _expansion(root: list) -> tuple[int, int]:
    """(values, depth) of ``root`` with every shared reference expanded; (-1, -1) for a cycle."""
    sizes: dict[int, tuple[int, int]] = {}
    open_nodes: set[int] = set()
    todo: list[tuple[list, bool]] = [(root, False)]
    while todo:
        node, finished = todo.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            size, depth = 1, 0
            for child in node:
                child_size, child_depth = sizes[id(child)]
                size += child_size
                depth = max(depth, child_depth)
            sizes[key] = (size, depth + 1)
        elif key not in sizes:
            if key in open_nodes:
                return -1, -1
            open_nodes.add(key)
            todo.append((node, True))
            todo.extend((child, False) for child in node if id(child) not in sizes)
    return sizes[id(root)]


def _check_pickle(path: Path) -> None:
    """Refuse pickles whose objects, expanded, hold more values (or nest deeper) than any checkpoint."""
    if _is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = [name for name in archive.namelist() if name.endswith("data.pkl")]
                streams = [io.BytesIO(archive.read(names[0]))] if names else []
        except _ZIP_ERRORS as exc:
            raise CheckpointError(f"{path}: corrupt checkpoint archive ({first_line(exc, 120, type(exc).__name__)})") from None
        count = 1
    else:
        streams = [open(path, "rb")]
        count = 5  # a pre-1.6 torch file is several pickles in a row (magic, protocol, info, objects, keys)
    for stream in streams:
        with stream:
            for _ in range(count):
                graph = _pickle_graph(stream)
                if graph is None:
                    break
                values, depth = _expansion(graph)
                if values < 0:
                    raise CheckpointError(f"{path}: the pickle holds a reference cycle; refusing a crafted file")
                if values > MAX_PICKLE_VALUES or depth > MAX_PICKLE_DEPTH:
                    raise CheckpointError(f"{path}: the pickle expands to {values} values nested {depth} deep (shared references); refusing a crafted file")


def _check_format(path: Path) -> None:
    """PyTorch writes a zip archive (torch >= 1.6) or a binary pickle (older); refuse anything else by name."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith((b"PK", b"\x80")):
        return
    if len(head) > 8 and head[8:9] == b"{":
        raise CheckpointError(f"{path}: a safetensors file, not a PyTorch checkpoint (rvc-compile reads RVC's .pth format)")
    if head.startswith(b"\x93NUMPY"):
        raise CheckpointError(f"{path}: a numpy .npy array, not a PyTorch checkpoint")
    raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")


def _torch_load(path: Path) -> Any:
    import torch

    _check_format(path)
    _check_container(path)
    _check_pickle(path)
    try:
        # torch warns about pickle protocols it did not write; the one-line error below is what users see.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as exc:
        first = first_line(exc, 160, type(exc).__name__)
        raise CheckpointError(f"{path}: refused: the file is not plain tensor data ({first})") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, AttributeError, TypeError, IndexError,
            struct.error, zlib.error, NotImplementedError, OverflowError, RecursionError) as exc:  # what a damaged file makes torch raise
        if not _is_zipfile(path):
            with open(path, "rb") as handle:
                magic = handle.read(2)
            if not magic.startswith((b"\x80", b"PK")):
                raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)") from None
        first = first_line(exc, 160, type(exc).__name__)
        raise CheckpointError(f"{path}: corrupt or truncated PyTorch checkpoint ({first})") from None


def _fold_weight_norm(weights: dict[str, Any], path: Path) -> tuple[dict[str, Any], str | None]:
    """Replace every (g, v) weight-norm pair with the plain weight g * v / ||v|| (norm over dims 1..)."""
    import torch

    pairs: dict[str, dict[str, Any]] = {}
    out: dict[str, Any] = {}
    style = None
    for key, value in weights.items():
        for suffix, role in WEIGHT_NORM_SUFFIXES.items():
            if key.endswith("." + suffix):
                prefix = key[: -len(suffix) - 1]
                pairs.setdefault(prefix, {})[role] = value
                style = "parametrizations" if suffix.startswith("parametrizations") else "weight_g/weight_v"
                break
        else:
            out[key] = value
    for prefix, pair in pairs.items():
        if set(pair) != {"g", "v"}:
            raise CheckpointError(f"{path}: weight-norm pair for {prefix} is incomplete (has only {sorted(pair)})")
        g, v = pair["g"].float(), pair["v"].float()
        if v.dim() < 1 or v.numel() == 0 or g.numel() != v.shape[0]:
            raise CheckpointError(f"{path}: weight-norm magnitude of {prefix} has shape {tuple(g.shape)}, direction {tuple(v.shape)}")
        norm = torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1).clamp_min(1e-12)
        out[prefix + ".weight"] = v * (g.reshape(-1) / norm).reshape((-1,) + (1,) * (v.dim() - 1))
    return out, style


def _read_rvc_json_config(config_path: Path) -> list[Any]:
    try:
        data = json.loads(Path(config_path).read_text())
        model, data_section = data["model"], data["data"]
        return [
            data_section["filter_length"] // 2 + 1,
            32,
            model["inter_channels"],
            model["hidden_channels"],
            model["filter_channels"],
            model["n_heads"],
            model["n_layers"],
            model["kernel_size"],
            model["p_dropout"],
            model["resblock"],
            model["resblock_kernel_sizes"],
            model["resblock_dilation_sizes"],
            model["upsample_rates"],
            model["upsample_initial_channel"],
            model["upsample_kernel_sizes"],
            model["spk_embed_dim"],
            model["gin_channels"],
            data_section["sampling_rate"],
        ]
    except FileNotFoundError:
        raise CheckpointError(f"{config_path}: config file not found") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{config_path}: not an RVC config json ({type(exc).__name__}: {exc})") from None


def _shape(weights: dict[str, Any], key: str, path: Path, ndim: int) -> tuple[int, ...]:
    if key not in weights:
        raise CheckpointError(f"{path}: not an RVC synthesizer: missing weight {key}")
    shape = tuple(weights[key].shape)
    if len(shape) != ndim or 0 in shape:
        raise CheckpointError(f"{path}: weight {key} has shape {list(shape)}; an RVC synthesizer's is {ndim}-D and non-empty")
    return shape


def _infer_config(weights: dict[str, Any], version: str, f0: bool, sample_rate: str | None, spec_channels: int | None, path: Path) -> list[Any]:
    """Recover the config of a training checkpoint from weight shapes, if exactly one official one fits."""
    ups = sorted(int(k.split(".")[2]) for k in weights if k.startswith("dec.ups.") and k.endswith(".weight") and k.split(".")[2].isdigit())
    up_kernels = [_shape(weights, f"dec.ups.{i}.weight", path, 3)[2] for i in ups]
    noise_kernels = [
        _shape(weights, f"dec.noise_convs.{i}.weight", path, 3)[2] for i in ups if f"dec.noise_convs.{i}.weight" in weights
    ]
    candidates = []
    for tag in SAMPLE_RATE_TAGS:
        if sample_rate and tag != sample_rate:
            continue
        config = official_config(version, tag)
        rates, kernels = config[12], config[14]
        if list(kernels) != up_kernels:
            continue
        if noise_kernels and noise_kernels != [2 * math.prod(rates[i + 1 :]) if i + 1 < len(rates) else 1 for i in range(len(rates))]:
            continue
        if spec_channels is not None and config[0] != spec_channels:
            continue
        candidates.append(config)
    if len(candidates) != 1:
        found = "no official config" if not candidates else f"{len(candidates)} official configs ({', '.join(str(c[17]) for c in candidates)} Hz)"
        raise CheckpointError(f"{path}: cannot infer the model config from weight shapes ({found} fit); pass --config with RVC's config json")
    config = list(candidates[0])
    # Widths come from the weights themselves, so a non-default width still loads.
    hidden, _ = _shape(weights, "enc_p.emb_phone.weight", path, 2)
    config[2] = _shape(weights, "enc_p.proj.weight", path, 3)[0] // 2
    config[3] = hidden
    config[4] = _shape(weights, "enc_p.encoder.ffn_layers.0.conv_1.weight", path, 3)[0]
    config[5] = hidden // _shape(weights, "enc_p.encoder.attn_layers.0.emb_rel_k", path, 3)[2]
    config[6] = len({k.split(".")[3] for k in weights if k.startswith("enc_p.encoder.attn_layers.")})
    config[7] = _shape(weights, "enc_p.encoder.ffn_layers.0.conv_1.weight", path, 3)[2]
    config[13] = _shape(weights, "dec.conv_pre.weight", path, 3)[0]
    config[15], config[16] = _shape(weights, "emb_g.weight", path, 2)
    return config


def _weights_version_and_f0(weights: dict[str, Any], path: Path) -> tuple[str, bool]:
    feature_dim = _shape(weights, "enc_p.emb_phone.weight", path, 2)[1]
    versions = [v for v, dim in FEATURE_DIM.items() if dim == feature_dim]
    if not versions:
        raise CheckpointError(f"{path}: content feature width {feature_dim} is neither 256 (v1) nor 768 (v2)")
    return versions[0], "enc_p.emb_pitch.weight" in weights


def load_checkpoint(
    path: str | Path,
    *,
    config_path: str | Path | None = None,
    sample_rate: str | None = None,
) -> Checkpoint:
    """Load and validate an RVC checkpoint; every problem is a one-line ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    if sample_rate is not None and sample_rate not in SAMPLE_RATE_TAGS:
        raise CheckpointError(f"{path}: unknown sample rate {sample_rate!r} (expected one of {', '.join(SAMPLE_RATE_TAGS)})")
    digest = sha256_file(path)
    data = _torch_load(path)
    try:
        return _interpret(data, path, digest, config_path=config_path, sample_rate=sample_rate)
    except _MALFORMED as exc:
        # Every shape of malformed payload a specific check below does not name: still one line.
        first = first_line(exc, 160)
        raise CheckpointError(f"{path}: malformed RVC checkpoint ({type(exc).__name__}{': ' + first if first else ''})") from None


def _interpret(data: Any, path: Path, digest: str, *, config_path: str | Path | None, sample_rate: str | None) -> Checkpoint:
    """Turn an unpickled payload into a validated Checkpoint (every value in ``data`` is untrusted)."""
    import torch

    from .model import expected_shapes

    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not an RVC checkpoint (top level is {type(data).__name__}, not a dict)")

    pruned = "format" in data
    if pruned:
        _check_pruned_header(data, path)
    info = None
    if "weight" in data and "config" in data:
        layout, raw_weights = ("pruned" if pruned else "small-model"), data["weight"]
        if isinstance(data.get("info"), str):
            info = data["info"][:1000]
    elif "model" in data and isinstance(data["model"], dict):
        layout, raw_weights = "training", data["model"]
    elif data and all(isinstance(k, str) for k in data) and any(k.startswith("enc_p.") for k in data):
        layout, raw_weights = "training", data  # a bare state dict
    else:
        keys = ", ".join(sorted(_describe(key) if not isinstance(key, str) else key[:40] for key in list(data)[:50])[:6])
        raise CheckpointError(f"{path}: not an RVC checkpoint (no 'weight'+'config' or 'model' entry; top-level keys: {keys})")
    if not isinstance(raw_weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in raw_weights.items()):
        raise CheckpointError(f"{path}: the weights entry is not a mapping of names to tensors")
    if any(key.startswith("discriminators.") for key in raw_weights):
        raise CheckpointError(f"{path}: this is an RVC discriminator (D_*.pth), not the synthesizer; use G_*.pth or the exported small model")
    for key, value in raw_weights.items():
        if value.layout != torch.strided or value.device.type != "cpu":
            raise CheckpointError(f"{path}: weight {key[:80]} is not a dense tensor ({value.layout}, {value.device.type})")
    vocoder = data.get("vocoder")
    if vocoder is not None and vocoder != "HiFi-GAN":
        raise CheckpointError(f"{path}: vocoder {_describe(vocoder)} (an Applio model) is not supported; only RVC's HiFi-GAN (NSF) decoder is")

    stored = sorted({str(v.dtype).replace("torch.", "") for v in raw_weights.values()})
    spec_channels = None
    if "enc_q.enc.pre.weight" in raw_weights and raw_weights["enc_q.enc.pre.weight"].dim() == 3:
        spec_channels = int(raw_weights["enc_q.enc.pre.weight"].shape[1])
    weights = {k: v for k, v in raw_weights.items() if not k.startswith("enc_q.")}
    weights, wn_style = _fold_weight_norm(weights, path)
    weights_version, weights_f0 = _weights_version_and_f0(weights, path)

    if layout in ("small-model", "pruned"):
        version = data.get("version", "v1")  # RVC wrote no version before v2 existed
        if not isinstance(version, str) or version not in FEATURE_DIM:
            raise CheckpointError(f"{path}: unknown version {_describe(version)} (expected 'v1' or 'v2')")
        if version != weights_version:
            raise CheckpointError(f"{path}: declared version {version} but the weights take {FEATURE_DIM[weights_version]}-dim features ({weights_version})")
        declared_f0 = data.get("f0", 1)  # RVC writes 0/1; some forks True/False or "0"/"1"
        if isinstance(declared_f0, (bool, int, float)) and declared_f0 in (0, 1):
            f0 = bool(declared_f0)
        elif isinstance(declared_f0, str) and declared_f0.strip() in ("0", "1"):
            f0 = declared_f0.strip() == "1"
        else:
            raise CheckpointError(f"{path}: 'f0' entry {_describe(declared_f0)} is not 0 or 1")
        if f0 != weights_f0:
            raise CheckpointError(f"{path}: declared f0={int(f0)} but the weights {'have' if weights_f0 else 'lack'} a pitch embedding")
        config = _check_config(data["config"], path)
        declared_sr = data.get("sr")  # RVC writes "40k"; Applio-family forks the rate in Hz
        if isinstance(declared_sr, str) and declared_sr in SAMPLE_RATE_TAGS:
            declared_sr = SAMPLE_RATE_TAGS[declared_sr]
        if isinstance(declared_sr, int) and not isinstance(declared_sr, bool) and declared_sr != config[17]:
            raise CheckpointError(f"{path}: 'sr' says {_describe(declared_sr)} Hz but config says {_describe(config[17])} Hz")
    else:
        version, f0 = weights_version, weights_f0
        if config_path is not None:
            config = _read_rvc_json_config(Path(config_path))
        else:
            config = _infer_config(weights, version, f0, sample_rate, spec_channels, path)
        config = _check_config(config, path if config_path is None else Path(config_path))

    n_speakers = int(_shape(weights, "emb_g.weight", path, 2)[0])  # RVC's loader takes the count from the weight
    spec = from_config_list(config, version=version, f0=f0, source=str(path), n_speakers=n_speakers)
    if pruned:
        spec = with_channels(spec, data.get("channels"), source=str(path))
    try:
        _validate_weights(weights, expected_shapes(spec), path, implied_by="config and channel map" if pruned else "config")
    except CheckpointError as exc:
        if layout != "training" or config_path is not None:
            raise
        # An inferred config only guesses the block structure; say how to give the real one.
        detail = exc.problem or str(exc)
        raise CheckpointError(f"{path}: the config inferred from weight shapes does not fit ({detail}); pass --config with RVC's config json") from None
    return Checkpoint(
        path=path,
        spec=spec,
        state_dict={k: v.float().contiguous() for k, v in weights.items()},
        sha256=digest,
        layout=layout,
        stored_dtype="+".join(stored),
        info=info,
        weight_norm_style=wn_style,
        pruning=data.get("pruning") if pruned else None,
        distillation=data.get("distillation") if pruned else None,
    )


def _check_pruned_header(data: dict[str, Any], path: Path) -> None:
    if data.get("format") != PRUNED_FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {data.get('format')!r} (expected {PRUNED_FORMAT!r} or an RVC checkpoint)")
    version = data.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: {PRUNED_FORMAT} format_version {version!r} is not a positive integer")
    if version > PRUNED_FORMAT_VERSION:
        raise CheckpointError(f"{path}: {PRUNED_FORMAT} format_version {version} is newer than this rvc-compile reads ({PRUNED_FORMAT_VERSION}); upgrade rvc-compile")
    for key in ("weight", "config", "channels"):
        if key not in data:
            raise CheckpointError(f"{path}: {PRUNED_FORMAT} checkpoint has no {key!r} entry")
    for key in ("pruning", "distillation"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise CheckpointError(f"{path}: {PRUNED_FORMAT} entry {key!r} must be a mapping")


def _plain_data(value: Any) -> Any:
    """JSON-able records as plain Python data, so ``torch.load(weights_only=True)`` reads them back."""
    return json.loads(json.dumps(value, allow_nan=False, default=float))


def save_pruned_checkpoint(
    path: str | Path,
    spec: ModelSpec,
    state_dict: dict[str, Any],
    *,
    info: str | None = None,
    pruning: dict[str, Any] | None = None,
    distillation: dict[str, Any] | None = None,
    dtype: str = "fp16",
) -> Path:
    """Write a pruned model in the ``rvc-compile-pruned`` format (docs/PRUNING.md), atomically."""
    import torch

    from ... import __version__
    from .model import expected_shapes

    if dtype not in ("fp16", "fp32"):
        raise ValueError("dtype must be 'fp16' or 'fp32'")
    path = Path(path)
    _validate_weights(state_dict, expected_shapes(spec), path, implied_by="config and channel map")
    cast = torch.float16 if dtype == "fp16" else torch.float32
    payload = {
        "format": PRUNED_FORMAT,
        "format_version": PRUNED_FORMAT_VERSION,
        "weight": {key: value.detach().to("cpu", cast).contiguous() for key, value in state_dict.items()},
        "config": spec.to_config_list(),
        "channels": spec.channel_map,
        "version": spec.version,
        "sr": spec.sample_rate_tag,
        "f0": int(spec.f0),
        "info": info,
        "rvc_compile_version": __version__,
        "pruning": _plain_data(pruning) if pruning is not None else None,
        "distillation": _plain_data(distillation) if distillation is not None else None,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(payload, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _check_config(config: Any, path: Path) -> list[Any]:
    """RVC's 18-entry config as plain, bounded data (``spec.from_config_list`` checks what each entry means)."""
    if not isinstance(config, (list, tuple)) or len(config) != len(CONFIG_FIELDS):
        raise CheckpointError(f"{path}: 'config' must be RVC's {len(CONFIG_FIELDS)}-entry list, got {_describe(config)}")

    def check(name: str, value: Any, depth: int) -> None:
        if value is None or isinstance(value, (bool, float)):
            return
        if isinstance(value, int):
            if abs(value) > MAX_CONFIG_INT:
                raise CheckpointError(f"{path}: config entry {name}={_describe(value)} is out of range")
        elif isinstance(value, str):
            if len(value) > 16:
                raise CheckpointError(f"{path}: config entry {name}={_describe(value)} is not an RVC config value")
        elif isinstance(value, (list, tuple)) and depth < 2:
            if len(value) > MAX_CONFIG_LIST:
                raise CheckpointError(f"{path}: config entry {name} has {len(value)} items (at most {MAX_CONFIG_LIST})")
            for item in value:
                check(name, item, depth + 1)
        else:
            raise CheckpointError(f"{path}: config entry {name}={_describe(value)} is not an RVC config value")

    for name, value in zip(CONFIG_FIELDS, config):
        check(name, value, 0)
    layers = config[CONFIG_FIELDS.index("n_layers")]
    if isinstance(layers, int) and layers > MAX_LAYERS:
        raise CheckpointError(f"{path}: config entry n_layers={layers} is out of range (at most {MAX_LAYERS})")
    return list(config)


def _validate_weights(weights: dict[str, Any], expected: dict[str, tuple[int, ...]], path: Path, implied_by: str = "config") -> None:
    import torch

    missing = sorted(set(expected) - set(weights))
    if missing:
        raise CheckpointError.about(path, f"not an RVC synthesizer matching its config: missing weight {missing[0]} ({len(missing)} missing)")
    unexpected = sorted(set(weights) - set(expected))
    if unexpected:
        raise CheckpointError.about(path, f"unexpected weight {unexpected[0]} ({len(unexpected)} unexpected): a state dict from another model?")
    for key, shape in expected.items():
        actual = tuple(weights[key].shape)
        if actual != shape:
            raise CheckpointError.about(path, f"weight {key} has shape {list(actual)} but the {implied_by} {'imply' if ' and ' in implied_by else 'implies'} {list(shape)}")
        tensor = weights[key]
        if not tensor.is_floating_point():
            raise CheckpointError.about(path, f"weight {key} has non-float dtype {tensor.dtype}")
        if not bool(torch.isfinite(tensor).all()):
            raise CheckpointError.about(path, f"weight {key} contains NaN or Inf")
