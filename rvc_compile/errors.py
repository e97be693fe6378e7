"""Errors a user can cause.

Every error a user can trigger with bad input is an ``RvcCompileError`` whose message is one line
naming the file or key at fault. The CLI prints it without a traceback and exits 2; a failed gate
(accuracy or latency out of budget) is ``GateFailure`` and exits 1.
"""

from __future__ import annotations

import errno

# OSError numbers that mean the disk or folder cannot take the write (full, over quota, a file size
# limit, read-only): the user's environment, reported in one line like any user error.
STORAGE_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EFBIG", "EROFS") if hasattr(errno, name))


def is_storage_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def storage_error_message(exc: OSError) -> str:
    """``PATH: No space left on device``, naming the file being written (a copy's destination)."""
    where = exc.filename2 if getattr(exc, "filename2", None) is not None else exc.filename
    return f"{where}: {exc.strerror or exc}" if where is not None else str(exc.strerror or exc)


def first_line(exc: BaseException, limit: int = 160, default: str = "") -> str:
    """The first line of an exception's message, at most ``limit`` characters (``default`` if it has none):
    what a one-line error quotes of a library's multi-line message."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else default


class RvcCompileError(Exception):
    """Base class of every error caused by the user's input. ``exit_code`` is what the CLI returns."""

    exit_code = 2

    def __init__(self, message: str):
        # One line, always: a multi-line message would hide the part that names the culprit.
        super().__init__(" ".join(str(message).split()))


class CheckpointError(RvcCompileError):
    """A checkpoint file is unreadable, unsafe, or does not describe an RVC synthesizer."""


class InputError(RvcCompileError):
    """Inference inputs (features, f0, speaker, noise) are malformed."""


class RecipeError(RvcCompileError):
    """A build recipe is invalid."""


class ArtifactError(RvcCompileError):
    """An artifact is missing, tampered with or otherwise unusable."""


class BuildError(RvcCompileError):
    """A build stage failed (export, a pass, a backend compile, a multi-length check)."""


class CacheError(RvcCompileError):
    """The build cache cannot be used: its folder is unwritable, the disk is full, an entry cannot be removed."""


class GateFailure(RvcCompileError):
    """An accuracy or latency gate failed."""

    exit_code = 1


class CalibrationError(RvcCompileError):
    """Calibration data is missing, empty, unreadable, or does not match the model (width, rate, alignment)."""
