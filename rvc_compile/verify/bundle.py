"""``rvc-compile verify`` of a pipeline bundle: the bundle's integrity (every component file is one of
its files), each component verified as an artifact of its own, then the whole pipeline run on the
golden speech and compared with the eager fp32 pipeline's output stored at build time.

Exit codes as for any artifact: 0 pass, 1 a gate failed, 2 unusable.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact.manifest import check_integrity, read_manifest
from ..errors import ArtifactError


def verify_bundle(path: Path, *, skip_latency: bool = False, threads: int | None = None) -> dict[str, Any]:
    from ..build.bundle import BUDGET_KEYS
    from ..runtime.pipeline import component_paths, load_pipeline
    from .gates import verify_artifact
    from .metrics import check_budget, compare

    path = Path(path)
    manifest = read_manifest(path)
    result: dict[str, Any] = {"artifact": str(path), "name": manifest["name"], "version": manifest["version"], "kind": "pipeline"}
    problems = check_integrity(path)
    result["integrity"] = {"problems": problems, "passed": not problems, "files": len(manifest["files"])}
    if problems:
        result["passed"] = False
        return result
    components = {}
    for role, folder in component_paths(path, manifest).items():
        components[role] = verify_artifact(folder, skip_latency=skip_latency, threads=threads)
    result["components"] = components
    pipeline = load_pipeline(path, threads=threads, manifest=manifest)
    budget = dict(manifest.get("accuracy_budget") or {})
    cases, failures = [], []
    compute_s = audio_s = 0.0
    for entry in manifest["golden"]:
        audio = _load_array(path, entry["file"])
        reference = _load_array(path, entry["reference"])
        started = time.perf_counter()
        candidate = pipeline.convert(audio, 16000)
        compute_s += time.perf_counter() - started
        audio_s += audio.shape[0] / 16000
        metrics = compare(reference, candidate, pipeline.sample_rate)
        case_failures = check_budget(metrics, budget, keys=BUDGET_KEYS)
        failures += [f"{entry['name']}: {failure}" for failure in case_failures]
        cases.append({"name": entry["name"], "source": entry.get("source"), "seconds": round(audio.shape[0] / 16000, 3),
                      "log_mel_db": metrics["log_mel_db"], "f0_cents": metrics["f0_cents"], "snr_db": metrics["snr_db"],
                      "at_build": (entry.get("metrics") or {}).get("log_mel_db")})
    result["pipeline"] = {
        "passed": not failures, "cases": cases, "budget": budget, "failures": failures,
        "settings": manifest["settings"], "rtf": round(compute_s / audio_s, 4) if audio_s else None,
        "reference": "eager fp32 pipeline (stored at build time), zero noise",
    }
    result["passed"] = all(component["passed"] for component in components.values()) and not failures
    return result


def _load_array(path: Path, name: str) -> np.ndarray:
    try:
        array = np.load(path / name, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: {name}: unreadable golden array ({exc})") from None
    return np.asarray(array, dtype=np.float32).reshape(-1)


def format_bundle_result(result: dict[str, Any]) -> str:
    from .gates import _fmt, format_result

    lines = [f"bundle    {result['artifact']}  ({result['name']} {result['version']})"]
    integrity = result["integrity"]
    if integrity["passed"]:
        lines.append(f"integrity PASS  ({integrity['files']} files, sha256 match, components included)")
    else:
        lines.append(f"integrity FAIL  ({len(integrity['problems'])} problems)")
        lines += [f"  - {problem}" for problem in integrity["problems"]]
    for role, component in result.get("components", {}).items():
        lines.append(f"--- component {role}")
        lines += ["  " + line for line in format_result(component).splitlines()]
    pipeline = result.get("pipeline")
    if pipeline:
        lines.append(f"pipeline  {'PASS' if pipeline['passed'] else 'FAIL'}  (reference: {pipeline['reference']}; RTF {_fmt(pipeline['rtf'])})")
        lines.append(f"  {'case':<8}{'source':<40}{'log-mel':>14}{'F0 error':>14}")
        for case in pipeline["cases"]:
            lines.append(f"  {case['name']:<8}{str(case['source'])[:38]:<40}{_fmt(case['log_mel_db'], ' dB'):>14}{_fmt(case['f0_cents'], ' ct'):>14}")
        lines.append("  budget: " + ", ".join(f"{k}={v}" for k, v in pipeline["budget"].items() if v is not None))
        lines += [f"  - {failure}" for failure in pipeline["failures"]]
    lines.append("PASS" if result["passed"] else "FAIL")
    return "\n".join(lines)
