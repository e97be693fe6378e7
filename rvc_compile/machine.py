"""What machine and library versions a build or benchmark ran with (recorded in every report)."""

from __future__ import annotations

import os
import platform
from importlib import metadata

INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8")


def cpu_info() -> dict[str, object]:
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name") and model in ("unknown", "", platform.machine()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "flags": [flag for flag in INTERESTING_FLAGS if flag in flags],
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.machine()}",
    }


def library_versions(*names: str) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
