"""Structured pruning on the full-size v2 40k synthesizer: FLOPs, eager speed, and what distillation recovers.

    PYTHONPATH=. python benchmarks/prune_bench.py [--steps 120] [--threads 2]

One run, three figures, each a ratio against a baseline measured in the same run:
1. FLOPs per second of audio before and after 50 % decoder pruning (target: >= 40 % removed);
2. eager fp32 PyTorch at 2 s of audio, unpruned vs pruned, on ``--threads`` threads (interleaved runs,
   median of each);
3. held-out log-mel distance of the pruned model to the original right after pruning and after a CPU
   distillation run (``rvc-compile prune``'s own pipeline; target: at most half), with its steps and
   wall time.
The checkpoint has random weights (no real RVC weights can be had here; ``rvc_compile.components.synthesizer.synthetic``):
a random teacher is a harder target to reproduce than a trained one (no redundancy learned) but
says nothing about perceived quality. Results go to benchmarks/results/prune.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FRAMES = 200  # 2 s of audio at 100 frames per second


def eager_seconds(models: dict[str, object], spec_of: dict[str, object], repeats: int) -> dict[str, list[float]]:
    """Wall time of one 2 s inference per model, runs interleaved so machine load hits both alike."""
    import torch

    from rvc_compile.components import get_component

    synthesizer = get_component("synthesizer")

    times: dict[str, list[float]] = {name: [] for name in models}
    inputs = {}
    for name, model in models.items():
        arrays = synthesizer.example_inputs(spec_of[name], FRAMES, seed=0)
        inputs[name] = [torch.from_numpy(arrays[n]) for n in model.input_names]
        with torch.inference_mode():
            model(*inputs[name])  # warm-up
    for _ in range(repeats):
        for name, model in models.items():
            with torch.inference_mode():
                started = time.perf_counter()
                model(*inputs[name])
                times[name].append(time.perf_counter() - started)
    return times


def measure(source: Path, work: Path, *, threads: int = 2, steps: int = 120, repeats: int = 7, log=print) -> dict:
    """Prune ``source`` (50 % decoder), distil it, time both models; the results as a JSON-able dict."""
    import torch
    import yaml

    from rvc_compile.components.synthesizer.checkpoint import load_checkpoint
    from rvc_compile.machine import cpu_info, library_versions
    from rvc_compile.components.synthesizer.model import build_model
    from rvc_compile.compress.prune_recipe import load_prune_recipe, run_prune

    torch.set_num_threads(threads)
    load_before = os.getloadavg()
    started = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    recipe_path = work / "prune.yaml"
    recipe_path.write_text(yaml.safe_dump({
        "name": "bench-decoder50",
        "source": {"checkpoint": str(source)},
        "pruning": {"decoder": 0.5, "encoder": 0.0, "flow": 0.0, "importance": "l2", "round_to": 8},
        "calibration": {"count": 8, "seconds": 4.0, "held_out": 2, "held_out_seconds": 2.0, "seed": 0},
        "distillation": {
            "steps": steps, "learning_rate": 1e-4, "segment_frames": 32, "batch": 1, "seed": 0,
            "device": "cpu", "threads": threads, "log_every": 25, "save_every": 100, "resume": False,
        },
        "output": {"checkpoint": str(work / "pruned.pth"), "dtype": "fp16"},
    }, sort_keys=False))
    result = run_prune(load_prune_recipe(recipe_path), log=log)
    report = result.report

    original = load_checkpoint(source)
    pruned = load_checkpoint(result.path)
    torch.set_num_threads(threads)
    models = {"unpruned": build_model(original.spec, original.state_dict), "pruned": build_model(pruned.spec, pruned.state_dict)}
    specs = {"unpruned": original.spec, "pruned": pruned.spec}
    times = eager_seconds(models, specs, repeats)

    median = {name: statistics.median(values) for name, values in times.items()}
    cost, accuracy, distillation = report["cost"], report["accuracy"], report["distillation"]
    after_pruning = accuracy["after_pruning"]["log_mel_db"]
    after_tuning = accuracy["after_fine_tuning"]["log_mel_db"]
    spec = original.spec
    return {
        "benchmark": f"structured pruning, {spec.version} {spec.sample_rate_tag} synthesizer (random weights), 50 % of decoder ResBlock middle channels",
        "machine": {**cpu_info(), "threads": threads, "load_average_1min": {"start": round(load_before[0], 2), "end": round(os.getloadavg()[0], 2)}},
        "libraries": library_versions("torch", "numpy"),
        "flops": {
            "gflop_per_second_of_audio": cost["gflop_per_second_of_audio"],
            "parameters": cost["parameters"],
            "removed_fraction": cost["flops_removed_fraction"],
            "parameters_removed_fraction": cost["parameters_removed_fraction"],
            "target_removed_fraction": 0.40,
            "target_met": cost["flops_removed_fraction"] >= 0.40,
        },
        "eager_fp32": {
            "audio_seconds": FRAMES / 100,
            "repeats": repeats,
            "seconds": {name: [round(t, 4) for t in values] for name, values in times.items()},
            "median_s": {name: round(value, 4) for name, value in median.items()},
            "rtf_median": {name: round(value / (FRAMES / 100), 4) for name, value in median.items()},
            "speedup_pruned_over_unpruned": round(median["unpruned"] / median["pruned"], 3),
            # The fastest run of each is the least disturbed by other load on a shared machine.
            "speedup_fastest_runs": round(min(times["unpruned"]) / min(times["pruned"]), 3),
        },
        "distillation": {
            "held_out": accuracy["held_out"],
            "log_mel_db_after_pruning": after_pruning,
            "log_mel_db_after_fine_tuning": after_tuning,
            "mrstft_after_pruning": accuracy["after_pruning"]["mrstft"],
            "mrstft_after_fine_tuning": accuracy["after_fine_tuning"]["mrstft"],
            "snr_db_after_pruning": accuracy["after_pruning"]["snr_db"],
            "snr_db_after_fine_tuning": accuracy["after_fine_tuning"]["snr_db"],
            "reduction_factor": accuracy["log_mel_reduction_factor"],
            "target": "log-mel distance after fine-tuning <= half of right after pruning",
            "target_met": after_tuning <= 0.5 * after_pruning,
            "steps": distillation["steps"],
            "wall_s": distillation["wall_s"],
            "device": distillation["device"],
            "precision": distillation["precision"],
            "settings": {k: distillation["config"][k] for k in ("learning_rate", "segment_frames", "batch", "train", "mel_weight", "stft_weight", "feature_weight")},
            "training_cases": distillation["training_cases"],
            "loss_first": distillation["loss_first"],
            "loss_last": distillation["loss_last"],
            "history": distillation["history"],
        },
        "total_wall_s": round(time.perf_counter() - started, 1),
    }


def markdown(results: dict) -> str:
    flops, eager, distilled, machine = results["flops"], results["eager_fp32"], results["distillation"], results["machine"]
    gflop, params = flops["gflop_per_second_of_audio"], flops["parameters"]
    median = eager["median_s"]
    return "\n".join([
        f"Machine: {machine['cpu']} ({', '.join(machine['flags'])}), {machine['threads']} threads, "
        f"1-minute load average {machine['load_average_1min']['start']} at the start, {machine['load_average_1min']['end']} at the end.",
        "",
        "| | unpruned | pruned (decoder 50 %) | ratio |",
        "|---|---:|---:|---:|",
        f"| GFLOP per s of audio | {gflop['before']['total']:.2f} | {gflop['after']['total']:.2f} | -{flops['removed_fraction']:.1%} |",
        f"| parameters (M) | {params['before']['total'] / 1e6:.2f} | {params['after']['total'] / 1e6:.2f} | -{flops['parameters_removed_fraction']:.1%} |",
        f"| eager fp32 PyTorch, 2 s of audio, median of {eager['repeats']} (s) | {median['unpruned']:.3f} | {median['pruned']:.3f} "
        f"| {eager['speedup_pruned_over_unpruned']:.2f}x faster |",
        f"| eager fp32 PyTorch, fastest of {eager['repeats']} (s) | {min(eager['seconds']['unpruned']):.3f} | {min(eager['seconds']['pruned']):.3f} "
        f"| {eager['speedup_fastest_runs']:.2f}x faster |",
        "",
        f"Held-out log-mel distance to the original ({distilled['held_out']['cases']} inputs of {distilled['held_out']['seconds']} s): "
        f"{distilled['log_mel_db_after_pruning']:.3f} dB right after pruning, {distilled['log_mel_db_after_fine_tuning']:.3f} dB after "
        f"{distilled['steps']} distillation steps ({distilled['wall_s']:.0f} s on {distilled['device']} {distilled['precision']}, "
        f"batch {distilled['settings']['batch']} x {distilled['settings']['segment_frames']} frames, learning rate "
        f"{distilled['settings']['learning_rate']:g}): {distilled['reduction_factor']:.2f}x lower "
        f"(MR-STFT {distilled['mrstft_after_pruning']:.3f} -> {distilled['mrstft_after_fine_tuning']:.3f}).",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "prune.json")
    args = parser.parse_args()

    from rvc_compile.components.synthesizer.synthetic import make_checkpoint

    with tempfile.TemporaryDirectory(prefix="prune-bench-") as scratch:
        scratch = Path(scratch)
        source = make_checkpoint(scratch / "voice_v2_40k.pth", version="v2", sample_rate="40k", size="full", seed=7)
        results = measure(
            source, scratch / "work", threads=args.threads, steps=args.steps, repeats=args.repeats,
            log=lambda message: print(message, file=sys.stderr, flush=True),
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
