"""Ship artifacts as tarballs: ``pack`` an intact artifact, ``unpack`` one back with every hash checked.

An archive holds ``<name>/<version>/manifest.json``, ``manifest.sha256`` and every file the manifest
lists, nothing else: regular files with fixed owner, mode and time, in a fixed order, gzip without a
timestamp, so packing the same artifact twice gives the same bytes (and the same sha256 to publish).

``unpack`` trusts nothing in the archive: it refuses absolute names, ``..``, links, devices, duplicate
names and archives that expand past a size cap before writing anything outside a temporary folder beside
the target; it re-hashes every file against the manifest there, and only then renames the version into
place. Every refusal is one ``ArtifactError`` line naming the archive and the member, and leaves nothing
behind. Standard library only.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import secrets
import shutil
import tarfile
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from .manifest import MANIFEST, MANIFEST_DIGEST, STALE_AFTER_S, check_integrity, check_name, check_version, read_manifest
from ..errors import ArtifactError
from ..hashing import sha256_file

DEFAULT_MAX_BYTES = 8 << 30  # a full-size fp32 artifact is a few hundred MB; this stops a decompression bomb
DEFAULT_MAX_MEMBERS = 10_000
_UNPACK_PREFIX = ".tmp-unpack-"
_OLD_PREFIX = ".old-"


@dataclasses.dataclass
class Packed:
    path: Path
    name: str
    version: str
    files: int  # members in the archive
    size: int  # bytes of the archive
    sha256: str  # of the archive


class _HashingReader:
    """A file wrapper that hashes what tarfile reads from it."""

    def __init__(self, handle: BinaryIO):
        self.handle = handle
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        block = self.handle.read(size)
        self.digest.update(block)
        return block


def _created_epoch(manifest: dict[str, Any]) -> int:
    """The artifact's creation time (UTC) as the mtime of every member: fixed for a given artifact."""
    try:
        return int(datetime.strptime(str(manifest.get("created")), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp())
    except ValueError:
        return 0


def pack(artifact_dir: Path, out_file: Path) -> Packed:
    """Write ``out_file`` (.tar.gz) holding the artifact at ``artifact_dir``; refuses a tampered artifact."""
    artifact_dir, out_file = Path(artifact_dir), Path(out_file)
    manifest = read_manifest(artifact_dir)
    problems = check_integrity(artifact_dir)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ArtifactError(f"{artifact_dir}: refusing to pack a tampered artifact: {problems[0]}{more}")
    name, version = check_name(manifest["name"]), check_version(manifest["version"])
    if out_file.resolve().is_relative_to(artifact_dir.resolve()):
        raise ArtifactError(f"{out_file}: the archive cannot be written inside the artifact it packs ({artifact_dir})")
    members = [MANIFEST, MANIFEST_DIGEST] + sorted(manifest["files"])
    mtime = _created_epoch(manifest)
    temporary = out_file.parent / f".{out_file.name}.tmp-{secrets.token_hex(4)}"
    try:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as raw:
            # mtime=0 and no file name in the gzip header: the same artifact always packs to the same bytes.
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed:
                with tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    for relative in members:
                        source = artifact_dir / relative
                        info = tarfile.TarInfo(f"{name}/{version}/{relative}")
                        info.size = source.stat().st_size
                        info.mtime, info.mode, info.type = mtime, 0o644, tarfile.REGTYPE
                        info.uid = info.gid = 0
                        info.uname = info.gname = ""
                        with open(source, "rb") as handle:
                            reader = _HashingReader(handle)
                            tar.addfile(info, reader)  # type: ignore[arg-type]
                        expected = manifest["files"].get(relative)
                        if expected is not None and reader.digest.hexdigest() != expected["sha256"]:
                            raise ArtifactError(f"{source}: changed while it was being packed")
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temporary, out_file)
    except ArtifactError:
        temporary.unlink(missing_ok=True)
        raise
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ArtifactError(f"{out_file}: cannot write the archive ({exc.strerror or exc})") from None
    return Packed(path=out_file, name=name, version=version, files=len(members), size=out_file.stat().st_size, sha256=sha256_file(out_file))


def _member_kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"a symbolic link to {member.linkname!r}"
    if member.islnk():
        return f"a hard link to {member.linkname!r}"
    if member.ischr() or member.isblk():
        return "a device file"
    if member.isfifo():
        return "a FIFO"
    if member.issparse():
        return "a sparse file"
    return f"of tar type {member.type!r}"


def _member_parts(archive: Path, name: Any) -> list[str]:
    if not isinstance(name, str) or not name or "\\" in name or "\x00" in name:
        raise ArtifactError(f"{archive}: member {name!r}: invalid name")
    posix = PurePosixPath(name)
    if posix.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise ArtifactError(f"{archive}: member {name!r}: absolute path; refusing to write outside the target folder")
    if ".." in posix.parts:
        raise ArtifactError(f"{archive}: member {name!r}: contains '..'; refusing to write outside the target folder")
    if posix.as_posix() != name.rstrip("/"):
        raise ArtifactError(f"{archive}: member {name!r}: not a normalized path")
    return list(posix.parts)


