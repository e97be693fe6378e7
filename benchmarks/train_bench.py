"""The distillation trainer on the full-size v2 40k voice: speed-ups, time to a target, the adversarial option.

    PYTHONPATH=. python benchmarks/train_bench.py [--steps 30] [--threads 2]

One run, three parts, each a comparison inside the same run (interleaved where the parts are timed):
1. ``rvc-compile train-bench``: steps per second of today's loop and of each speed-up added to it
   (fused Adam, decoder input reused, teacher cache on a first and on a later run), per part of a step,
   and whether the loss curves that must be identical are (target: 1.5x today's loop, fp32);
2. time to target: today's pruning + distillation (slice, 120 steps) against ours (least-squares refit,
   60 steps over a fixed set of 30 crops, every speed-up, an empty teacher cache), interleaved in rounds;
   held-out log-mel of each
   (target: at most 0.35 dB in at most half of today's wall time);
3. the adversarial option: the same start distilled with and without a discriminator (a random one in
   RVC's D_*.pth format: no trained discriminator exists here), held-out log-mel and cost per step.
Random weights throughout (no real RVC weights can be had here). Results: benchmarks/results/train.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TODAY = {"steps": 120, "learning_rate": 1e-4, "reconstruct": "none"}  # the prune bench's run before this work
OURS = {"steps": 60, "crops": 30, "learning_rate": 1e-4, "reconstruct": "least_squares"}


def _held_out(held_out, spec, state) -> float:
    return round(held_out.measure(spec, {k: v.half().float() for k, v in state.items()})["log_mel_db"], 4)  # as stored (fp16)


def time_to_target(checkpoint, train, held_out, work: Path, threads: int, rounds: int, log) -> dict:
    from rvc_compile.compress.distill import DistillConfig, distill
    from rvc_compile.compress.prune import prune_model

    runs = {"today": TODAY, "ours": OURS}
    switches = {"today": dict(teacher_cache=False, reuse_prefix=False, fused_optimizer=False), "ours": {}}
    pruned, prune_s, configs = {}, {}, {}
    for name, plan in runs.items():
        started = time.perf_counter()
        pruned[name] = prune_model(checkpoint.spec, checkpoint.state_dict, ratios={"decoder": 0.5}, importance="l2", cases=train.cases,
                                   round_to=8, measure=False, reconstruct=plan["reconstruct"])
        prune_s[name] = time.perf_counter() - started
        configs[name] = DistillConfig(steps=plan["steps"], crops=plan.get("crops", 0), learning_rate=plan["learning_rate"], segment_frames=32, threads=threads,
                                      device="cpu", precision="fp32", log_every=10, save_every=10**9, **switches[name])
    results = {}
    for index in range(rounds):
        for name, plan in runs.items():
            per_round = plan["steps"] // rounds + (plan["steps"] % rounds if index == rounds - 1 else 0)
            results[name] = distill(checkpoint.spec, checkpoint.state_dict, pruned[name].spec, pruned[name].state_dict, train.cases,
                                    configs[name], work / name, log=lambda _: None, stop_after=per_round, cache_dir=work / f"cache-{name}")
        log(f"time to target: round {index + 1}/{rounds}")
    out = {}
    for name, plan in runs.items():
        record = results[name].record
        out[name] = {
            **plan, "switches": switches[name] or "all on (cache empty at the start)",
            "prune_s": round(prune_s[name], 1), "distill_wall_s": record["wall_s"],
            "total_s": round(prune_s[name] + record["wall_s"], 1),
            "held_out_log_mel_db_after_pruning": _held_out(held_out, pruned[name].spec, pruned[name].state_dict),
            "held_out_log_mel_db": _held_out(held_out, pruned[name].spec, results[name].state_dict),
        }
    ratio = out["ours"]["total_s"] / out["today"]["total_s"]
    out["wall_ratio"] = round(ratio, 3)
    out["target"] = "ours at most 0.35 dB held-out log-mel in at most half of today's wall time (pruning + distillation)"
    out["target_met"] = out["ours"]["held_out_log_mel_db"] <= 0.35 and ratio <= 0.5
    return out


def adversarial(checkpoint, train, held_out, work: Path, threads: int, steps: int, log) -> dict:
    import torch

    from rvc_compile.compress.discriminator import MultiPeriodDiscriminator, save_discriminator
    from rvc_compile.compress.distill import DistillConfig, distill
    from rvc_compile.compress.prune import prune_model

    torch.manual_seed(0)
    d_path = save_discriminator(MultiPeriodDiscriminator(checkpoint.spec.version), work / "D_random.pth")
    start = prune_model(checkpoint.spec, checkpoint.state_dict, ratios={"decoder": 0.5}, importance="l2", cases=train.cases,
                        round_to=8, measure=False, reconstruct="least_squares")
    base = DistillConfig(steps=steps, learning_rate=1e-4, segment_frames=32, threads=threads, device="cpu", precision="fp32", log_every=10, save_every=10**9)
    out = {"steps": steps, "discriminator": "random weights in RVC's D_*.pth format (MultiPeriodDiscriminatorV2)"}
    for name, config in {"without": base, "with": dataclasses.replace(base, discriminator=d_path)}.items():
        result = distill(checkpoint.spec, checkpoint.state_dict, start.spec, start.state_dict, train.cases, config, work / f"adv-{name}",
                         log=lambda _: None, cache_dir=work / "cache-adv")
        speed = result.record["speed"]
        out[name] = {"held_out_log_mel_db": _held_out(held_out, start.spec, result.state_dict), "steps_per_s": speed["steps_per_s"],
                     "ms_per_step": speed["ms_per_step"]}
        log(f"adversarial: {name} done")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant of the speed-up table")
    parser.add_argument("--adversarial-steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train.json")
    args = parser.parse_args()

    import torch

    from rvc_compile.components.synthesizer.checkpoint import load_checkpoint
    from rvc_compile.components.synthesizer.synthetic import make_checkpoint
    from rvc_compile.compress.distill import HeldOut
    from rvc_compile.compress.prune_recipe import PruneCalibration
    from rvc_compile.machine import cpu_info, library_versions
    from rvc_compile.measure.training import markdown, run_train_bench
    from rvc_compile.precision.calibration import load_calibration_split

    torch.set_num_threads(args.threads)
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    started, load_before = time.perf_counter(), os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="rvc-train-bench-") as folder:
        work = Path(folder)
        checkpoint = load_checkpoint(make_checkpoint(work / "demo_voice_v2_40k.pth", seed=7))  # the demo voice
        speedups = run_train_bench(checkpoint.path, steps=args.steps, rounds=args.rounds, threads=args.threads, log=log)
        log(markdown(speedups, speedups["machine"]))
        train, held = load_calibration_split(PruneCalibration(), checkpoint.spec, 2, 2.0, cache_dir=work / "calibration")
        held_out = HeldOut(checkpoint.spec, checkpoint.state_dict, held.cases)
        target = time_to_target(checkpoint, train, held_out, work, args.threads, args.rounds, log)
        log(json.dumps(target, indent=1))
        adv = adversarial(checkpoint, train, held_out, work, args.threads, args.adversarial_steps, log)
        log(json.dumps(adv, indent=1))
    results = {
        "benchmark": "distillation trainer, v2 40k synthesizer (random weights, the demo voice), decoder pruned 50 %",
        "machine": {**cpu_info(), "threads": args.threads, "load_average_1min": {"start": round(load_before[0], 2), "end": round(os.getloadavg()[0], 2)}},
        "libraries": library_versions("torch", "numpy"),
        "calibration": {"training": train.source, "held_out": held.source},
        "speedups": {k: v for k, v in speedups.items() if k not in ("machine", "libraries")},
        "time_to_target": target,
        "adversarial": adv,
        "total_wall_s": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(args.out)


if __name__ == "__main__":
    main()
