"""The build-cache section of the benchmark suite (``benchmarks/run_all.py`` runs every ``section_*.py``).

Issue 6's targets, measured on the suite's checkpoint with an empty, private cache folder:

- a first build of recipes/cpu-int8-openvino.yaml, then the identical build again: the second's wall
  time against the first's (target: at most 5 %);
- the same recipe with only the precision changed (int8 -> bf16): which stages were cache hits
  (target: capture and the passes are);
- the OpenVINO artifact's cold and warm load times, from its own report (target: warm at most half
  of cold).

Wall times are of the whole ``rvc-compile build`` command (process start, imports, checkpoint hashing
and loading included), as a user sees them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RECIPE = "cpu-int8-openvino.yaml"


def _build(root: Path, checkpoint: Path, out: Path, cache: Path, *overrides: str) -> tuple[float, dict[str, Any]]:
    command = [
        sys.executable, "-m", "rvc_compile.cli", "build", str(root / "recipes" / RECIPE), "--set", f"source.checkpoint={checkpoint}",
        *sum((["--set", o] for o in overrides), []), "--out", str(out), "--cache-dir", str(cache), "--force", "--json",
    ]
    start = time.perf_counter()
    process = subprocess.run(command, capture_output=True, text=True, cwd=root)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError((process.stderr.strip().splitlines() or ["no output"])[-1])
    stdout = process.stdout.strip()
    report = json.loads(stdout[: stdout.rstrip().rfind("\n")])  # the JSON report, then the artifact path
    return wall, report


def run(context: dict[str, Any]) -> dict[str, Any]:
    root, checkpoint, log = Path(context["root"]), Path(context["checkpoint"]), context.get("log", print)
    with tempfile.TemporaryDirectory(prefix="rvc-compile-cache-bench-") as scratch:
        cache, out = Path(scratch) / "cache", Path(scratch) / "artifacts"
        log(f"cache: first build of {RECIPE} into an empty cache")
        first, report = _build(root, checkpoint, out, cache)
        log(f"cache: first build {first:.1f} s; identical rebuild")
        second, again = _build(root, checkpoint, out, cache)
        log(f"cache: second build {second:.1f} s; precision-only change (bf16)")
        changed, other = _build(root, checkpoint, out, cache, "target.precision=bf16", "precision_policy.keep_fp32=[]", "calibration.source=none", "name=voice-cache-bench-bf16")
    latency = report.get("latency", {})
    cold, warm = latency.get("load_time_cold_s"), latency.get("load_time_warm_s")
    result = {
        "recipe": RECIPE,
        "first_build_s": round(first, 2),
        "second_build_s": round(second, 2),
        "second_build_ratio": round(second / first, 4),
        "second_build_hits": [r["stage"] for r in again["cache"] if r["hit"]],
        "second_build_stages": [r["stage"] for r in again["cache"]],
        "precision_change_build_s": round(changed, 2),
        "precision_change_hits": [r["stage"] for r in other["cache"] if r["hit"]],
        "precision_change_misses": [r["stage"] for r in other["cache"] if not r["hit"]],
        "load_cold_s": cold,
        "load_warm_s": warm,
        "warm_load_ratio": round(warm / cold, 4) if cold and warm is not None else None,
    }
    result["markdown"] = markdown(result)
    return result


def markdown(result: dict[str, Any]) -> str:
    hits = ", ".join(result["precision_change_hits"]) or "none"
    misses = ", ".join(result["precision_change_misses"]) or "none"
    lines = [
        f"Recipe `{result['recipe']}` on the suite's checkpoint, with an empty private cache folder; wall time of the",
        "whole `rvc-compile build` command.",
        "",
        "| measurement | value | target |",
        "|---|---|---|",
        f"| first build | {result['first_build_s']:.1f} s | |",
        f"| identical second build | {result['second_build_s']:.1f} s = {100 * result['second_build_ratio']:.1f} % of the first "
        f"({len(result['second_build_hits'])} of {len(result['second_build_stages'])} stages from the cache) | at most 5 % |",
        f"| precision changed (int8 -> bf16) | {result['precision_change_build_s']:.1f} s; cache hits: {hits}; rebuilt: {misses} | capture and passes are hits |",
    ]
    if result["warm_load_ratio"] is not None:
        lines.append(
            f"| OpenVINO artifact load | cold {result['load_cold_s']:.3f} s, warm {result['load_warm_s']:.3f} s "
            f"(= {100 * result['warm_load_ratio']:.0f} % of cold) | warm at most half of cold |"
        )
    return "\n".join(lines)


def render(result: dict[str, Any]) -> str:
    return result["markdown"]
