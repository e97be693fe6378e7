"""Where an artifact runs: this CPU's ISA class against the one the artifact was verified for.

An artifact records the ISA class it was built and verified for (``manifest.isa``). On another class the
same graph runs other kernels: fp32 and bf16 round differently, and int8 with 8-bit weights saturates
on CPUs without VNNI (``machine.py``). So the runtime:

- refuses an artifact whose numerics cannot be right here (8-bit int8 weights, no VNNI);
- on any other class, checks the golden cases once (cached per machine and artifact), or warns, as the
  caller chooses (``runtime.load(on_other_cpu=...)``).

Standard library and numpy only.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ArtifactError
from ..machine import IsaClass, isa_class, machine_isa

ON_OTHER_CPU = ("check", "warn", "trust")


@dataclass
class Placement:
    machine: IsaClass
    verified_on: str | None  # None: an artifact from before the isa section (format 2)
    other: bool  # this machine is of another class than the artifact was verified on


def placement(path: Path, manifest: Any) -> Placement:
    """How this machine relates to the artifact's verified class (``manifest``: an ``artifact.schema.Manifest``);
    ArtifactError if it cannot be right here."""
    here = machine_isa()
    isa = manifest.isa
    verified_on = isa.verified_on if isa else None
    target = isa_class(isa.target if isa else None)
    precision = manifest.get("precision", {}).get("precision") if isinstance(manifest.get("precision"), dict) else None
    # Format-2 artifacts have no isa section; their int8 scheme was 8-bit weights throughout.
    weight_bits = (isa.int8_weight_bits if isa else None) or (8 if precision == "int8" else None)
    if precision == "int8" and weight_bits == 8 and not here.vnni:
        built_for = target.name if target is not None else "a CPU with VNNI"
        raise ArtifactError(
            f"{path}: int8 artifact built for {built_for} (8-bit weights); this {here.name} CPU has no VNNI, and its "
            "int8 kernels saturate on such weights (wrong audio); rebuild it with target.cpu: portable (or auto on this machine)"
        )
    other = verified_on != here.name and (target is None or target.name != here.name)
    return Placement(machine=here, verified_on=verified_on, other=other)


def check_on_this_cpu(voice: Any, where: Placement, mode: str) -> None:
    """Run the golden cases on this CPU once (mode "check"), or warn (mode "warn"), for an artifact verified
    on another ISA class. A failed check refuses the artifact (ArtifactError)."""
    verified = where.verified_on or "an unrecorded CPU class"
    if mode == "trust":
        return
    if mode == "warn":
        warnings.warn(
            f"{voice.path}: verified on {verified}, running on a {where.machine.name} CPU without a check "
            "(load with on_other_cpu='check' to run its golden cases here)", RuntimeWarning, stacklevel=3,
        )
        return
    record_path = _record_path(voice, where.machine)
    record = _read_record(record_path)
    if record is None:
        from ..verify.evaluate import golden_accuracy

        accuracy = golden_accuracy(voice, voice.path, voice.manifest, dict(voice.manifest.accuracy_budget))
        record = {"passed": accuracy["passed"], "failures": accuracy["failures"], "machine": where.machine.name, "verified_on": verified}
        _write_record(record_path, record)
    voice.cpu_notes.append(f"verified on {verified}; golden cases {'pass' if record['passed'] else 'fail'} on this {where.machine.name} CPU")
    if not record["passed"]:
        raise ArtifactError(
            f"{voice.path}: verified on {verified}, but on this {where.machine.name} CPU its golden cases fail "
            f"({record['failures'][0] if record['failures'] else 'accuracy budget'}); rebuild it here (target.cpu: auto)"
        )


def _record_path(voice: Any, machine: IsaClass) -> Path | None:
    """One record per (artifact contents, ISA class, CPU model, backend library): what the golden cases
    gave here. The contents are the files as they are now (an artifact loaded with allow_tampered may
    differ from its manifest), so a changed file is checked again."""
    from ..artifact.manifest import file_table
    from ..cache.store import Store
    from ..machine import cpu_info

    try:
        manifest_bytes = (Path(voice.path) / "manifest.json").read_bytes()
        files = json.dumps(file_table(Path(voice.path)), sort_keys=True).encode()
    except OSError:
        return None
    library = voice.manifest["backend"].get("library_version", "")
    parts = [manifest_bytes, files, machine.name.encode(), str(cpu_info()["cpu"]).encode(), str(library).encode()]
    key = hashlib.sha256(b"\0".join(parts)).hexdigest()
    try:  # an area of the build cache: ``rvc-compile cache ls/du/prune/clear`` see it
        return Store.open(None).area("cpu-checks") / f"{key}.json"
    except Exception:  # no usable cache folder: check every time
        return None


def _read_record(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("passed"), bool) or not isinstance(record.get("failures"), list):
        return None  # damaged: check again
    return record


def _write_record(path: Path | None, record: dict[str, Any]) -> None:
    """Atomically (a reader never sees half a record); a folder we cannot write only costs a re-check."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(record))
        temporary.replace(path)
    except OSError:
        pass
