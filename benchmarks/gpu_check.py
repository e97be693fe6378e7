"""The GPU check behind ``benchmarks/gpu_check.sh``: eager fp16 against AOTInductor fp16 and bf16 on one
GPU, in a few minutes, with nothing but torch and numpy (a GPU machine here has CUDA PyTorch and no
index to install the rest from).

For a full-size v2 40k voice (random weights, made here) it:
1. captures the torch program as a build does (fold_weight_norm, fold_speaker, host_source, then
   ``torch.export`` with the dynamic frame range) and compiles it with the aoti backend's own ``build``:
   fp16 and bf16 with the shipped policy's fp32 islands, dynamic 0.1-10 s; and fp16 for static 0.25 s
   blocks, whose runner replays a CUDA graph;
2. verifies each package at several lengths against the fp32 eager model on the same device (SNR, same
   inputs and noise), as the build's multi-length check does;
3. times eager fp16 (the whole model in half precision, as RVC's ``is_half`` runs it) and each package,
   interleaved, from numpy inputs to numpy audio, at 0.5/2/10 s and for 0.25 s blocks.

It writes one JSON (``--out``) with the GPU's name, every figure, and the throughput ratios; the target
(docs/PERFORMANCE.md) is 3x eager fp16 on 0.5 s inputs. ``--device cpu --size small`` runs the same
path on a CPU (the suite's smoke test).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RECIPE = ROOT / "recipes" / "gpu" / "cuda-fp16-aoti.yaml"  # its passes, frame range and fp32 islands


def _model(checkpoint: Path, workdir: Path) -> tuple[object, object, list[str], object, object]:
    """The torch model after the recipe's torch passes, its spec, input names, component and recipe."""
    from rvc_compile.build.pipeline import order_passes
    from rvc_compile.build.steps import torch_graph
    from rvc_compile.components import get_component
    from rvc_compile.recipe.schema import load_recipe

    recipe = load_recipe(RECIPE, [f"source.checkpoint={checkpoint}"])
    component = get_component("synthesizer")
    loaded = component.load(recipe.source)
    torch_passes, _ = order_passes(recipe)
    state, _, _ = torch_graph(component, loaded.spec, loaded.weights, torch_passes, workdir)
    return state.model.eval(), state.spec, list(state.input_names), component, recipe


def _compile(model, spec, names, component, recipe, precision: str, device: str, static: int | None, workdir: Path) -> tuple[Path, dict, float]:
    from rvc_compile.backends import aoti
    from rvc_compile.backends.program import layer_names
    from rvc_compile.capture.export import export_program
    from rvc_compile.precision.layers import resolve
    from rvc_compile.precision.plan import PrecisionPlan

    folder = Path(tempfile.mkdtemp(dir=workdir, prefix=f"{precision}-{static or 'dynamic'}-"))
    shapes = export_program(model, spec, names, folder / "program.pt2", min_frames=recipe.shapes.min_frames, max_frames=recipe.shapes.max_frames,
                            static_frames=static, component=component)
    import torch

    layers = list(layer_names(torch.export.load(str(folder / "program.pt2")).module().graph).values())
    keep = resolve(recipe.precision_policy.keep_fp32, layers, "precision_policy.keep_fp32")
    plan = PrecisionPlan(precision=precision, layers=layers, keep_fp32=keep)
    target = types.SimpleNamespace(device=device, precision=precision, threads=2, cpu="auto")
    start = time.perf_counter()
    section = aoti.build(None, target, folder, plan, program=folder / "program.pt2", program_shapes=shapes)
    return folder, section, time.perf_counter() - start


def _snr(reference: np.ndarray, candidate: np.ndarray) -> float:
    noise = float(np.sum((reference - candidate) ** 2))
    return float(10 * np.log10(float(np.sum(reference ** 2)) / max(noise, 1e-30)))


