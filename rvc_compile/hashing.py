"""sha256 of files and streams: the one implementation every content hash of a file goes through.

Artifact file tables, checkpoint pins, calibration clips, cache entries and packed archives all name a
file by the sha256 of its bytes; one function means one chunk size and one hex format for all of them.
Standard library only (the runtime and ``verify`` use it without torch).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, BinaryIO, Mapping

CHUNK_BYTES = 1 << 20  # read 1 MiB at a time: constant memory for multi-GB checkpoints
SHA256_HEX = re.compile(r"[0-9a-f]{64}")  # how a sha256 is written in recipes and manifests


def sha256_stream(handle: BinaryIO, chunk: int = CHUNK_BYTES) -> str:
    """Hex sha256 of everything left in ``handle`` (read to its end)."""
    digest = hashlib.sha256()
    while block := handle.read(chunk):
        digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str | Path, chunk: int = CHUNK_BYTES) -> str:
    """Hex sha256 of the file at ``path``."""
    with open(path, "rb") as handle:
        return sha256_stream(handle, chunk)


def is_sha256_hex(text: object) -> bool:
    """True for 64 lowercase hex digits (a sha256 as ``sha256_file`` writes it)."""
    return isinstance(text, str) and SHA256_HEX.fullmatch(text) is not None


def state_dict_sha256(state_dict: Mapping[str, Any]) -> str:
    """Hex sha256 of a torch state dict's names and fp32 values, in name order: the identity of a model's
    weights (a derived model's reference outputs in the build cache, a distillation run's resume check).
    Duck-typed on tensors, so this module stays free of torch."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        digest.update(name.encode())
        digest.update(state_dict[name].detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()
