"""Build stages run through the content-addressed cache.

Each stage's key chains the key of the stage it reads (see docs/CACHE.md), so a rebuild with nothing
changed hits every stage, a backend or precision change reuses capture and the passes, and a new
checkpoint reuses nothing. Producers write into the cache's staging folder; an exception (a failed
check, a failed gate, a kill) leaves no entry behind.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

from ..machine import library_versions

_CODE_FINGERPRINT: str | None = None


def code_fingerprint() -> str:
    """sha256 over rvc_compile's own source: a code change invalidates cached stages even without a release."""
    global _CODE_FINGERPRINT
    if _CODE_FINGERPRINT is None:
        digest = hashlib.sha256()
        package = Path(__file__).resolve().parent.parent
        for path in sorted(package.rglob("*.py")):
            digest.update(path.relative_to(package).as_posix().encode())
            digest.update(path.read_bytes())
        _CODE_FINGERPRINT = digest.hexdigest()
    return _CODE_FINGERPRINT


class StageRunner:
    """Runs stages through a ``cache.Store`` and records which were hits (for the build's output)."""

    def __init__(self, cache_dir: Path | None, *, use_cache: bool, log: Callable[[str], None]):
        from ..cache.store import Store

        self._temporary = None
        if not use_cache:
            self._temporary = tempfile.TemporaryDirectory(prefix="rvc-compile-nocache-")
            cache_dir = Path(self._temporary.name)
        self.store = Store.open(cache_dir, log=log)
        swept = self.store.sweep_scratch()
        if swept:
            log(f"removed the scratch folders of {swept} build(s) that did not finish")
        self.log = log
        self.records: list[dict[str, Any]] = []
        self._entries: list[Any] = []

    @property
    def root(self) -> Path:
        return self.store.root

    def run(
        self,
        stage: str,
        producer: Callable[[Path], Mapping[str, Any] | None],
        *,
        inputs: Mapping[str, str],
        params: Any = None,
        libraries: tuple[str, ...] = (),
        device: Mapping[str, Any] | None = None,
    ) -> Any:
        """The stage's cache entry (its files and the producer's meta), produced on a miss."""
        from ..cache.store import stage_key

        versions = {**library_versions(*libraries), "rvc_compile_code": code_fingerprint()}
        key = stage_key(stage, inputs=inputs, params=params, libraries=versions, device=device)
        entry, hit = self.store.get_or_create(key, producer, stage=stage)
        self._entries.append(entry)  # keeps a shared lock: no prune removes it while the build reads it
        self.records.append({"stage": stage, "key": str(key), "hit": hit})
        self.log(f"{stage}: {'cache hit' if hit else 'built'} ({key[:12]})")
        return entry

    def close(self) -> None:
        for entry in self._entries:
            entry.release()
        self._entries.clear()
        if self._temporary is not None:
            self._temporary.cleanup()

    def __enter__(self) -> "StageRunner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def copy_files(entry: Any, destination: Path, exclude: tuple[str, ...] = ()) -> None:
    """Copy a cache entry's files into ``destination`` (the artifact folder or the build's scratch)."""
    for name in entry.files:
        if name in exclude:
            continue
        target = Path(destination) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(entry.dir / name, target)
