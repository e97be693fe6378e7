"""The content-addressed build cache: stage keys, a verified on-disk store, per-key file locks, maintenance.

Standard library only. Everything rvc-compile caches goes through it, so ``rvc-compile cache`` sees,
sizes and removes all of it: the build pipeline asks the store for each stage's output, and
``precision.calibration`` for each calibration set, by a key that hashes everything the output depends
on (``stage_key``); a hit is reused, a miss runs the producer once, even when several builds share the
cache (``Store.get_or_create``). A tool that keeps its own files (OpenVINO's compiled blobs, for
``runtime``) gets a managed folder instead (``Store.area``).

Layout (see docs/CACHE.md)::

    <root>/stages/<key[:2]>/<key>/entry.json   stage, key ingredients, notes, sha256+size of every file
    <root>/stages/<key[:2]>/<key>/files/...    the stage's output files, exactly as its producer wrote them
    <root>/stages/<key[:2]>/<key>/last-used    empty; its mtime is the last hit (LRU pruning)
    <root>/locks/<key[:2]>/<key>.lock          per-key advisory lock (areas: locks/areas/<name>.lock)
    <root>/tmp/                                staging folders (same filesystem, renamed into place)
    <root>/tmp/build-<token>/                  one running build's scratch files (``Store.scratch``)
    <root>/areas/<name>/files/...              a managed folder a tool fills itself (``Store.area``: OpenVINO's
                                               CACHE_DIR); ``/`` in the name is ``+`` in the folder's name
    <root>/areas/<name>/area.json, last-used   its name and creation time; the mtime of last-used is its last use

Entries are immutable once renamed into place. Every read re-hashes the files: an entry that does not
match its ``entry.json`` (bit rot, a truncated copy, an edit) is removed and reported as a miss, never
returned. A caller may add its own check of an entry's content (``check=``), failing which the entry
is discarded the same way.

Locking: a process using an entry holds a shared lock on its key for as long as it keeps the ``Entry``
(release it with ``entry.release()`` or a ``with`` block); creating or removing an entry takes the
exclusive lock. ``prune`` and ``clear`` only take locks without waiting, so they skip entries in use.
On POSIX the lock is ``fcntl.flock``; on Windows ``msvcrt.locking``, which has no shared mode: there
every lock is exclusive and an ``Entry`` drops its lock when it is returned (Windows itself refuses to
delete files that are open). Without either, there is no locking: concurrent builds may then compute
the same stage twice, and the atomic rename still keeps every entry whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import stat
import sys
import time
from pathlib import Path, PurePath, PurePosixPath
from typing import Any, Callable, Iterable, Iterator, Mapping

from .. import __version__
from ..artifact.manifest import canonical_json, sha256_file
from ..errors import NO_SPACE_ERRNOS, CacheError, RvcCompileError, storage_error_in, storage_error_path

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
try:  # Windows
    import msvcrt
except ImportError:
    msvcrt = None  # type: ignore[assignment]

ENV_VAR = "RVC_COMPILE_CACHE"
APP_NAME = "rvc-compile"
KEY_FORMAT = 1  # bump when the meaning of a key ingredient changes: every old entry becomes a miss
ENTRY_FORMAT = 1
AREA_FORMAT = 1
ENTRY_FILE = "entry.json"
AREA_FILE = "area.json"
FILES_DIR = "files"
LAST_USED_FILE = "last-used"
STAGES_DIR, LOCKS_DIR, TMP_DIR, AREAS_DIR = "stages", "locks", "tmp", "areas"
# Folders that rvc-compile before the one store wrote beside it (calibration sets, OpenVINO's blobs):
# nothing reads them any more; ls/du show them and prune/clear remove them like entries.
LEGACY_DIRS = ("calibration", "compiled")
SHARED_LOCKS = fcntl is not None
_KEY = re.compile(r"^[0-9a-f]{64}$")
_STAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$")
_AREA = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(/[A-Za-z0-9][A-Za-z0-9._-]{0,63}){0,3}$")
_ATTEMPTS = 5  # retries when a prune removes an entry in the instant a lock changes mode


# -- where the cache lives ------------------------------------------------------------------------

def user_cache_dir(*, environ: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """The platform's per-user cache folder for rvc-compile."""
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    home = Path(environ["HOME"]) if environ.get("HOME") else Path.home()
    if platform == "darwin":
        return home / "Library" / "Caches" / APP_NAME
    if platform.startswith(("win", "cygwin")):
        local = environ.get("LOCALAPPDATA")
        return (Path(local) if local else home / "AppData" / "Local") / APP_NAME / "Cache"
    xdg = environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():  # the XDG spec says to ignore a relative value
        return Path(xdg) / APP_NAME
    return home / ".cache" / APP_NAME


def resolve_cache_dir(cli_value: Path | str | None = None, *, environ: Mapping[str, str] | None = None, platform: str | None = None) -> Path:
    """``--cache-dir`` if given, else ``$RVC_COMPILE_CACHE``, else the platform's user cache folder."""
    environ = os.environ if environ is None else environ
    if cli_value not in (None, ""):
        chosen = Path(cli_value)
    elif environ.get(ENV_VAR):
        chosen = Path(environ[ENV_VAR])
    else:
        chosen = user_cache_dir(environ=environ, platform=platform)
    return chosen.expanduser().absolute()


# -- keys -----------------------------------------------------------------------------------------