def _time(run, repeat: int, sync) -> float:
    run()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--size", default="full", choices=("full", "small"))
    parser.add_argument("--seconds", default="0.5,2,10", help="dynamic lengths to time")
    parser.add_argument("--block", type=float, default=0.25, help="static block length (0 to skip)")
    parser.add_argument("--precisions", default="fp16,bf16")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_check.json")
    args = parser.parse_args(argv)

    import torch

    from rvc_compile.backends.aoti import Runner
    from rvc_compile.capture.export import graph_inputs
    from rvc_compile.components.synthesizer.synthetic import make_checkpoint

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"error: gpu_check: torch {torch.__version__} sees no CUDA GPU here", file=sys.stderr)
        return 2
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    result: dict = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu", "torch": torch.__version__, "size": args.size,
        "recipe": str(RECIPE.relative_to(ROOT)), "cases": [], "packages": {},
    }
    with tempfile.TemporaryDirectory(prefix="rvc-gpu-check-") as scratch:
        workdir = Path(scratch)
        checkpoint = workdir / "voice.pth"
        make_checkpoint(checkpoint, version="v2", sample_rate="40k", f0=True, size=args.size, seed=1)
        model, spec, names, component, recipe = _model(checkpoint, workdir)
        result["islands"] = list(recipe.precision_policy.keep_fp32)
        fps = component.frames_per_second(spec)
        runners, packages = {}, [(precision, None) for precision in args.precisions.split(",")]
        block = int(round(args.block * fps)) if args.block else None
        if block:
            packages.append(("fp16", block))
        for precision, static in packages:  # compiled from the program captured on the CPU, as a build does
            label = f"aoti-{precision}" + (f"-static{static}" if static else "")
            folder, section, seconds = _compile(model, spec, names, component, recipe, precision, args.device, static, workdir)
            runners[label] = (Runner(folder / section["files"]["model"], section), static)
            result["packages"][label] = {"compile_s": round(seconds, 1), "lowered_layers": section["lowered"]["layers"], "cuda_graphs": section["cuda_graphs"]}
            print(f"{label}: compiled in {seconds:.0f} s", flush=True)
        reference = model.to(args.device)
        eager_half = copy.deepcopy(model).half()  # the same model, whole in fp16 (no second load and passes)

        def feed_at(frames: int, seed: int) -> dict[str, np.ndarray]:
            return graph_inputs(spec, names, frames, seed=seed, component=component)

        def eager(module, dtype):
            def run(feed):
                tensors = [torch.from_numpy(feed[name]).to(args.device, dtype) for name in names]
                with torch.inference_mode():
                    return module(*tensors).float().cpu().numpy().reshape(-1)
            return run

        lengths = [float(s) for s in args.seconds.split(",")]
        cases = [(seconds, int(round(seconds * fps)), False) for seconds in lengths] + ([(args.block, block, True)] if block else [])
        for seconds, frames, is_block in cases:
            feed = feed_at(frames, seed=3)
            truth = eager(reference, torch.float32)(feed)
            row = {"seconds": seconds, "frames": frames, "block": is_block, "ms": {}, "snr_db": {}}
            contenders = {"eager-fp16": eager(eager_half, torch.float16)}
            for label, (runner, static) in runners.items():
                if (static is not None) == is_block:
                    contenders[label] = lambda feed, runner=runner: runner.run(feed).reshape(-1)
            for label, run in contenders.items():
                row["snr_db"][label] = round(_snr(truth, run(feed)), 2)
            repeat = args.repeat if seconds <= 2 else max(3, args.repeat // 4)
            for _ in range(2):  # interleaved rounds: each contender timed in turn, best round kept
                for label, run in contenders.items():
                    ms = _time(lambda run=run: run(feed), repeat, sync)
                    row["ms"][label] = round(min(ms, row["ms"].get(label, ms)), 3)
            row["speedup_vs_eager_fp16"] = {label: round(row["ms"]["eager-fp16"] / ms, 2) for label, ms in row["ms"].items() if label != "eager-fp16"}
            print(json.dumps(row), flush=True)
            result["cases"].append(row)
    half_second = [row for row in result["cases"] if not row["block"] and abs(row["seconds"] - 0.5) < 1e-6]
    if half_second:
        best = max(half_second[0]["speedup_vs_eager_fp16"].values())
        result["target"] = {"what": "throughput >= 3x eager fp16 on 0.5 s inputs", "best_speedup": best, "met": best >= 3.0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
