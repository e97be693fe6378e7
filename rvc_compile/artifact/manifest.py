"""Artifact folders: the manifest, file hashes, atomic writes and integrity checks. Standard library only.

An artifact is ``<root>/<name>/<version>/``. It is assembled in a hidden sibling folder and renamed into
place by ``ArtifactWriter.commit`` once complete, so a reader never sees a half-written version: a
failed or killed build leaves at most a stale ``.tmp-*`` folder, which the next build removes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import time
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import ArtifactError, first_line, is_storage_error, storage_error_message
from ..hashing import sha256_file

FORMAT_VERSION = 4  # 2: golden cases hold user-level inputs; model.host_source. 3: the isa section. 4: the component section, signature axes
READABLE_FORMAT_VERSIONS = (2, 3, 4)  # 2 has no isa section (its CPU class is unknown); 2 and 3 have no component section (a synthesizer)
MANIFEST = "manifest.json"
MANIFEST_DIGEST = "manifest.sha256"
_TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"
STALE_AFTER_S = 24 * 3600  # a temporary folder this old belongs to no running build
# An artifact's name and version are folder names: recipes (build and prune) check theirs with these too.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
SEMVER_PATTERN = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?")
NAME_RULE = "use letters, digits, '.', '_' or '-' (at most 100 characters)"
VERSION_RULE = "is not a semantic version (MAJOR.MINOR.PATCH)"


def canonical_json(value: Any) -> bytes:
    """Key-sorted, compact, strict JSON: the bytes that hashes of structured data are taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def is_valid_name(name: object) -> bool:
    """A name usable as one folder (whole-string match: no trailing newline, never '.' or '..')."""
    return isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None


def is_valid_version(version: object) -> bool:
    return isinstance(version, str) and SEMVER_PATTERN.fullmatch(version) is not None


def check_name(name: str, what: str = "name") -> str:
    if not is_valid_name(name):
        raise ArtifactError(f"{what} {name!r}: {NAME_RULE}")
    return name


def check_version(version: str) -> str:
    if not is_valid_version(version):
        raise ArtifactError(f"version {version!r} {VERSION_RULE}")
    return version


