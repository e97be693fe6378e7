"""``rvc-compile verify``: integrity, then accuracy on the golden set, then latency goals.

Exit codes: 0 every gate passed, 1 a gate failed (integrity, accuracy or latency), 2 the artifact is
unusable (missing, unreadable manifest, backend cannot load it). A failure is never a warning.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..artifact.manifest import check_integrity, check_sections, read_manifest
from ..backends import BACKENDS
from .evaluate import evaluate_artifact


def verify_artifact(path: Path, *, skip_latency: bool = False, threads: int | None = None) -> dict[str, Any]:
    path = Path(path)
    manifest = read_manifest(path)  # ArtifactError (exit 2) when unusable
    result: dict[str, Any] = {"artifact": str(path), "name": manifest["name"], "version": manifest["version"]}
    problems = check_integrity(path)
    result["integrity"] = {"problems": problems, "passed": not problems, "files": len(manifest["files"])}
    if problems:
        result["passed"] = False
        return result
    check_sections(manifest, path, backends=BACKENDS)  # ArtifactError (exit 2): intact hashes over values verify cannot use
    from ..machine import machine_isa

    isa = manifest.get("isa") or {}
    here = machine_isa()
    result["isa"] = {"built_for": isa.get("target"), "verified_on": isa.get("verified_on"), "this_machine": here.name,
                     "int8_weight_bits": isa.get("int8_weight_bits")}
    evaluation, _ = evaluate_artifact(path, manifest, check_latency=not skip_latency, threads=threads)
    result.update(evaluation)
    result["passed"] = evaluation["accuracy"]["passed"] and (skip_latency or evaluation["latency"]["passed"])
    return result


# metric -> (heading, unit, width) of verify's accuracy table; metrics of every component's compare().
_COLUMNS = {
    "snr_db": ("SNR", " dB", 12), "log_mel_db": ("log-mel", " dB", 14), "mrstft": ("MR-STFT", "", 12),
    "f0_cents": ("F0 error", " ct", 14), "min_cosine": ("min cosine", "", 12), "relative_error": ("rel. error", "", 12),
    "voicing_mismatch": ("voicing", "", 10), "max_abs_error": ("max abs", "", 12),
}


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if math.isinf(value):
            return "inf" + unit
        return f"{value:.4g}{unit}"
    return f"{value}{unit}"


def format_result(result: dict[str, Any]) -> str:
    lines = [f"artifact  {result['artifact']}  ({result['name']} {result['version']})"]
    integrity = result["integrity"]
    if integrity["passed"]:
        lines.append(f"integrity PASS  ({integrity['files']} files, sha256 match)")
    else:
        lines.append(f"integrity FAIL  ({len(integrity['problems'])} problems)")
        lines += [f"  - {problem}" for problem in integrity["problems"]]
    isa = result.get("isa")
    if isa:
        bits = f", int8 weights {isa['int8_weight_bits']}-bit" if isa.get("int8_weight_bits") else ""
        lines.append(f"cpu       built for {isa['built_for'] or 'an unrecorded class'} (verified on {isa['verified_on'] or '?'}{bits}); this machine: {isa['this_machine']}")
    accuracy = result.get("accuracy")
    if accuracy:
        lines.append(f"accuracy  {'PASS' if accuracy['passed'] else 'FAIL'}  (reference: {accuracy['reference']})")
        cases = accuracy["cases"]
        columns = [key for key in (cases[0] if cases else {}) if key in _COLUMNS]  # the component's metrics, its order
        lines.append(f"  {'case':<14}" + "".join(f"{_COLUMNS[key][0]:>{_COLUMNS[key][2]}}" for key in columns))
        for case in cases:
            cells = ["exact" if key == "snr_db" and case[key] is None else _fmt(case[key], _COLUMNS[key][1]) for key in columns]
            lines.append(f"  {case['name']:<14}" + "".join(f"{cell:>{_COLUMNS[key][2]}}" for key, cell in zip(columns, cells)))
        budget = ", ".join(f"{k}={v}" for k, v in accuracy["budget"].items() if v is not None)
        lines.append(f"  budget: {budget}")
        lines += [f"  - {failure}" for failure in accuracy["failures"]]
    latency = result.get("latency")
    if latency:
        lines.append(f"latency   {'PASS' if latency['passed'] else 'FAIL'}  ({latency['threads']} threads, load {_fmt(latency['load_time_s'], ' s')}{', warm ' + _fmt(latency['load_time_warm_s'], ' s') if latency.get('load_time_warm_s') is not None else ''}, peak {_fmt(latency['peak_memory_mb'], ' MB')})")
        for case in latency["cases"]:
            lines.append(
                f"  {case['seconds']:>6.2f} s audio: p50 {_fmt(case['p50_ms'], ' ms')}, p90 {_fmt(case['p90_ms'], ' ms')}, "
                f"p99 {_fmt(case['p99_ms'], ' ms')}, RTF {_fmt(case['rtf_p50'])}"
            )
        from ..artifact.report import describe_goals

        if latency.get("goals"):
            lines.append(f"  goals: {describe_goals(latency['goals'])}")
        lines += [f"  - {failure}" for failure in latency["failures"]]
    lines.append("PASS" if result["passed"] else "FAIL")
    return "\n".join(lines)
