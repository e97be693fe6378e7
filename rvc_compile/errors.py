"""Errors a user can cause.

Every error a user can trigger with bad input is an ``RvcCompileError`` whose message is one line
naming the file or key at fault. The CLI prints it without a traceback and exits 2; a failed gate
(accuracy or latency out of budget) is ``GateFailure`` and exits 1.
"""

from __future__ import annotations

import errno as _errno
from pathlib import Path
from typing import Any

# OSError numbers that mean the disk or folder cannot take the write: the user's environment, reported
# in one line like any user error. The one list: the CLI, the artifact writer and the build cache all
# decide with ``is_storage_error``.
# Full, over quota, or a file past a size limit (``ulimit -f``, the filesystem's largest file):
# freeing space or writing elsewhere helps.
NO_SPACE_ERRNOS = frozenset(getattr(_errno, name) for name in ("ENOSPC", "EDQUOT", "EFBIG") if hasattr(_errno, name))
# The folder refuses every write.
READ_ONLY_ERRNOS = frozenset(getattr(_errno, name) for name in ("EROFS",) if hasattr(_errno, name))
STORAGE_ERRNOS = NO_SPACE_ERRNOS | READ_ONLY_ERRNOS


def is_storage_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def storage_error_path(exc: OSError) -> str | None:
    """The file being written when ``exc`` happened (a copy's destination), if the error names one."""
    where = exc.filename2 if getattr(exc, "filename2", None) is not None else exc.filename
    return None if where is None else str(where)


def storage_error_message(exc: OSError) -> str:
    """``PATH: No space left on device``, naming the file being written (a copy's destination)."""
    where = storage_error_path(exc)
    return f"{where}: {exc.strerror or exc}" if where is not None else str(exc.strerror or exc)


def storage_error_in(exc: BaseException) -> OSError | None:
    """The storage ``OSError`` that ``exc`` is, or was raised from or while handling (a library that
    wraps a failed write in its own exception type), if any: decided on ``errno``, never on messages."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if is_storage_error(current):
            return current  # type: ignore[return-value]
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return None


def first_line(exc: BaseException, limit: int = 160, default: str = "") -> str:
    """The first line of an exception's message, at most ``limit`` characters (``default`` if it has none):
    what a one-line error quotes of a library's multi-line message."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else default


class RvcCompileError(Exception):
    """Base class of every error caused by the user's input. ``exit_code`` is what the CLI returns."""

    exit_code = 2

    def __init__(self, message: str, *, path: Any = None, problem: str | None = None):
        # One line, always: a multi-line message would hide the part that names the culprit.
        super().__init__(" ".join(str(message).split()))
        self.path = path  # the file or folder at fault, where there is one
        self.problem = " ".join(str(problem).split()) if problem is not None else None  # the message without the path

    @classmethod
    def about(cls, path: Any, problem: str) -> "RvcCompileError":
        """``path: problem``, with both kept as fields (a caller re-states the problem for another path)."""
        return cls(f"{path}: {problem}", path=path, problem=problem)


class CheckpointError(RvcCompileError):
    """A checkpoint file is unreadable, unsafe, or does not describe an RVC synthesizer."""


class InputError(RvcCompileError):
    """Inference inputs (features, f0, speaker, noise) are malformed."""


class RecipeError(RvcCompileError):
    """A build recipe is invalid.

    ``key``: the dotted recipe key at fault (``precision_policy.keep_fp32``), None when the error is about
    no one key (an unreadable file); ``problem``: what is wrong with it, without the key or the file, so
    a caller can re-raise it at the recipe's line (``_Located.error``) or decide on the key's section.
    """

    def __init__(self, message: str, *, key: str | None = None, problem: str | None = None):
        super().__init__(message, problem=problem)
        self.key = key

    @classmethod
    def at(cls, key: str, problem: str) -> "RecipeError":
        """``key: problem``, with both kept as fields."""
        return cls(f"{key}: {problem}", key=key, problem=problem)

    @property
    def section(self) -> str | None:
        """The top-level recipe section of ``key`` (``precision_policy``), or None."""
        return self.key.split(".", 1)[0] if self.key else None


class ArtifactError(RvcCompileError):
    """An artifact is missing, tampered with or otherwise unusable."""


class BuildError(RvcCompileError):
    """A build stage failed (export, a pass, a backend compile, a multi-length check)."""


class CacheError(RvcCompileError):
    """The build cache cannot be used: its folder is unwritable, the disk is full, an entry cannot be removed.

    Besides the message, the fields say what happened, for callers that decide on it (never parse the
    message): ``root`` the cache folder, ``path`` the file or folder being written or removed, ``errno``
    the OSError number (``errno.ENOSPC``, ``errno.EFBIG``...) and ``no_space`` whether freeing space
    (``rvc-compile cache prune``) is the cure; all None (``no_space`` False) for errors of another kind.
    """

    def __init__(self, message: str, *, root: Path | str | None = None, path: Path | str | None = None, errno: int | None = None):
        super().__init__(message)
        self.root = None if root is None else Path(root)
        self.path = None if path is None else Path(path)
        self.errno = errno

    @property
    def no_space(self) -> bool:
        return self.errno in NO_SPACE_ERRNOS


class GateFailure(RvcCompileError):
    """An accuracy or latency gate failed. ``failures``: each failed check, one line each (what the
    message lists, as data: a caller that records why a candidate failed reads these, not the message)."""

    exit_code = 1

    def __init__(self, message: str, *, failures: list[str] | tuple[str, ...] = ()):
        super().__init__(message)
        self.failures = tuple(" ".join(str(failure).split()) for failure in failures)


class CalibrationError(RvcCompileError):
    """Calibration data is missing, empty, unreadable, or does not match the model (width, rate, alignment)."""


class ExportError(RvcCompileError):
    """An artifact cannot be exported in the asked profile (rvc-compile export): an unknown profile, or
    what the profile's client cannot carry (another backend, a static graph, a voice without pitch)."""
