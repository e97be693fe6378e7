"""Accuracy and latency of a loaded artifact: shared by the build (for its report) and ``verify``.

numpy only, so verify and the runtime never need torch.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..artifact.golden import example_case, load_case
from ..machine import peak_memory_mb
from .metrics import check_budget, compare, latency_stats, smallest_passing_budget


def run_case(voice: Any, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Run a stored case (user-level inputs with batch dimensions) through the runtime's whole path."""
    noise = {name: arrays[name] for name in ("prior_noise", "source_noise") if name in arrays}
    f0 = arrays["f0"][0] if "f0" in arrays else None
    return voice.infer(arrays["features"][0], f0, speaker=int(arrays["speaker"][0]), noise=noise)


def golden_accuracy(voice: Any, artifact_dir: Path, manifest: dict[str, Any], budget: dict[str, Any]) -> dict[str, Any]:
    """Run every golden case through ``voice`` and compare with its stored fp32 reference output."""
    cases = []
    for entry in manifest["golden"]:
        arrays = load_case(Path(artifact_dir) / entry["file"])
        candidate = run_case(voice, arrays)
        metrics = compare(arrays["reference"].reshape(-1), candidate, voice.sample_rate)
        cases.append({"name": entry["name"], "frames": entry["frames"], "seconds": entry["seconds"], **metrics})
    failures = [f"{case['name']}: {failure}" for case in cases for failure in check_budget(case, budget)]
    return {
        "reference": "fp32 PyTorch eager, identical inputs and noise",
        "budget": budget,
        "cases": cases,
        "smallest_passing_budget": smallest_passing_budget(cases),
        "failures": failures,
        "passed": not failures,
    }


def measure_latency(
    voice: Any, seconds_list: list[float], *, repeat: int, warmup: int, goals: list[dict[str, float]], threads: int
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Time ``voice.infer`` at each length (after warm-up runs); check the real-time-factor goals."""
    cases, samples = [], {}
    for seconds in seconds_list:
        frames = max(int(round(seconds * voice.sample_rate / voice.hop_length)), voice.min_frames)
        if voice.max_frames is not None:
            frames = min(frames, voice.max_frames)
        case = example_case(voice.feature_dim, frames, seed=7)
        f0 = case["f0"] if voice.has_f0 else None
        speaker = voice.fixed_speaker or 0
        for _ in range(warmup):
            voice.infer(case["features"], f0, speaker=speaker, noise="seed:1")
        times = []
        gc.collect()
        for _ in range(repeat):
            start = time.perf_counter()
            voice.infer(case["features"], f0, speaker=speaker, noise="seed:1")
            times.append(time.perf_counter() - start)
        audio_seconds = frames * voice.hop_length / voice.sample_rate
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
    manifest: dict[str, Any],
    *,
    check_latency: bool = True,
    threads: int | None = None,
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Load the artifact described by ``manifest`` and measure accuracy (and latency) against its gates."""
    from ..backends import get_backend
    from ..runtime import CompiledVoice

    import tempfile

    from ..machine import machine_isa

    backend = get_backend(manifest["backend"]["name"], for_build=False)
    section, _ = backend.adapt_to_cpu(manifest["backend"], machine_isa())  # e.g. bf16 -> f32 without native bf16
    threads = threads or int(manifest["target"]["threads"])
    with tempfile.TemporaryDirectory(prefix="rvc-compile-blobs-") as blobs:
        # Cold: compile from the model files into an empty compile cache. Warm: a second load reads it.
        cache_dir = Path(blobs) if manifest.get("target", {}).get("compile_cache", "none") != "none" else None
        start = time.perf_counter()
        runner = backend.load(artifact_dir, section, threads=threads, cache_dir=cache_dir)
        cold = time.perf_counter() - start
        warm = None
        if cache_dir is not None:
            del runner
            start = time.perf_counter()
            runner = backend.load(artifact_dir, section, threads=threads, cache_dir=cache_dir)
            warm = time.perf_counter() - start
        voice = CompiledVoice(Path(artifact_dir), manifest, runner, cold)
        result: dict[str, Any] = {"accuracy": golden_accuracy(voice, artifact_dir, manifest, manifest["accuracy_budget"])}
        samples: dict[str, list[float]] = {}
        if check_latency:
            latency = manifest["latency"]
            result["latency"], samples = measure_latency(
                voice, latency["seconds"], repeat=latency["repeat"], warmup=latency["warmup"], goals=latency["goals"], threads=threads
            )
            result["latency"]["load_time_cold_s"] = cold
            result["latency"]["load_time_warm_s"] = warm
    return result, samples


def main(argv: list[str] | None = None) -> None:
    """Worker: ``python -m rvc_compile.verify.evaluate DIR MANIFEST.json RESULT.json``.

    The build measures its artifact in a fresh process so load time and peak memory are the
    runtime's alone, without torch and the build's own allocations.
    """
    import json
    import sys

    artifact_dir, manifest_path, result_path = (argv or sys.argv[1:])[:3]
    manifest = json.loads(Path(manifest_path).read_text())
    result, samples = evaluate_artifact(Path(artifact_dir), manifest)
    Path(result_path).write_text(json.dumps({"result": result, "samples": samples}))


if __name__ == "__main__":
    main()