def _extract(archive: Path, staging: Path, final_parent: Path, *, force: bool, max_bytes: int, max_members: int) -> tuple[str, str]:
    """Stream the archive's members into ``staging/<name>/<version>``; return (name, version)."""
    prefix: tuple[str, str] | None = None
    seen_files: set[str] = set()
    seen_dirs: set[str] = set()
    total = count = 0
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                parts = _member_parts(archive, member.name)
                if member.isdir():
                    continue  # folders are created for the files in them, never from the archive's entries
                if not member.isreg() or member.issparse():
                    raise ArtifactError(f"{archive}: member {member.name!r} is {_member_kind(member)}; archives hold regular files only")
                if len(parts) < 3:
                    raise ArtifactError(f"{archive}: member {member.name!r}: expected <name>/<version>/<file>")
                head = (parts[0], parts[1])
                if prefix is None:
                    try:
                        check_name(head[0])
                        check_version(head[1])
                    except ArtifactError as exc:
                        raise ArtifactError(f"{archive}: member {member.name!r}: {exc}") from None
                    prefix = head
                    final = final_parent / head[0] / head[1]
                    if final.exists() and not force:
                        raise ArtifactError(f"{archive}: {final} already exists; remove it or pass --force")
                elif head != prefix:
                    raise ArtifactError(f"{archive}: member {member.name!r} is outside {prefix[0]}/{prefix[1]}/; one archive holds one artifact version")
                relative = "/".join(parts[2:])
                folded = relative.casefold()  # case-insensitive filesystems would merge these
                folders = {"/".join(parts[2:i]).casefold() for i in range(3, len(parts))}
                if folded in seen_files or folded in seen_dirs or folders & seen_files:
                    raise ArtifactError(f"{archive}: member {member.name!r} appears twice (or clashes with a folder)")
                seen_files.add(folded)
                seen_dirs |= folders
                count += 1
                total += member.size
                if count > max_members:
                    raise ArtifactError(f"{archive}: more than {max_members} members; refusing")
                if total > max_bytes:
                    raise ArtifactError(f"{archive}: member {member.name!r}: the archive expands beyond {max_bytes} bytes; refusing")
                target = staging.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None
                with open(target, "xb") as sink:  # "x": never follow or overwrite anything
                    shutil.copyfileobj(source, sink, 1 << 20)
                os.chmod(target, 0o644)
    except ArtifactError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ArtifactError(f"{archive}: not a readable .tar.gz archive ({str(exc)[:120] or type(exc).__name__})") from None
    if prefix is None:
        raise ArtifactError(f"{archive}: holds no artifact files")
    return prefix


def _remove_stale_staging(out_dir: Path) -> None:
    """Remove temporary folders of unpacks that were killed (only ours, and only old ones: the target may
    be any folder of the user's, and another unpack may be running into it right now)."""
    now = time.time()
    for path in out_dir.glob(f"{_UNPACK_PREFIX}*"):
        try:
            if path.is_dir() and not path.is_symlink() and now - path.stat().st_mtime > STALE_AFTER_S:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue


def unpack(archive: Path, out_dir: Path, *, force: bool = False, max_bytes: int = DEFAULT_MAX_BYTES, max_members: int = DEFAULT_MAX_MEMBERS) -> Path:
    """Extract the artifact in ``archive`` to ``out_dir/<name>/<version>`` after checking every hash.

    An existing version is refused unless ``force`` (then it is swapped atomically). Returns the path.
    """
    archive, out_dir = Path(archive), Path(out_dir)
    if not archive.is_file():
        raise ArtifactError(f"{archive}: no such archive")
    created: list[Path] = []  # folders this call made, removed again on failure when empty
    for folder in reversed([out_dir, *out_dir.parents]):
        if not folder.exists():
            created.append(folder)
    staging = out_dir / f"{_UNPACK_PREFIX}{secrets.token_hex(4)}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(out_dir)
        staging.mkdir()
        name, version = _extract(archive, staging, out_dir, force=force, max_bytes=max_bytes, max_members=max_members)
        extracted = staging / name / version
        where = f"{archive}: member {name}/{version}/"
        try:
            manifest = read_manifest(extracted)
        except ArtifactError as exc:
            raise ArtifactError(f"{where}{MANIFEST}: {exc.problem or exc}") from None  # the staging path means nothing to the user
        if (manifest["name"], manifest["version"]) != (name, version):
            raise ArtifactError(f"{where}{MANIFEST}: describes {manifest['name']} {manifest['version']}, not the folder it is in")
        problems = check_integrity(extracted)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ArtifactError(f"{where}{problems[0]}{more}; nothing was extracted")
        parent = out_dir / name
        if not parent.exists():
            created.append(parent)
        parent.mkdir(exist_ok=True)
        final = parent / version
        if final.exists():
            if not force:
                raise ArtifactError(f"{archive}: {final} already exists; remove it or pass --force")
            old = parent / f"{_OLD_PREFIX}{version}-{secrets.token_hex(4)}"
            os.rename(final, old)
            os.rename(extracted, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(extracted, final)
        created.clear()
        return final
    except OSError as exc:
        raise ArtifactError(f"{archive}: cannot unpack into {out_dir} ({exc.strerror or exc}: {exc.filename or ''})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(created):
            try:
                folder.rmdir()  # only when empty: never anything that was there before
            except OSError:
                break