def _plain(value: Any, where: str) -> Any:
    """``value`` as canonical-JSON-able data; refuses anything whose identity is not its value."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value!r} cannot be part of a cache key")
        return value
    if isinstance(value, enum.Enum):
        return _plain(value.value, where)
    if isinstance(value, PurePath):
        # A path names a file, not its contents: keying on it would hit after the file changed.
        raise TypeError(f"{where}: a path ({value}) cannot be part of a cache key; pass the file's sha256 in inputs")
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"{where}: bytes cannot be part of a cache key; pass their sha256 in inputs")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _plain(getattr(value, field.name), f"{where}.{field.name}") for field in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        plain = {}
        for name, item in value.items():
            if not isinstance(name, str):
                raise TypeError(f"{where}: key {name!r} is not a string")
            plain[name] = _plain(item, f"{where}.{name}")
        return plain
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        items = [_plain(item, f"{where}{{}}") for item in value]
        return sorted(items, key=canonical_json)
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        return _plain(value.item(), where)  # numpy scalars
    raise TypeError(f"{where}: {type(value).__name__} cannot be part of a cache key; use JSON data or a dataclass of it")


class StageKey(str):
    """A cache key: the 64-hex sha256 string itself, carrying the stage name and the ingredients it hashes.

    Being a ``str`` it goes wherever a key goes; ``Store`` records ``ingredients`` in ``entry.json`` so
    ``rvc-compile cache ls --json`` can say what an entry was built from.
    """

    stage: str
    ingredients: dict[str, Any]

    def __new__(cls, digest: str, stage: str, ingredients: dict[str, Any]) -> "StageKey":
        key = super().__new__(cls, digest)
        key.stage, key.ingredients = stage, ingredients
        return key

    def __reduce__(self) -> tuple:  # pickles (multiprocessing) with its ingredients
        return (StageKey, (str(self), self.stage, self.ingredients))


def key_ingredients(stage: str, *, inputs: Mapping[str, str], params: Any = None, libraries: Mapping[str, str] | None = None, device: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Exactly what ``stage_key`` hashes (as canonical JSON: sorted keys, no whitespace, no NaN).

    - ``key_format``: this module's key format (changes invalidate every key);
    - ``rvc_compile``: the rvc-compile version (a new release recomputes everything);
    - ``stage``: the stage name (``capture``, ``pass:simplify``, ``backend:openvino``...);
    - ``inputs``: name -> sha256 (64 lowercase hex) of every input: a file's content hash, or the key of
      the upstream stage whose output this stage consumes (which chains keys like a Merkle tree);
    - ``params``: the stage's normalized parameters: JSON data, dataclasses (their fields), enums
      (their value), tuples (lists), sets (sorted lists); paths and bytes are refused;
    - ``libraries``: name -> version of every library the stage's output depends on;
    - ``device``: for device-specific stages (backend compiles, calibrated quantization), what the output
      is specific to: CPU model and flags, GPU architecture, driver/backend version; ``None`` otherwise.
    """
    if not isinstance(stage, str) or not _STAGE.match(stage):
        raise ValueError(f"stage name {stage!r}: use letters, digits and . _ : / - (at most 100 characters)")
    plain_inputs = {}
    for name, digest in dict(inputs).items():
        if not isinstance(name, str) or not isinstance(digest, str) or not _KEY.match(digest):
            raise ValueError(f"stage {stage}: input {name!r} needs a sha256 (64 lowercase hex digits), got {digest!r}")
        plain_inputs[name] = digest
    plain_libraries = {}
    for name, version in dict(libraries or {}).items():
        if not isinstance(name, str) or not isinstance(version, str):
            raise ValueError(f"stage {stage}: library {name!r} needs a version string, got {version!r}")
        plain_libraries[name] = version
    return {
        "key_format": KEY_FORMAT,
        "rvc_compile": __version__,
        "stage": stage,
        "inputs": plain_inputs,
        "params": _plain(params, "params"),
        "libraries": plain_libraries,
        "device": None if device is None else _plain(device, "device"),
    }


def stage_key(stage: str, *, inputs: Mapping[str, str], params: Any = None, libraries: Mapping[str, str] | None = None, device: Mapping[str, Any] | None = None) -> StageKey:
    """The cache key of one stage's output: sha256 of the canonical JSON of ``key_ingredients(...)``.

    Equal ingredients give equal keys whatever the order of dict entries; a change to any of them (an
    input's hash, a parameter, the rvc-compile version, a library version, the device) gives another key.
    """
    ingredients = key_ingredients(stage, inputs=inputs, params=params, libraries=libraries, device=device)
    return StageKey(hashlib.sha256(canonical_json(ingredients)).hexdigest(), stage, ingredients)


def cpu_device() -> dict[str, Any]:
    """The ``device`` ingredient of a CPU-specific stage: architecture, CPU model and its ISA flags."""
    import platform

    from ..machine import cpu_info

    info = cpu_info()
    # isa_class: the class after ONEDNN_MAX_CPU_ISA's cap, under which the same CPU compiles other kernels.
    return {"kind": "cpu", "machine": platform.machine(), "cpu": info["cpu"], "flags": sorted(info["flags"]), "isa_class": info["isa_class"]}


def _check_key(key: str) -> str:
    if not isinstance(key, str) or not _KEY.match(str(key)):
        raise ValueError(f"cache key {key!r} is not a sha256 (64 lowercase hex digits); make it with stage_key()")
    return key


# -- locks ----------------------------------------------------------------------------------------

