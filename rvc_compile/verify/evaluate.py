"""Accuracy and latency of a loaded artifact: shared by the build (for its report) and ``verify``.

numpy only, so verify and the runtime never need torch.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any


from ..artifact.golden import load_case
from ..machine import peak_memory_mb
from .metrics import check_budget, latency_stats, smallest_passing_budget


def golden_accuracy(voice: Any, artifact_dir: Path, manifest: dict[str, Any], budget: dict[str, Any]) -> dict[str, Any]:
    """Run every golden case through ``voice`` and compare with its stored fp32 reference output."""
    cases = []
    for entry in voice.manifest.golden:
        arrays = load_case(Path(artifact_dir) / entry.file)
        candidate = voice.run_case(arrays)
        metrics = voice.compare(arrays["reference"].reshape(-1), candidate)
        cases.append({"name": entry.name, "frames": entry.frames, "seconds": entry.seconds, **metrics})
    keys = voice.component.BUDGET_KEYS
    failures = [f"{case['name']}: {failure}" for case in cases for failure in check_budget(case, budget, keys=keys)]
    return {
        "reference": "fp32 PyTorch eager, identical inputs and noise",
        "budget": budget,
        "cases": cases,
        "smallest_passing_budget": smallest_passing_budget(cases, keys=keys),
        "failures": failures,
        "passed": not failures,
    }


def measure_latency(
    voice: Any, seconds_list: list[float], *, repeat: int, warmup: int, goals: list[dict[str, float]], threads: int
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Time ``voice.run_case`` (the runtime's whole path) at each length after warm-up runs; check the goals.

    Inputs: the component's example inputs at seed 7 with noise ``seed:1`` (``timing_inputs``)."""
    cases, samples = [], {}
    for seconds in seconds_list:
        frames = voice.frames_for(seconds)
        arrays = timing_inputs(voice, frames)
        for _ in range(warmup):
            voice.run_case(arrays)
        times = []
        gc.collect()
        for _ in range(repeat):
            start = time.perf_counter()
            voice.run_case(arrays)
            times.append(time.perf_counter() - start)
        audio_seconds = voice.output_seconds(frames) if hasattr(voice, "output_seconds") else frames / voice.frames_per_second
        cases.append({"seconds": audio_seconds, "frames": frames, **latency_stats(times, audio_seconds)})
        samples[f"{audio_seconds:g} s"] = times
    goal_results, failures = check_goals(cases, goals)
    result = {
        "threads": threads,
        "cases": cases,
        "load_time_s": getattr(voice, "load_time_s", None),
        "peak_memory_mb": peak_memory_mb(),
        "goals": goal_results,
        "failures": failures,
        "passed": not failures,
    }
    return result, samples


def timing_inputs(voice: Any, frames: int) -> dict[str, Any]:
    """What latency is measured on: the same inputs in the build (for the eager reference) and verify."""
    return voice.example_inputs(frames, seed=7, noise="seed:1")


def check_goals(
    cases: list[dict[str, Any]], goals: list[dict[str, Any]], eager_p50_ms: dict[float, float] | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Each goal with what was measured and whether it was met; the failures of the enforced goals only.

    A speed-up goal compares with the fp32 eager reference timed in the same run (``eager_p50_ms`` by
    audio seconds); without that timing (``verify`` runs without torch) it is reported as not measured."""
    results, failures = [], []
    for goal in goals:
        result: dict[str, Any] = {**goal, "enforce": bool(goal.get("enforce", False)), "missed": []}
        matching = [c for c in cases if abs(c["seconds"] - goal["seconds"]) < 0.02]
        if not matching:
            result["missed"].append(f"no latency measurement at {goal['seconds']} s for its goal")
        else:
            case = matching[0]
            result["rtf_p50"] = case["rtf_p50"]
            if goal.get("max_rtf") is not None and case["rtf_p50"] > goal["max_rtf"]:
                result["missed"].append(f"{goal['seconds']} s: real-time factor {case['rtf_p50']:.3f} > goal {goal['max_rtf']}")
            if goal.get("min_speedup_vs_eager") is not None:
                eager = (eager_p50_ms or {}).get(round(case["seconds"], 3))
                if eager is None:
                    result["speedup_vs_eager"] = None  # not measured here
                else:
                    result["eager_p50_ms"] = eager
                    result["speedup_vs_eager"] = eager / case["p50_ms"]
                    if result["speedup_vs_eager"] < goal["min_speedup_vs_eager"]:
                        result["missed"].append(
                            f"{goal['seconds']} s: {result['speedup_vs_eager']:.2f}x the fp32 eager reference < goal {goal['min_speedup_vs_eager']}x"
                        )
        unmeasured = result.get("speedup_vs_eager", 0) is None
        # met: True, False, or None when part of the goal could not be measured in this run
        result["met"] = False if result["missed"] else (None if unmeasured else True)
        if result["enforce"]:
            failures += result["missed"]
        results.append(result)
    return results, failures


def evaluate_artifact(
    artifact_dir: Path,
    manifest: Any,
    *,
    check_latency: bool = True,
    threads: int | None = None,
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Load the artifact described by ``manifest`` (typed, or its JSON dict) and measure accuracy (and
    latency) against its gates."""
    import tempfile

    from ..artifact.schema import parse_manifest
    from ..backends import get_backend
    from ..components import get_component
    from ..machine import machine_isa

    manifest = parse_manifest(manifest, Path(artifact_dir))
    backend = get_backend(manifest.backend.name, for_build=False)
    section, _ = backend.adapt_to_cpu(dict(manifest.backend.options), machine_isa())  # e.g. bf16 -> f32 without native bf16
    threads = threads or manifest.target.threads
    with tempfile.TemporaryDirectory(prefix="rvc-compile-blobs-") as blobs:
        # Cold: compile from the model files into an empty compile cache. Warm: a second load reads it.
        cache_dir = Path(blobs) if manifest.target.compile_cache != "none" else None
        start = time.perf_counter()
        runner = backend.load(artifact_dir, section, threads=threads, cache_dir=cache_dir)
        cold = time.perf_counter() - start
        warm = None
        if cache_dir is not None:
            del runner
            start = time.perf_counter()
            runner = backend.load(artifact_dir, section, threads=threads, cache_dir=cache_dir)
            warm = time.perf_counter() - start
        voice = get_component(manifest.component.kind, for_build=False).open(Path(artifact_dir), manifest, runner, cold)
        result: dict[str, Any] = {"accuracy": golden_accuracy(voice, artifact_dir, manifest, dict(manifest.accuracy_budget))}
        samples: dict[str, list[float]] = {}
        if check_latency:
            latency = manifest.latency
            result["latency"], samples = measure_latency(
                voice, list(latency.seconds), repeat=latency.repeat, warmup=latency.warmup,
                goals=[goal.to_dict() for goal in latency.goals], threads=threads,
            )
            result["latency"]["load_time_cold_s"] = cold
            result["latency"]["load_time_warm_s"] = warm
    return result, samples
