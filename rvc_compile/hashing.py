"""sha256 of files and streams: the one implementation every content hash of a file goes through.

Artifact file tables, checkpoint pins, calibration clips, cache entries and packed archives all name a
file by the sha256 of its bytes; one function means one chunk size and one hex format for all of them.
Standard library only (the runtime and ``verify`` use it without torch).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import BinaryIO

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