class _KeyLock:
    """An advisory lock on one lock file, shared or exclusive.

    Changing mode is not atomic (the old lock is dropped first, which also rules out two upgrading
    readers deadlocking), so a caller re-checks the entry after every ``acquire``. A lock file removed by
    a pruner (which holds the exclusive lock while it unlinks) is detected after locking by comparing
    the open file with the path, and the lock is taken again on the new file.
    """

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        self.exclusive: bool | None = None  # None: not held

    def acquire(self, *, exclusive: bool, blocking: bool = True) -> bool:
        if fcntl is None and msvcrt is None:  # pragma: no cover - no locking on this platform
            self.exclusive = exclusive
            return True
        if self.exclusive is not None:
            if self.exclusive == exclusive or (msvcrt is not None and fcntl is None):
                return True  # Windows locks are always exclusive already
            if not blocking:
                raise ValueError("a held lock changes mode only blocking")
            self._unlock()
        while True:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            if not self._lock(exclusive, blocking):
                self.release()
                return False
            try:
                current = os.stat(self.path)
                held = os.fstat(self._fd)
                if (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino):
                    self.exclusive = exclusive
                    return True
            except FileNotFoundError:
                pass
            self.release()  # locked a file that a pruner unlinked meanwhile: lock the new one

    def _lock(self, exclusive: bool, blocking: bool) -> bool:
        assert self._fd is not None
        if fcntl is not None:
            flags = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if blocking else fcntl.LOCK_NB)
            try:
                fcntl.flock(self._fd, flags)
            except BlockingIOError:
                return False
            return True
        os.lseek(self._fd, 0, os.SEEK_SET)  # pragma: no cover - Windows
        while True:  # pragma: no cover - Windows
            try:
                msvcrt.locking(self._fd, msvcrt.LK_NBLCK, 1)
                return True
            except OSError:
                if not blocking:
                    return False
                time.sleep(0.05)

    def _unlock(self) -> None:
        if self._fd is None or self.exclusive is None:
            return
        try:
            if fcntl is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            elif msvcrt is not None:  # pragma: no cover - Windows
                os.lseek(self._fd, 0, os.SEEK_SET)
                msvcrt.locking(self._fd, msvcrt.LK_UNLCK, 1)
        except OSError:
            pass
        self.exclusive = None

    def release(self) -> None:
        self._unlock()
        if self._fd is not None:
            try:
                os.close(self._fd)  # closing also drops an flock
            except OSError:
                pass
            self._fd = None
        self.exclusive = None

    def __del__(self) -> None:
        self.release()


# -- entries --------------------------------------------------------------------------------------

@dataclasses.dataclass(eq=False)
class Entry:
    """A verified cache entry. ``dir`` holds the stage's output files exactly as its producer wrote them.

    While this object is alive (or until ``release()``), this process holds a shared lock on the key,
    so ``prune``/``clear`` in any process leave the entry alone. Use it as a context manager to release
    the lock at a known point.
    """

    key: str
    stage: str
    record_dir: Path  # <root>/stages/<key[:2]>/<key>
    files: dict[str, dict[str, Any]]  # relative name -> {"sha256", "size"}
    meta: dict[str, Any]  # what the producer returned / put() was given
    ingredients: dict[str, Any] | None  # key_ingredients(...) when the key was a StageKey
    created: float  # epoch seconds
    last_used: float
    _lock: _KeyLock | None = dataclasses.field(default=None, repr=False)

    @property
    def dir(self) -> Path:
        return self.record_dir / FILES_DIR

    @property
    def size(self) -> int:
        return sum(int(info["size"]) for info in self.files.values())

    def file(self, name: str) -> Path:
        """Path of one output file; KeyError when the entry has no such file."""
        if name not in self.files:
            raise KeyError(f"cache entry {self.key[:12]} ({self.stage}) has no file {name!r}; it has {sorted(self.files)}")
        return self.dir / name

    def copy_to(self, destination: Path) -> Path:
        """Copy every output file into ``destination`` (created), keeping relative names; returns it."""
        destination = Path(destination)
        for name in self.files:
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.dir / name, target)
        return destination

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> "Entry":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()


@dataclasses.dataclass
class EntryInfo:
    """One entry as ``ls`` sees it: read from entry.json and the folder's sizes, without re-hashing.

    ``kind`` is ``stage`` (a stage's output, ``key`` its 64-hex key), ``area`` (a managed folder,
    ``key`` and ``stage`` its name) or ``legacy`` (a folder an older rvc-compile kept beside the store,
    ``key`` its name)."""

    key: str
    stage: str
    size: int  # bytes on disk, entry.json included
    created: float | None
    last_used: float | None
    ingredients: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None
    damaged: str | None = None  # why entry.json is unusable (such an entry is never returned by get)
    kind: str = "stage"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class PruneResult:
    removed: list[EntryInfo]
    in_use: list[EntryInfo]  # would have been removed but another build holds them
    freed_bytes: int
    remaining_bytes: int
    remaining_entries: int


def _safe_name(name: Any) -> bool:
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        return False
    posix = PurePosixPath(name)
    return not posix.is_absolute() and ".." not in posix.parts and posix.as_posix() == name


def _record_digest(record: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json({k: v for k, v in record.items() if k != "digest"})).hexdigest()


def _record_problem(record: Any, key: str) -> str | None:
    if not isinstance(record, dict):
        return f"{ENTRY_FILE} is not a JSON object"
    if record.get("format") != ENTRY_FORMAT:
        return f"{ENTRY_FILE} has format {record.get('format')!r}, expected {ENTRY_FORMAT}"
    if record.get("digest") != _record_digest(record):
        return f"{ENTRY_FILE} does not match its digest (edited or damaged)"
    if record.get("key") != key:
        return f"{ENTRY_FILE} is for key {str(record.get('key'))[:12]}"
    files = record.get("files")
    if not isinstance(files, dict) or not isinstance(record.get("stage"), str) or not isinstance(record.get("created"), (int, float)):
        return f"{ENTRY_FILE} lacks files, stage or created"
    for name, info in files.items():
        if not _safe_name(name):
            return f"{ENTRY_FILE} lists an unsafe file name {name!r}"
        if not isinstance(info, dict) or not isinstance(info.get("sha256"), str) or not isinstance(info.get("size"), int):
            return f"{ENTRY_FILE}: {name} needs sha256 and size"
    return None


def _fsync_path(path: Path, directory: bool = False) -> None:
    if directory and os.name == "nt":  # pragma: no cover - directories cannot be opened on Windows
        return
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mtime(path: Path) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def _tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirnames, filenames in os.walk(path):
        for filename in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, filename)).st_size
            except OSError:
                continue
    return total


# -- the store ------------------------------------------------------------------------------------

