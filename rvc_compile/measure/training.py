"""`rvc-compile train-bench`: the distillation trainer's speed, before and after each speed-up, in one run.

The variants are cumulative, each adding one speed-up to the one before (``VARIANTS``): today's loop
(the teacher runs on every step, the student computes its whole forward, plain Adam), then a fused
Adam, then the student starting from the teacher's decoder input, then the teacher's outputs in the
build cache, on a first run (the cache fills) and on a later one (a resumed run, or another pruning
ratio of a sweep). The variants run interleaved, ``rounds`` times ``steps // rounds`` steps each
(every variant resumes its own run), so load on the machine hits them alike. Per variant: steps per
second over the timed steps, host time per part of a step, the loss curve; the bench checks that the
speed-ups that keep the maths give the identical loss curve.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

# name -> the DistillConfig switches; "cache" is "cold" (empty at the start) or "warm" (filled before timing).
VARIANTS: dict[str, dict[str, Any]] = {
    "today": {"fused_optimizer": False, "reuse_prefix": False, "teacher_cache": False},
    "+fused Adam": {"fused_optimizer": True, "reuse_prefix": False, "teacher_cache": False},
    "+decoder input reused": {"fused_optimizer": True, "reuse_prefix": True, "teacher_cache": False},
    "+teacher cache, first run": {"fused_optimizer": True, "reuse_prefix": True, "teacher_cache": True, "cache": "cold"},
    "+teacher cache, warm": {"fused_optimizer": True, "reuse_prefix": True, "teacher_cache": True, "cache": "warm"},
}
# Variants whose maths are those of the one named: their loss curves must be identical.
SAME_MATHS = {"+teacher cache, first run": "+decoder input reused", "+teacher cache, warm": "+decoder input reused"}


def train_bench(
    teacher_spec: Any, teacher_state: dict[str, Any], student_spec: Any, student_state: dict[str, Any], cases: list[dict[str, Any]],
    config: Any, *, rounds: int = 3, work: Path | None = None, log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time ``config.steps`` distillation steps of every variant; JSON-able results."""
    from ..compress.distill import distill

    if config.steps < rounds:
        raise ValueError(f"train-bench: {config.steps} steps cannot be split into {rounds} rounds")
    owned = work is None
    work = Path(tempfile.mkdtemp(prefix="rvc-train-bench-")) if owned else Path(work)
    try:
        configs, caches = {}, {}
        for name, switches in VARIANTS.items():
            settings = {k: v for k, v in switches.items() if k != "cache"}
            configs[name] = dataclasses.replace(config, log_every=1, save_every=10**9, resume=True, **settings)
            caches[name] = work / f"cache-{len(caches)}" if switches.get("teacher_cache") else None
            shutil.rmtree(work / f"run-{len(caches) - 1}", ignore_errors=True)
        args = (teacher_spec, teacher_state, student_spec, student_state, cases)
        for name, switches in VARIANTS.items():
            if switches.get("cache") == "warm":  # fill this variant's cache with a run that is not timed
                started = time.perf_counter()
                distill(*args, dataclasses.replace(configs[name], resume=False), work / "fill", log=lambda _: None, cache_dir=caches[name])
                log(f"train-bench: filled the warm variant's teacher cache in {time.perf_counter() - started:.0f} s")
        totals = {name: {"steps": 0, "seconds": 0.0, "parts": {}} for name in VARIANTS}
        records: dict[str, Any] = {}
        per_round = [config.steps // rounds + (1 if r < config.steps % rounds else 0) for r in range(rounds)]
        for round_index, steps in enumerate(per_round):
            for index, name in enumerate(VARIANTS):
                result = distill(*args, configs[name], work / f"run-{index}", log=lambda _: None, stop_after=steps, cache_dir=caches[name])
                speed = result.record["speed"]
                total = totals[name]
                total["steps"] += speed["steps_this_run"]
                for part, ms in speed["ms_per_step"].items():
                    seconds = ms * speed["steps_this_run"] / 1000
                    total["parts"][part] = total["parts"].get(part, 0.0) + seconds
                    total["seconds"] += seconds
                records[name] = result.record
            log(f"train-bench: round {round_index + 1}/{rounds} done")
        baseline = totals["today"]["seconds"] / totals["today"]["steps"]
        variants = {}
        for name, total in totals.items():
            per_step = total["seconds"] / total["steps"]
            record = records[name]
            variants[name] = {
                "switches": VARIANTS[name],
                "steps": total["steps"],
                "steps_per_s": round(1 / per_step, 4),
                "speedup_over_today": round(baseline / per_step, 3),
                "ms_per_step": {part: round(1000 * seconds / total["steps"], 1) for part, seconds in total["parts"].items()},
                "teacher_cache": record["speed"]["teacher_cache"],
                "history": record["history"],
            }
        identical = {name: variants[name]["history"] == variants[other]["history"] for name, other in SAME_MATHS.items()}
        peak = records["today"]["speed"]["peak_memory_mb"]
        return {
            "steps": config.steps, "rounds": rounds, "batch": config.batch, "segment_frames": config.segment_frames,
            "threads": config.threads, "device": records["today"]["device"], "precision": records["today"]["precision"],
            "variants": variants, "identical_loss_curves": identical,
            "peak_memory_mb_process": max(peak, *(r["speed"]["peak_memory_mb"] for r in records.values())),
            "cache_bytes": {name: _folder_bytes(path) for name, path in caches.items() if path is not None},
        }
    finally:
        if owned:
            shutil.rmtree(work, ignore_errors=True)


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def markdown(result: dict[str, Any], machine: dict[str, Any]) -> str:
    lines = [
        f"Machine: {machine['cpu']} ({', '.join(machine['flags'])}), {result['threads']} threads; {result['device']} {result['precision']}; "
        f"batch {result['batch']} x {result['segment_frames']} frames; {result['steps']} steps per variant in {result['rounds']} interleaved rounds.",
        "",
        "| variant | steps/s | vs today | ms per step: targets | student forward | discriminator | loss | backward | optimizer |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, variant in result["variants"].items():
        ms = variant["ms_per_step"]
        lines.append(
            f"| {name} | {variant['steps_per_s']:.3f} | {variant['speedup_over_today']:.2f}x | {ms['targets']:.0f} | {ms['student_forward']:.0f} "
            f"| {ms.get('discriminator', 0.0):.0f} | {ms['loss']:.0f} | {ms['backward']:.0f} | {ms['optimizer']:.0f} |"
        )
    same = ", ".join(f"{name}: {'identical' if ok else 'DIFFERENT'}" for name, ok in result["identical_loss_curves"].items())
    lines += ["", f"Loss curves against `+decoder input reused` (the same maths): {same}. Peak resident memory of the process: {result['peak_memory_mb_process']:.0f} MB."]
    return "\n".join(lines) + "\n"


def run_train_bench(
    checkpoint_path: Path, *, decoder: float = 0.5, steps: int = 30, rounds: int = 3, threads: int = 2, segment_frames: int = 32,
    batch: int = 1, count: int = 8, seconds: float = 4.0, log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Prune ``checkpoint_path``'s decoder by ``decoder`` (l2) and bench distilling it on generated inputs."""
    import torch

    from ..compress.distill import DistillConfig
    from ..compress.prune import prune_model
    from ..components.synthesizer.checkpoint import load_checkpoint
    from ..machine import cpu_info, library_versions
    from ..precision.calibration import load_calibration
    from ..recipe.schema import Calibration

    checkpoint = load_checkpoint(checkpoint_path)
    torch.set_num_threads(threads)
    calibration = load_calibration(Calibration(source="generated", f0_source="synthetic", count=count, seconds=seconds), checkpoint.spec)
    pruned = prune_model(checkpoint.spec, checkpoint.state_dict, ratios={"decoder": decoder}, importance="l2", cases=calibration.cases, round_to=8)
    config = DistillConfig(steps=steps, segment_frames=segment_frames, batch=batch, threads=threads, device="cpu", precision="fp32")
    result = train_bench(checkpoint.spec, checkpoint.state_dict, pruned.spec, pruned.state_dict, calibration.cases, config, rounds=rounds, log=log)
    return {
        "benchmark": f"distillation trainer, {checkpoint.spec.version} {checkpoint.spec.sample_rate_tag}, decoder pruned {decoder:.0%}",
        "checkpoint": str(checkpoint.path), "machine": {**cpu_info(), "threads": threads}, "libraries": library_versions("torch", "numpy"),
        **result,
    }
