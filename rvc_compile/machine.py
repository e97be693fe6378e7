"""What machine and library versions a build or benchmark ran with (recorded in every report), and the
CPU's ISA class: the one place that decides what a CPU runs natively.

ISA classes (x86-64), each a set of features that changes what our artifacts compute or how fast:

    avx2         AVX2 + FMA: every x86-64 CPU we support ("portable")
    avx2-vnni    AVX-VNNI on AVX2 (Alder Lake and later client cores)
    avx512       AVX-512 F/BW/VL/DQ without VNNI (Skylake-SP)
    avx512-vnni  AVX-512 VNNI (Cascade Lake, Ice Lake)
    avx512-bf16  AVX-512 VNNI and BF16 (Cooper Lake, Zen 4/5)
    amx          AMX-BF16/INT8 with AVX-512 BF16 (Sapphire Rapids and later)

Without VNNI, int8 dot products go through ``vpmaddubsw``, which saturates its 16-bit sums of two u8 x s8
products: int8 kernels of oneDNN (OpenVINO) and MLAS (ONNX Runtime) then lose accuracy unless weights use
7 bits (NNCF's overflow fix, ONNX Runtime's reduce_range). Without BF16, bf16 is emulated (slow).

``ONEDNN_MAX_CPU_ISA`` (oneDNN's own dispatch cap, which OpenVINO and torch obey) caps the class this
module reports, so a build or a test can run "as on an older CPU" on a newer one. ONNX Runtime's MLAS
kernels ignore it.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from importlib import metadata

INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class IsaClass:
    name: str
    features: frozenset[str]  # of: avx2, avx512, vnni, bf16, amx
    onednn_cap: str  # the ONEDNN_MAX_CPU_ISA value that makes oneDNN dispatch as on this class

    @property
    def vnni(self) -> bool:
        return "vnni" in self.features

    @property
    def native_bf16(self) -> bool:
        return "bf16" in self.features

    def runs_as(self, other: "IsaClass") -> bool:
        """True when this CPU has every feature of ``other`` (it can run, and emulate, ``other``'s code)."""
        return other.features <= self.features


ISA_CLASSES: dict[str, IsaClass] = {
    cls.name: cls
    for cls in (
        IsaClass("avx2", frozenset({"avx2"}), "AVX2"),
        IsaClass("avx2-vnni", frozenset({"avx2", "vnni"}), "AVX2_VNNI"),
        IsaClass("avx512", frozenset({"avx2", "avx512"}), "AVX512_CORE"),
        IsaClass("avx512-vnni", frozenset({"avx2", "avx512", "vnni"}), "AVX512_CORE_VNNI"),
        IsaClass("avx512-bf16", frozenset({"avx2", "avx512", "vnni", "bf16"}), "AVX512_CORE_BF16"),
        IsaClass("amx", frozenset({"avx2", "avx512", "vnni", "bf16", "amx"}), "AVX512_CORE_AMX"),
    )
}
# Below AVX2 (or not x86-64): nothing of ours is tuned for it; treated as having no feature.
BASELINE = IsaClass("baseline", frozenset(), "SSE41")
PORTABLE = "avx2"  # target.cpu: portable -> int8 that is right on every x86-64 CPU with AVX2
TARGET_CPU_CHOICES = ("auto", "portable", *ISA_CLASSES)
# oneDNN's cap names (as ONEDNN_MAX_CPU_ISA takes them) -> the features they leave on.
_ONEDNN_CAPS = {
    "SSE41": frozenset(), "AVX": frozenset(), "AVX2": frozenset({"avx2"}), "AVX2_VNNI": frozenset({"avx2", "vnni"}),
    "AVX2_VNNI_2": frozenset({"avx2", "vnni"}), "AVX512_CORE": frozenset({"avx2", "avx512"}),
    "AVX512_CORE_VNNI": frozenset({"avx2", "avx512", "vnni"}), "AVX512_CORE_BF16": frozenset({"avx2", "avx512", "vnni", "bf16"}),
    "AVX512_CORE_FP16": frozenset({"avx2", "avx512", "vnni", "bf16"}),
}


def _read_cpuinfo() -> tuple[str, set[str]]:
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
    return model, flags


def features_of(flags: set[str]) -> frozenset[str]:
    """The ISA features (avx2, avx512, vnni, bf16, amx) a set of /proc/cpuinfo flags gives."""
    features = set()
    if {"avx2", "fma"} <= flags:
        features.add("avx2")
        if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags or {"avx512f", "avx512bw"} <= flags:
            features.add("avx512")
        if "avx512_vnni" in flags and "avx512" in features or "avx_vnni" in flags:
            features.add("vnni")
        if "avx512_bf16" in flags and "avx512" in features:
            features.add("bf16")
        if {"amx_bf16", "amx_int8", "amx_tile"} <= flags and "bf16" in features:
            features.add("amx")
    return frozenset(features)


def class_of(features: frozenset[str]) -> IsaClass:
    """The richest ISA class whose features are all in ``features``."""
    best = BASELINE
    for cls in ISA_CLASSES.values():
        if cls.features <= features and len(cls.features) > len(best.features):
            best = cls
    return best


def onednn_cap() -> str | None:
    value = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return value.strip().upper() if value and value.strip().upper() in _ONEDNN_CAPS else None


def machine_isa() -> IsaClass:
    """This machine's ISA class, capped by ``ONEDNN_MAX_CPU_ISA`` when that is set."""
    features = features_of(_read_cpuinfo()[1])
    cap = onednn_cap()
    if cap is not None:
        features = features & _ONEDNN_CAPS[cap]
    return class_of(features)


def resolve_target_cpu(value: str) -> IsaClass:
    """``target.cpu`` -> the ISA class an artifact is built for (auto: this machine; portable: avx2)."""
    if value == "auto":
        return machine_isa()
    if value == "portable":
        return ISA_CLASSES[PORTABLE]
    return ISA_CLASSES[value]


def isa_class(name: str | None) -> IsaClass | None:
    if name == BASELINE.name:
        return BASELINE
    return ISA_CLASSES.get(name or "")


def emulation_env(target: IsaClass, machine: IsaClass | None = None) -> dict[str, str]:
    """Environment that makes oneDNN (OpenVINO, torch) dispatch as on ``target`` on this machine ({} when
    the machine is of that class already)."""
    machine = machine or machine_isa()
    return {} if machine.name == target.name else {"ONEDNN_MAX_CPU_ISA": target.onednn_cap}


def int8_weight_bits(target: IsaClass) -> int:
    """8-bit weights need VNNI; without it 7-bit weights keep u8 x s8 pair sums inside 16 bits."""
    return 8 if target.vnni else 7


def cpu_info() -> dict[str, object]:
    model, flags = _read_cpuinfo()
    isa = machine_isa()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "flags": [flag for flag in INTERESTING_FLAGS if flag in flags],
        "isa_class": isa.name,
        **({"onednn_max_cpu_isa": onednn_cap()} if onednn_cap() else {}),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.machine()}",
    }


def peak_memory_mb() -> float:
    """This process's peak resident memory so far, in MB (MiB).

    Linux's ``VmHWM`` belongs to the process's own address space, which exec starts afresh: a worker
    process (bench, the build's evaluation) reports its own peak. ``ru_maxrss``, the fallback elsewhere,
    would not do on Linux: it is carried across fork and exec, so a child would start at its parent's
    peak (the parent may hold torch and a whole model). It is KiB on Linux, bytes on macOS.
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource  # POSIX only; imported here so that machine stays importable everywhere

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def library_versions(*names: str) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