class Store:
    """The content-addressed store at ``root``. Safe to share between processes and threads.

    ``log`` receives one line whenever a corrupt entry is discarded (the build prints it); the same
    events are kept in ``discarded`` as ``(key, reason)``.
    """

    def __init__(self, root: Path | str, *, log: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.log = log or (lambda message: None)
        self.discarded: list[tuple[str, str]] = []

    @classmethod
    def open(cls, cli_value: Path | str | None = None, *, log: Callable[[str], None] | None = None) -> "Store":
        """The store at ``resolve_cache_dir(cli_value)``."""
        return cls(resolve_cache_dir(cli_value), log=log)

    # paths
    def entry_dir(self, key: str) -> Path:
        return self.root / STAGES_DIR / key[:2] / key

    def _lock_path(self, key: str) -> Path:
        return self.root / LOCKS_DIR / key[:2] / f"{key}.lock"

    def _error(self, action: str, exc: OSError) -> CacheError:
        """One line naming the cache folder, the file and the cure; the errno and path as fields."""
        reason = exc.strerror or str(exc)
        where = storage_error_path(exc) or str(self.root)
        elsewhere = f"choose another --cache-dir / ${ENV_VAR}"
        if exc.errno in NO_SPACE_ERRNOS:
            # A full disk, a quota or a file size limit: the cache itself is what can be made smaller.
            limit = "raise the file size limit (ulimit -f), " if exc.errno == errno.EFBIG else ""
            advice = f"free space with `rvc-compile cache prune --max-size SIZE` (or `cache clear`), {limit}or {elsewhere}"
        else:
            advice = f"fix permissions or {elsewhere}"
        return CacheError(f"cache {self.root}: cannot {action} ({reason}: {where}); {advice}", root=self.root, path=where, errno=exc.errno)

    def _holds(self, path: str | None) -> bool:
        """Whether ``path`` (a file an error names; None: unnamed, so the producer's staging folder) is in the cache."""
        if path is None:
            return True
        candidate, root = Path(os.path.abspath(path)), Path(os.path.abspath(self.root))
        if candidate == root or root in candidate.parents:
            return True
        with contextlib.suppress(OSError, RuntimeError):
            resolved, real_root = Path(path).resolve(), self.root.resolve()
            return resolved == real_root or real_root in resolved.parents
        return False

    def _key_lock(self, key: str) -> _KeyLock:
        path = self._lock_path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._error("create the lock folder", exc) from None
        return _KeyLock(path)

    def _acquire(self, lock: _KeyLock, *, exclusive: bool, blocking: bool = True) -> bool:
        try:
            return lock.acquire(exclusive=exclusive, blocking=blocking)
        except OSError as exc:
            raise self._error("lock an entry", exc) from None

    # reading
    def _load(self, key: str, check: Callable[["Entry"], str | None] | None = None) -> tuple[Entry | None, str | None]:
        """``(entry, None)`` intact, ``(None, None)`` absent, ``(None, reason)`` corrupt or partial.

        ``check(entry)``, the caller's own check of an entry whose files verified, returns why it is
        unusable (making it corrupt) or None."""
        record_dir = self.entry_dir(key)
        if not os.path.lexists(record_dir):
            return None, None
        try:
            record = json.loads((record_dir / ENTRY_FILE).read_text())
        except FileNotFoundError:
            return None, f"{ENTRY_FILE} is missing"
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            return None, f"{ENTRY_FILE} is unreadable ({str(exc)[:80]})"
        problem = _record_problem(record, key)
        if problem:
            return None, problem
        files_dir = record_dir / FILES_DIR
        try:
            for name, info in record["files"].items():
                path = files_dir / name
                try:
                    status = os.lstat(path)
                except FileNotFoundError:
                    return None, f"{name} is missing"
                if not stat.S_ISREG(status.st_mode):
                    return None, f"{name} is not a regular file"
                if status.st_size != info["size"]:
                    return None, f"{name} is {status.st_size} bytes, {ENTRY_FILE} says {info['size']}"
                if sha256_file(path) != info["sha256"]:
                    return None, f"{name}: sha256 differs from {ENTRY_FILE}"
            for path in files_dir.rglob("*") if files_dir.is_dir() else []:
                relative = path.relative_to(files_dir).as_posix()
                if relative not in record["files"] and not (path.is_dir() and not path.is_symlink()):
                    return None, f"{relative} is not listed in {ENTRY_FILE}"
        except OSError as exc:
            return None, f"unreadable ({exc.strerror or exc})"
        try:
            last_used = os.stat(record_dir / LAST_USED_FILE).st_mtime
        except OSError:
            last_used = float(record["created"])
        entry = Entry(
            key=key, stage=record["stage"], record_dir=record_dir, files=record["files"], meta=record.get("meta") or {},
            ingredients=record.get("ingredients"), created=float(record["created"]), last_used=last_used,
        )
        if check is not None:
            problem = check(entry)
            if problem:
                return None, problem
        return entry, None

    def _hand_out(self, entry: Entry, lock: _KeyLock) -> Entry:
        """Record the use (LRU) and give the caller the shared lock with the entry."""
        now = time.time()
        try:
            marker = entry.record_dir / LAST_USED_FILE
            marker.touch()
            os.utime(marker, (now, now))
            entry.last_used = now
        except OSError:
            pass  # a read-only cache still serves hits; it just cannot order them for pruning
        if SHARED_LOCKS:
            entry._lock = lock
        else:  # pragma: no cover - exclusive-only locks would block every other reader of this key
            lock.release()
        return entry

    def _present(self, entry: Entry) -> bool:
        return (entry.record_dir / ENTRY_FILE).is_file()

    def _lookup(self, key: str, lock: _KeyLock, check: Callable[[Entry], str | None] | None = None) -> Entry | None:
        """The intact entry with ``lock`` held shared, or None (lock held in some mode); discards corruption."""
        for _attempt in range(_ATTEMPTS):
            self._acquire(lock, exclusive=False)
            entry, problem = self._load(key, check)
            if problem is None:
                return entry
            self._acquire(lock, exclusive=True)  # no reader is using it while we decide
            entry, problem = self._load(key, check)
            if problem is not None:
                self._discard(key, problem)
                return None
            if entry is None:
                return None
            self._acquire(lock, exclusive=False)
            if self._present(entry):
                return entry
        return None

    def get(self, key: str, *, check: Callable[[Entry], str | None] | None = None) -> Entry | None:
        """The verified entry for ``key``, or None. A corrupt or partial entry (or one ``check`` refuses,
        see ``get_or_create``) is removed and is a miss."""
        _check_key(key)
        if not os.path.lexists(self.entry_dir(key)):
            return None
        lock = self._key_lock(key)
        try:
            entry = self._lookup(key, lock, check)
        except BaseException:
            lock.release()
            raise
        if entry is None:
            lock.release()
            return None
        return self._hand_out(entry, lock)

    def contains(self, key: str) -> bool:
        """Whether an intact entry exists (verifies it; does not count as a use)."""
        _check_key(key)
        if not os.path.lexists(self.entry_dir(key)):
            return False
        lock = self._key_lock(key)
        try:
            return self._lookup(key, lock) is not None
        finally:
            lock.release()

    # writing
    def get_or_create(
        self, key: str, producer: Callable[[Path], Mapping[str, Any] | None], *, stage: str | None = None, meta: Mapping[str, Any] | None = None,
        check: Callable[[Entry], str | None] | None = None,
    ) -> tuple[Entry, bool]:
        """The entry for ``key`` and whether it was a hit; on a miss ``producer(folder)`` writes the outputs.

        ``producer`` gets an empty folder in the cache's staging area and writes the stage's output files
        there; it may return a JSON-able dict of notes, stored as the entry's ``meta`` (merged over
        ``meta``). It runs under the key's exclusive lock, so concurrent builds (threads or processes)
        asking for the same key compute it once: the others wait and then hit. If the producer raises,
        nothing is stored and the exception propagates unchanged, except a storage error in the cache
        (a full disk, a file size limit, a read-only folder: ``errors.STORAGE_ERRNOS``, raised or wrapped
        by the producer), which becomes ``CacheError``. ``stage`` defaults to ``key.stage`` for a ``StageKey``.

        ``check(entry)`` is the caller's own check of an existing entry, after its files verified (it
        may read them, and keep what it read): a reason string makes the entry corrupt (discarded,
        logged, rebuilt), None accepts it. It is not called on the entry ``producer`` just made.
        """
        _check_key(key)
        stage = self._stage_of(key, stage)
        self._ensure()
        lock = self._key_lock(key)
        try:
            for _attempt in range(_ATTEMPTS):
                entry = self._lookup(key, lock, check)
                if entry is not None:
                    return self._hand_out(entry, lock), True
                self._acquire(lock, exclusive=True)
                entry, problem = self._load(key, check)  # another build may have made it while we waited
                if problem is not None:
                    self._discard(key, problem)
                    entry = None
                hit = entry is not None
                if entry is None:
                    self._clean_staging(key)  # a producer of this key that was killed left these
                    entry = self._produce(key, stage, producer, meta)
                self._acquire(lock, exclusive=False)
                if self._present(entry):
                    return self._hand_out(entry, lock), hit
            raise CacheError(f"cache {self.root}: entry {key[:12]} ({stage}) was removed {_ATTEMPTS} times while being created; is a prune running in a loop?")
        except BaseException:
            lock.release()
            raise

    def put(self, key: str, files: Path | Mapping[str, Path] | Iterable[Path], meta: Mapping[str, Any] | None = None, *, stage: str | None = None) -> Entry:
        """Store copies of ``files`` under ``key`` and return the entry; if it exists intact, keep that one.

        ``files`` is a folder (its whole tree, relative names kept), a mapping name -> file, or files
        (stored under their base names).
        """
        _check_key(key)
        stage = self._stage_of(key, stage)
        sources = self._sources(files)
        self._ensure()
        lock = self._key_lock(key)
        try:
            entry = self._lookup(key, lock)
            if entry is None:
                self._acquire(lock, exclusive=True)
                entry, problem = self._load(key)
                if problem is not None:
                    self._discard(key, problem)
                    entry = None
                if entry is None:
                    def copy(folder: Path) -> None:
                        for name, source in sources.items():
                            (folder / name).parent.mkdir(parents=True, exist_ok=True)
                            shutil.copyfile(source, folder / name)
                    entry = self._produce(key, stage, copy, meta)
                self._acquire(lock, exclusive=False)
            return self._hand_out(entry, lock)
        except BaseException:
            lock.release()
            raise

    @staticmethod
    def _stage_of(key: str, stage: str | None) -> str:
        stage = stage if stage is not None else getattr(key, "stage", None)
        if not isinstance(stage, str) or not _STAGE.match(stage):
            raise ValueError(f"stage name {stage!r}: pass stage=... (or a key made by stage_key())")
        return stage

    @staticmethod
    def _sources(files: Path | Mapping[str, Path] | Iterable[Path]) -> dict[str, Path]:
        if isinstance(files, (str, PurePath)):
            folder = Path(files)
            if not folder.is_dir():
                raise CacheError(f"{folder}: not a folder of stage outputs")
            sources = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}
        elif isinstance(files, Mapping):
            sources = {str(name): Path(path) for name, path in files.items()}
        else:
            sources = {Path(path).name: Path(path) for path in files}
        for name, path in sources.items():
            if not _safe_name(name):
                raise ValueError(f"cache file name {name!r} must be a relative path inside the entry")
            if not path.is_file():
                raise CacheError(f"{path}: no such file to store in the cache")
        return sources

    def _ensure(self) -> None:
        try:
            for name in (STAGES_DIR, LOCKS_DIR, TMP_DIR):
                (self.root / name).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._error("create the cache folder", exc) from None

    def _produce(self, key: str, stage: str, producer: Callable[[Path], Mapping[str, Any] | None], meta: Mapping[str, Any] | None) -> Entry:
        """Run ``producer`` into a staging folder and rename it into place. Caller holds the exclusive lock."""
        staging = self.root / TMP_DIR / f"{key}-{secrets.token_hex(4)}"
        outputs = staging / FILES_DIR
        try:
            try:
                outputs.mkdir(parents=True)
            except OSError as exc:
                raise self._error("create a staging folder", exc) from None
            try:
                notes = producer(outputs)
            except RvcCompileError:
                raise  # already says what went wrong, in the user's terms
            except Exception as exc:
                storage = storage_error_in(exc)
                if storage is not None and self._holds(storage_error_path(storage)):
                    raise self._error(f"write the output of stage {stage}", storage) from None
                raise
            merged = {**_plain(dict(meta or {}), "meta"), **_plain(dict(notes or {}), "producer notes")}
            try:
                return self._commit(key, stage, staging, merged)
            except OSError as exc:
                raise self._error(f"store the output of stage {stage}", exc) from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _commit(self, key: str, stage: str, staging: Path, meta: dict[str, Any]) -> Entry:
        outputs = staging / FILES_DIR
        files: dict[str, dict[str, Any]] = {}
        for path in sorted(outputs.rglob("*")):
            relative = path.relative_to(outputs).as_posix()
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                raise CacheError(f"stage {stage} wrote {relative}, which is not a regular file; cache entries hold regular files only")
            if path.is_dir():
                continue
            with open(path, "rb") as handle:
                digest = hashlib.sha256()
                while block := handle.read(1 << 20):
                    digest.update(block)
                os.fsync(handle.fileno())
            files[relative] = {"sha256": digest.hexdigest(), "size": path.stat().st_size}
        now = time.time()
        ingredients = getattr(key, "ingredients", None)
        record = {
            "format": ENTRY_FORMAT,
            "key": str(key),
            "stage": stage,
            "created": now,
            "rvc_compile_version": __version__,
            "ingredients": ingredients,
            "meta": meta,
            "files": files,
        }
        record["digest"] = _record_digest(record)
        entry_file = staging / ENTRY_FILE
        with open(entry_file, "w") as handle:
            handle.write(json.dumps(record, indent=1, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        (staging / LAST_USED_FILE).touch()
        for folder in sorted({p.parent for p in outputs.rglob("*")} | {outputs, staging}, key=lambda p: -len(p.parts)):
            _fsync_path(folder, directory=True)
        final = self.entry_dir(str(key))
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staging, final)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not final.exists():
                raise
            # The key appeared meanwhile (a writer without locks): keep the one already there if intact.
            existing, problem = self._load(str(key))
            if existing is not None:
                shutil.rmtree(staging, ignore_errors=True)
                return existing
            self._discard(str(key), problem or "unreadable")
            os.rename(staging, final)
        _fsync_path(final.parent, directory=True)
        return Entry(key=str(key), stage=stage, record_dir=final, files=files, meta=meta, ingredients=ingredients, created=now, last_used=now)

    # removing
    def _remove_dir(self, record_dir: Path) -> None:
        """Rename out of the way (atomic for readers) then delete."""
        trash = self.root / TMP_DIR / f"trash-{record_dir.name.replace('+', '-')}-{secrets.token_hex(4)}"
        (self.root / TMP_DIR).mkdir(parents=True, exist_ok=True)
        os.rename(record_dir, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def _discard(self, key: str, reason: str) -> None:
        """Remove a corrupt entry (caller holds the exclusive lock)."""
        try:
            self._remove_dir(self.entry_dir(key))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._error(f"remove corrupt entry {key[:12]} ({reason})", exc) from None
        self.discarded.append((str(key), reason))
        self.log(f"cache: discarded corrupt entry {key[:12]}: {reason}; it will be rebuilt")

    def _clean_staging(self, key: str) -> None:
        for path in (self.root / TMP_DIR).glob(f"{key}-*"):
            shutil.rmtree(path, ignore_errors=True)

    # areas: folders a tool fills itself
    def area_dir(self, name: str) -> Path:
        """``<root>/areas/<name, / as +>``: the area's record folder (its files are in ``files/``)."""
        if not isinstance(name, str) or not _AREA.match(name):
            raise ValueError(f"area name {name!r}: use letters, digits and . _ - in up to 4 parts joined by /")
        return self.root / AREAS_DIR / name.replace("/", "+")

    def _area_lock(self, name: str) -> _KeyLock:
        folder = self.root / LOCKS_DIR / AREAS_DIR
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._error("create the lock folder", exc) from None
        return _KeyLock(folder / f"{self.area_dir(name).name}.lock")

    def area(self, name: str) -> Path:
        """A folder of the cache for a tool that writes its own files there (OpenVINO's CACHE_DIR:
        ``area("compiled/openvino")``), created if needed; the call counts as a use (LRU pruning).

        The store does not know the tool's files: it neither verifies nor locks them while the tool
        runs. ``ls``/``du`` count the area as one item, and ``prune``/``clear`` remove it whole like an
        entry (unless an ``area`` call is handing it out at that instant): removing an area only costs
        the tool its cache, so a tool must treat a missing or emptied folder as a cold cache, as
        OpenVINO does.
        """
        record = self.area_dir(name)
        self._ensure()
        lock = self._area_lock(name)
        # Held while handing out: a prune (exclusive, never waiting) skips the area rather than remove it half-made.
        self._acquire(lock, exclusive=False)
        try:
            (record / FILES_DIR).mkdir(parents=True, exist_ok=True)
            if not (record / AREA_FILE).is_file():
                staged = record / f".{AREA_FILE}-{secrets.token_hex(4)}"
                staged.write_text(json.dumps({"format": AREA_FORMAT, "name": name, "created": time.time()}, sort_keys=True) + "\n")
                os.replace(staged, record / AREA_FILE)
            marker = record / LAST_USED_FILE
            marker.touch()
            now = time.time()
            os.utime(marker, (now, now))
        except OSError as exc:
            raise self._error(f"create the folder {name}", exc) from None
        finally:
            lock.release()
        return record / FILES_DIR

    def _area_infos(self) -> list[EntryInfo]:
        infos = []
        areas = self.root / AREAS_DIR
        for record in sorted(areas.iterdir()) if areas.is_dir() else []:
            name = record.name.replace("+", "/")
            if not _AREA.match(name) or not record.is_dir():
                continue
            try:
                created = float(json.loads((record / AREA_FILE).read_text())["created"])
            except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
                created = _mtime(record)
            last_used = _mtime(record / LAST_USED_FILE) or created
            infos.append(EntryInfo(key=name, stage=name, size=_tree_bytes(record), created=created, last_used=last_used, kind="area"))
        for name in LEGACY_DIRS:
            folder = self.root / name
            if folder.is_dir() and not folder.is_symlink():
                newest = max([_mtime(folder) or 0.0] + [_mtime(path) or 0.0 for path in folder.rglob("*")])
                infos.append(EntryInfo(
                    key=name, stage=f"{name} (old layout)", size=_tree_bytes(folder), created=_mtime(folder), last_used=newest or None, kind="legacy",
                ))
        return infos

    def _remove_area(self, info: EntryInfo) -> bool:
        """Remove an area (or a legacy folder) unless an ``area`` call is handing it out; False then."""
        if info.kind == "legacy":
            try:
                self._remove_dir(self.root / info.key)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise self._error(f"remove the old folder {info.key}", exc) from None
            return True
        lock = self._area_lock(info.key)
        if not self._acquire(lock, exclusive=True, blocking=False):
            return False
        try:
            try:
                self._remove_dir(self.area_dir(info.key))
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise self._error(f"remove the folder {info.key}", exc) from None
            with contextlib.suppress(OSError):
                lock.path.unlink()  # safe while held, as for entries
            return True
        finally:
            lock.release()

    # maintenance
    def ls(self) -> list[EntryInfo]:
        """Every entry and area (and folder of an older layout), least recently used first. Reads
        entry.json only: no hashing."""
        infos = []
        stages_dir = self.root / STAGES_DIR
        for record_dir in sorted(stages_dir.glob("*/*")) if stages_dir.is_dir() else []:
            key = record_dir.name
            if not _KEY.match(key) or not record_dir.is_dir():
                continue
            size = _tree_bytes(record_dir)
            try:
                record = json.loads((record_dir / ENTRY_FILE).read_text())
                problem = _record_problem(record, key)
            except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
                record, problem = None, f"{ENTRY_FILE} unreadable ({type(exc).__name__})"
            if problem:
                try:
                    modified = record_dir.stat().st_mtime
                except OSError:
                    modified = None
                infos.append(EntryInfo(key=key, stage="?", size=size, created=modified, last_used=modified, damaged=problem))
                continue
            try:
                last_used = os.stat(record_dir / LAST_USED_FILE).st_mtime
            except OSError:
                last_used = float(record["created"])
            infos.append(EntryInfo(
                key=key, stage=record["stage"], size=size, created=float(record["created"]), last_used=last_used,
                ingredients=record.get("ingredients"), meta=record.get("meta"),
            ))
        infos += self._area_infos()
        infos.sort(key=lambda info: (info.last_used or 0.0, info.key))
        return infos

    def du(self) -> dict[str, Any]:
        """Total bytes and entry count, per stage and overall; ``staging_bytes`` counts the tmp folder."""
        stages: dict[str, dict[str, int]] = {}
        total = 0
        infos = self.ls()
        for info in infos:
            row = stages.setdefault(info.stage, {"entries": 0, "bytes": 0})
            row["entries"] += 1
            row["bytes"] += info.size
            total += info.size
        tmp = self.root / TMP_DIR
        return {
            "root": str(self.root),
            "entries": len(infos),
            "bytes": total,
            "staging_bytes": _tree_bytes(tmp) if tmp.is_dir() else 0,
            "stages": dict(sorted(stages.items())),
        }

    def _try_remove(self, info: EntryInfo) -> bool:
        """Remove one entry unless some process holds its lock; False when it is in use."""
        if info.kind != "stage":
            return self._remove_area(info)
        lock = self._key_lock(info.key)
        if not self._acquire(lock, exclusive=True, blocking=False):
            return False
        try:
            try:
                self._remove_dir(self.entry_dir(info.key))
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise self._error(f"remove entry {info.key[:12]}", exc) from None
            try:
                lock.path.unlink()  # safe while held: waiters notice the file changed and relock
            except OSError:
                pass
            return True
        finally:
            lock.release()

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Path]:
        """A private scratch folder in tmp/ for one build, removed when the block ends.

        It lives in the cache (not TMPDIR) so that the files of a killed build are found again: the
        build holds an exclusive lock on ``locks/scratch/<name>.lock`` while it runs, and
        ``sweep_scratch`` (every build's start, ``prune``) removes folders whose lock nobody holds."""
        self._ensure()
        name = f"build-{os.getpid()}-{secrets.token_hex(4)}"
        lock_dir = self.root / LOCKS_DIR / "scratch"
        try:
            lock_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._error("create the scratch lock folder", exc) from None
        lock = _KeyLock(lock_dir / f"{name}.lock")
        folder = self.root / TMP_DIR / name
        try:
            lock.acquire(exclusive=True)
            folder.mkdir()
        except OSError as exc:
            lock.release()
            raise self._error("create a scratch folder", exc) from None
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                lock.path.unlink()
            lock.release()

    def sweep_scratch(self) -> int:
        """Remove the scratch folders of builds that died (their lock is free); returns how many."""
        tmp, lock_dir = self.root / TMP_DIR, self.root / LOCKS_DIR / "scratch"
        removed = 0
        try:
            folders = sorted(tmp.glob("build-*")) if tmp.is_dir() else []
        except OSError:
            return 0
        for folder in folders:
            lock = _KeyLock(lock_dir / f"{folder.name}.lock")
            try:
                if not lock_dir.is_dir() or not lock.acquire(exclusive=True, blocking=False):
                    continue
                shutil.rmtree(folder, ignore_errors=True)
                with contextlib.suppress(OSError):
                    lock.path.unlink()
                removed += 1
            except OSError:
                continue
            finally:
                lock.release()
        return removed

    def _sweep(self) -> None:
        """Remove what killed processes left: staging folders nobody holds, trash, unused lock files."""
        self.sweep_scratch()
        tmp = self.root / TMP_DIR
        for path in sorted(tmp.iterdir()) if tmp.is_dir() else []:
            key = path.name.split("-", 1)[0]
            if path.name.startswith("trash-"):
                shutil.rmtree(path, ignore_errors=True)
            elif _KEY.match(key):
                lock = self._key_lock(key)
                if self._acquire(lock, exclusive=True, blocking=False):
                    try:
                        shutil.rmtree(path, ignore_errors=True)
                    finally:
                        lock.release()
        locks = self.root / LOCKS_DIR
        for path in sorted(locks.glob("*/*.lock")) if locks.is_dir() else []:
            key = path.stem
            if not _KEY.match(key) or os.path.lexists(self.entry_dir(key)):
                continue
            lock = _KeyLock(path)
            try:
                if lock.acquire(exclusive=True, blocking=False):
                    path.unlink()
            except OSError:
                pass
            finally:
                lock.release()

    def prune(self, *, max_size: int | None = None, older_than: float | None = None, now: float | None = None) -> PruneResult:
        """Remove damaged entries, entries unused for ``older_than`` seconds, then least recently used
        entries until the total is at most ``max_size`` bytes. Entries in use by any build are kept.
        Areas (``area``) and folders of an older layout count as entries, by their last use and size."""
        now = time.time() if now is None else now
        infos = self.ls()
        removed: list[EntryInfo] = []
        in_use: list[EntryInfo] = []
        kept: list[EntryInfo] = []
        for info in infos:
            stale = older_than is not None and (info.last_used or 0.0) < now - older_than
            if info.damaged or stale:
                (removed if self._try_remove(info) else in_use).append(info)
            else:
                kept.append(info)
        if max_size is not None:
            total = sum(info.size for info in kept + in_use)
            survivors = []
            for info in kept:  # least recently used first
                if total > max_size:
                    if self._try_remove(info):
                        removed.append(info)
                        total -= info.size
                        continue
                    in_use.append(info)
                else:
                    survivors.append(info)
            kept = survivors
        self._sweep()
        remaining = [info for info in kept + in_use]
        return PruneResult(
            removed=removed, in_use=in_use, freed_bytes=sum(info.size for info in removed),
            remaining_bytes=sum(info.size for info in remaining), remaining_entries=len(remaining),
        )

    def clear(self) -> PruneResult:
        """Remove every entry and area not in use, every folder of an older layout and every leftover of
        killed builds."""
        return self.prune(max_size=0)


# -- sizes and ages -------------------------------------------------------------------------------

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(text: str, what: str = "--max-size") -> int:
    """``500M``, ``2G``, ``1.5G``, ``800K``, ``1234`` (bytes) -> bytes. K/M/G/T are powers of 1024, like ``du -h``."""
    match = _SIZE.match(str(text))
    if not match:
        raise CacheError(f"{what} {text!r}: expected a size like 500M, 2G or 1048576 (bytes)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])


def parse_age(text: str, what: str = "--older-than") -> float:
    """``30s``, ``15m``, ``12h``, ``7d``, ``2w`` -> seconds."""
    match = _AGE.match(str(text))
    if not match:
        raise CacheError(f"{what} {text!r}: expected an age like 12h, 7d or 2w (s, m, h, d, w)")
    return float(match.group(1)) * _AGE_UNITS[match.group(2).lower()]


def format_size(size: int) -> str:
    for unit in ("B", "K", "M", "G"):
        if size < 1024 or unit == "G":
            return f"{size}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size:.1f}T"  # pragma: no cover


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0.0, seconds)
    for limit, unit, div in ((120, "s", 1), (7200, "m", 60), (172800, "h", 3600)):
        if seconds < limit:
            return f"{int(seconds // div)}{unit}"
    return f"{int(seconds // 86400)}d"


def format_ls(infos: list[EntryInfo], root: Path, now: float | None = None) -> str:
    now = time.time() if now is None else now
    if not infos:
        return f"cache {root}: no entries"
    rows = [("KEY", "STAGE", "SIZE", "AGE", "LAST USED")]
    for info in sorted(infos, key=lambda i: -(i.last_used or 0.0)):
        stage = info.stage if not info.damaged else f"? (damaged: {info.damaged})"
        if info.kind == "area":
            key, stage = "(folder)", f"{info.stage} (a tool's own files)"
        elif info.kind == "legacy":
            key = "(folder)"
        else:
            key = info.key[:12]
        age = format_age(now - info.created) if info.created else "?"
        used = format_age(now - info.last_used) + " ago" if info.last_used else "?"
        rows.append((key, stage, format_size(info.size), age, used))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + "  " + row[4] for row in rows]
    lines.append(f"{len(infos)} entries, {format_size(sum(i.size for i in infos))} in {root}")
    return "\n".join(lines)


def format_du(usage: dict[str, Any]) -> str:
    rows = [("STAGE", "ENTRIES", "SIZE")]
    rows += [(stage, str(row["entries"]), format_size(row["bytes"])) for stage, row in usage["stages"].items()]
    rows.append(("total", str(usage["entries"]), format_size(usage["bytes"])))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    if usage["staging_bytes"]:
        lines.append(f"staging (builds in progress or killed): {format_size(usage['staging_bytes'])}")
    lines.append(f"cache: {usage['root']}")
    return "\n".join(lines)


def format_prune(result: PruneResult) -> str:
    text = f"removed {len(result.removed)} entries ({format_size(result.freed_bytes)})"
    if result.in_use:
        text += f"; kept {len(result.in_use)} in use by a running build"
    return text + f"; {result.remaining_entries} entries ({format_size(result.remaining_bytes)}) remain"