def file_table(directory: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every regular file under ``directory`` except the manifest and its digest."""
    table = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).as_posix()
        if relative in (MANIFEST, MANIFEST_DIGEST) or path.is_dir():
            continue
        if path.is_symlink() or not path.is_file():
            raise ArtifactError(f"{path}: artifacts hold regular files only")
        table[relative] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return table


def _write_sealed_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=2, sort_keys=False, allow_nan=False) + "\n"
    (directory / MANIFEST).write_text(text)
    digest = hashlib.sha256(text.encode()).hexdigest()
    (directory / MANIFEST_DIGEST).write_text(f"{digest}  {MANIFEST}\n")


def _fsync_tree(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


class ArtifactWriter:
    """Context manager that assembles ``<root>/<name>/<version>`` in a temporary folder.

    Write files under ``writer.dir``, then call ``commit(manifest)``; leaving the block without a
    commit (an exception, a gate failure) deletes the temporary folder.
    """

    def __init__(self, root: Path, name: str, version: str, *, force: bool = False):
        self.root = Path(root)
        self.name = check_name(name)
        self.version = check_version(version)
        self.force = force
        self.parent = self.root / self.name
        self.final = self.parent / self.version
        self.dir: Path = self.parent / f"{_TMP_PREFIX}{self.version}-{secrets.token_hex(4)}"
        self.committed: Path | None = None

    def __enter__(self) -> "ArtifactWriter":
        if self.final.exists() and not self.force:
            raise ArtifactError(f"{self.final}: version {self.version} already exists; bump the version or pass --force")
        try:
            self.parent.mkdir(parents=True, exist_ok=True)
            clean_stale(self.parent)
            self.dir.mkdir()
        except OSError as exc:
            raise ArtifactError(f"{self.parent}: cannot create the artifact folder ({exc.strerror or exc})") from None
        return self

    def commit(self, manifest: dict[str, Any]) -> Path:
        """Hash every file, write the manifest and rename the folder into place."""
        manifest = dict(manifest)
        manifest["format_version"] = FORMAT_VERSION
        manifest["name"], manifest["version"] = self.name, self.version
        manifest["files"] = file_table(self.dir)
        _write_sealed_manifest(self.dir, manifest)
        _fsync_tree(self.dir)
        if self.final.exists():
            if not self.force:
                raise ArtifactError(f"{self.final}: version {self.version} appeared during the build; not overwritten")
            # Swap: move the old version aside first so the final path is never half-populated.
            old = self.parent / f"{_OLD_PREFIX}{self.version}-{secrets.token_hex(4)}"
            os.rename(self.final, old)
            os.rename(self.dir, self.final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(self.dir, self.final)
        self.committed = self.final
        return self.final

    def __exit__(self, exc_type: Any, exc: BaseException | None, traceback: Any) -> None:
        if self.committed is None:
            shutil.rmtree(self.dir, ignore_errors=True)
            try:
                self.parent.rmdir()  # only succeeds if this build created it and left it empty
            except OSError:
                pass
        if exc is not None and is_storage_error(exc):
            # A full disk (or quota, file size limit, read-only folder) anywhere in the build is the
            # user's to fix: one line naming the file, like every user error.
            raise ArtifactError(f"{storage_error_message(exc)}; the build of {self.final} was abandoned and nothing was written") from None


def clean_stale(parent: Path, max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove temporary folders of builds that were killed (older than ``max_age_s``)."""
    removed = []
    now = time.time()
    for path in parent.iterdir() if parent.is_dir() else []:
        if path.name.startswith((_TMP_PREFIX, _OLD_PREFIX)) and path.is_dir():
            try:
                if now - path.stat().st_mtime > max_age_s or path.name.startswith(_OLD_PREFIX):
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
            except OSError:
                continue
    return removed


def _encodable(name: str) -> bool:
    try:
        name.encode("utf-8")  # a lone surrogate (JSON can spell one) names no file
    except UnicodeEncodeError:
        return False
    return True


def _safe_relative(name: Any, directory: Path) -> str:
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name or not _encodable(name):
        raise ArtifactError.about(directory / MANIFEST, f"invalid file name {_short(name)} in 'files'")
    posix = PurePosixPath(name)
    if posix.is_absolute() or ".." in posix.parts or name != posix.as_posix():
        raise ArtifactError.about(directory / MANIFEST, f"file name {_short(name)} escapes the artifact folder")
    if len(name) > 1024 or any(len(part.encode("utf-8")) > 255 for part in posix.parts):
        raise ArtifactError.about(directory / MANIFEST, f"file name {_short(name)} is too long for a file system")
    return name


BUNDLE_KIND = "pipeline"  # a conversion pipeline bundle (build.bundle): component artifacts in one folder
BUNDLE_REQUIRED_KEYS = ("format_version", "name", "version", "kind", "components", "settings", "golden", "files")
REQUIRED_KEYS = ("format_version", "name", "version", "backend", "model", "signature", "golden", "files", "accuracy_budget", "latency", "target")


def read_manifest(directory: Path) -> dict[str, Any]:
    """Parse and structurally validate ``manifest.json``; ArtifactError (exit 2) when it is unusable."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise ArtifactError.about(directory, "no such artifact folder")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing; {directory} is not an rvc-compile artifact", path=path, problem="missing: not an rvc-compile artifact") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError.about(path, f"unreadable ({exc})") from None
    try:
        manifest = json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError: bad JSON, or an integer past Python's digit limit
        raise ArtifactError.about(path, f"not valid JSON ({first_line(exc, 120, type(exc).__name__)})") from None
    if not isinstance(manifest, dict):
        raise ArtifactError.about(path, "expected a JSON object")
    bundle = manifest.get("kind") == BUNDLE_KIND
    missing = [key for key in (BUNDLE_REQUIRED_KEYS if bundle else REQUIRED_KEYS) if key not in manifest]
    if missing:
        raise ArtifactError.about(path, f"missing keys {', '.join(missing)}")
    if manifest["format_version"] not in READABLE_FORMAT_VERSIONS:
        raise ArtifactError.about(path, f"format version {_short(manifest['format_version'])}; this rvc-compile reads {', '.join(map(str, READABLE_FORMAT_VERSIONS))}")
    files = manifest["files"]
    if not isinstance(files, dict):
        raise ArtifactError.about(path, "'files' must be an object")
    for name, entry in files.items():
        _safe_relative(name, directory)
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("size"), int):
            raise ArtifactError.about(path, f"entry for {_short(name)} needs sha256 and size")
    if bundle:
        return _check_bundle(manifest, path, files)
    for key in ("backend", "model", "signature", "target", "latency", "accuracy_budget"):
        if not isinstance(manifest[key], dict):
            raise ArtifactError.about(path, f"'{key}' must be an object")
    if not isinstance(manifest["golden"], list):
        raise ArtifactError.about(path, "'golden' must be a list")
    backend_files = manifest["backend"].get("files", {})
    if not isinstance(backend_files, dict) or any(not isinstance(name, str) or name not in files for name in backend_files.values()):
        raise ArtifactError.about(path, "backend files are not listed in 'files'")
    for entry in manifest["golden"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or entry["file"] not in files:
            raise ArtifactError.about(path, f"golden case {_short(entry)} is not listed in 'files'")
    return manifest


def _check_bundle(manifest: dict[str, Any], path: Path, files: dict[str, Any]) -> dict[str, Any]:
    """The structure of a pipeline bundle's manifest (``build.bundle``): its golden files are listed."""
    for key in ("components", "settings"):
        if not isinstance(manifest[key], dict):
            raise ArtifactError.about(path, f"'{key}' must be an object")
    if not isinstance(manifest["golden"], list):
        raise ArtifactError.about(path, "'golden' must be a list")
    for entry in manifest["golden"]:
        if not isinstance(entry, dict) or any(not isinstance(entry.get(key), str) or entry[key] not in files for key in ("file", "reference")):
            raise ArtifactError.about(path, f"golden case {_short(entry)} is not listed in 'files'")
    index = manifest.get("index")
    if index is not None and (not isinstance(index, dict) or index.get("file") not in files):
        raise ArtifactError.about(path, "the index file is not listed in 'files'")
    return manifest


def check_integrity(directory: Path) -> list[str]:
    """Every problem found by re-hashing: changed, missing or extra files, an edited manifest."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    problems = []
    digest_path = directory / MANIFEST_DIGEST
    try:
        recorded_text = digest_path.read_text()
    except (OSError, UnicodeDecodeError):
        problems.append(f"{MANIFEST_DIGEST}: missing or unreadable")
    else:
        actual = sha256_file(directory / MANIFEST)
        # The whole line is checked, not just its first word: any changed byte of the file is tampering.
        if recorded_text != f"{actual}  {MANIFEST}\n":
            recorded = recorded_text.split()[0] if recorded_text.split() else ""
            if recorded == actual:
                problems.append(f"{MANIFEST_DIGEST}: edited (not the line '<sha256>  {MANIFEST}' rvc-compile writes)")
            else:
                problems.append(f"{MANIFEST}: contents changed (sha256 differs from {MANIFEST_DIGEST})")
    for name, entry in manifest["files"].items():
        path = directory / name
        if not path.is_file() or path.is_symlink():
            problems.append(f"{name}: missing")
            continue
        size = path.stat().st_size
        if size != entry["size"]:
            problems.append(f"{name}: size {size} bytes, manifest says {entry['size']}")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest")
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).as_posix()
        if path.is_dir() and not path.is_symlink() or relative in (MANIFEST, MANIFEST_DIGEST):
            continue
        if relative not in manifest["files"]:
            problems.append(f"{relative}: not listed in the manifest")
    return problems


def verify_or_raise(directory: Path, *, allow_tampered: bool = False) -> dict[str, Any]:
    """The manifest of an intact artifact; ArtifactError naming the first problem otherwise."""
    manifest = read_manifest(directory)
    if not allow_tampered:
        problems = check_integrity(directory)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ArtifactError(f"{directory}: integrity check failed: {problems[0]}{more}; pass allow_tampered=True to load anyway")
    return manifest


# -- the sections the runtime and verify read -------------------------------------------------------

def check_sections(manifest: dict[str, Any], directory: Path, *, backends: Any = None) -> Any:
    """The typed manifest (``artifact.schema.Manifest``): the types and ranges of what ``runtime``,
    ``verify``, ``bench`` and ``profile`` read, checked once; ArtifactError (exit 2) naming the key
    otherwise. ``read_manifest`` checks the structure every artifact has; this, what a runnable one needs."""
    from .schema import parse_manifest

    return parse_manifest(manifest, directory, backends=backends)


def _short(value: Any) -> str:
    """A bounded description of a manifest value for an error message."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**15:
        return f"an integer of {value.bit_length()} bits"
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else f"a JSON {type(value).__name__}"
    return text if len(text) <= 60 else text[:57] + "..."
