"""Many voices on this machine: executors (voices per hour) and per-voice weight binding (time per voice).

    PYTHONPATH=. python benchmarks/scale_bench.py executors [--voices 4] [--workers 2] [--size full]
    PYTHONPATH=. python benchmarks/scale_bench.py binding [--voices 3] [--size full]

Both write ``--voices`` demo checkpoints (random weights, seeds 0..N-1), one recipe each
(recipes/demo.yaml with its checkpoint and name replaced).

- ``executors``: ``target.threads=1`` (one worker, one core); builds them all twice, with
  ``build_recipes(executor="local")`` and with ``executor="ray"`` (a local Ray instance), each with
  ``--workers`` workers and its own empty cache, so neither reuses the other's stages; the order
  alternates over ``--rounds``.
- ``binding``: the demo recipe without ``fold_speaker`` (binding cannot recompute its folded constants),
  one build at a time on the recipe's threads. Voice 0 is built with ``source.bind_weights`` into an
  empty cache (it compiles the architecture: two probe captures, the binding map, the latency); every
  other voice is then built twice, interleaved: bound (that cache) and in full (no cache). The target:
  a bound voice in at most 10 % of a full build's time, at the same accuracy.

Results are merged into benchmarks/results/scale.json under the mode's name; docs/SCALE.md quotes them.
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


def write_voices(folder: Path, count: int, size: str, *, bind: bool = False) -> list[Path]:
    """``count`` checkpoints and their recipes (the demo recipe, its checkpoint and name replaced; with
    ``bind``, binding on and fold_speaker off)."""
    from rvc_compile.components.synthesizer.synthetic import make_checkpoint

    template = (ROOT / "recipes" / "demo.yaml").read_text()
    if bind:
        template = template.replace("  - name: fold_speaker\n    speaker: 0\n", "")
        template = template.replace("  checkpoint: ../out/demo/demo_voice_v2_40k.pth\n", "  checkpoint: ../out/demo/demo_voice_v2_40k.pth\n  bind_weights: true\n")
        assert "fold_speaker" not in template and "bind_weights" in template, "recipes/demo.yaml changed: update scale_bench"
    recipes = []
    for index in range(count):
        checkpoint = folder / f"voice{index:03d}.pth"
        make_checkpoint(checkpoint, size=size, seed=index)
        text = template.replace("name: demo-voice", f"name: voice{index:03d}")
        text = text.replace("checkpoint: ../out/demo/demo_voice_v2_40k.pth", f"checkpoint: {checkpoint}")
        text = text.replace("output_dir: ../out/artifacts", f"output_dir: {folder / 'artifacts'}")
        recipe = folder / f"voice{index:03d}.yaml"
        recipe.write_text(text)
        recipes.append(recipe)
    return recipes


def run(executor: str, recipes: list[Path], workers: int, work: Path, round_: int) -> dict:
    from rvc_compile.build.batch import OK, build_recipes

    out = work / f"out-{executor}-{round_}"
    started = time.perf_counter()
    results = build_recipes(recipes, jobs=workers, out_dir=out, overrides=["target.threads=1"], cache_dir=work / f"cache-{executor}-{round_}", executor=executor)
    wall = time.perf_counter() - started
    failed = [f"{result.recipe.name}: {result.error}" for result in results if result.status != OK]
    return {
        "executor": executor, "round": round_, "wall_s": round(wall, 2), "voices": len(recipes), "failed": failed,
        "voices_per_hour": round(3600 * (len(recipes) - len(failed)) / wall, 1),
        "build_s": [round(result.seconds, 2) for result in results],
    }


def build_one(recipe: Path, cache: Path | None, overrides: list[str], out: Path) -> dict:
    """One build in this process (the binding benchmark times builds one at a time); its time and report."""
    from rvc_compile.build.pipeline import build
    from rvc_compile.recipe.schema import load_recipe

    started = time.perf_counter()
    result = build(load_recipe(recipe, overrides), out_dir=out, cache_dir=cache, use_cache=cache is not None, log=lambda message: None)
    seconds = time.perf_counter() - started
    accuracy = result.report["accuracy"]
    worst = min(case["snr_db"] for case in accuracy["cases"])
    return {"voice": recipe.stem, "seconds": round(seconds, 2), "snr_db_worst": round(worst, 2),
            "cache_hits": sum(r["hit"] for r in result.cache), "stages": len(result.cache)}


def binding(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="rvc-bind-") as tmp:
        work = Path(tmp)
        recipes = write_voices(work, args.voices, args.size, bind=True)
        cache = work / "cache"
        first = build_one(recipes[0], cache, [], work / "out")
        print(json.dumps({"architecture": first}), file=sys.stderr, flush=True)
        bound, full = [], []
        for recipe in recipes[1:]:
            bound.append(build_one(recipe, cache, [], work / "out"))
            full.append(build_one(recipe, None, ["source.bind_weights=false", "name=" + recipe.stem + "-full"], work / "out"))
            print(json.dumps({"bound": bound[-1], "full": full[-1]}), file=sys.stderr, flush=True)
    ratio = statistics.median(b["seconds"] for b in bound) / statistics.median(f["seconds"] for f in full)
    return {
        "recipe": "recipes/demo.yaml without fold_speaker, source.bind_weights", "voices": args.voices, "size": args.size,
        "first_voice_compiles_architecture": first, "bound": bound, "full": full,
        "summary": {"bound_s_median": statistics.median(b["seconds"] for b in bound), "full_s_median": statistics.median(f["seconds"] for f in full),
                    "bound_over_full": round(ratio, 3), "target": 0.10, "met": ratio <= 0.10},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["executors", "binding"])
    parser.add_argument("--voices", type=int)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--size", choices=["small", "full"], default="full")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scale.json")
    args = parser.parse_args()

    from rvc_compile.machine import cpu_info, library_versions

    results = json.loads(args.out.read_text()) if args.out.exists() else {"schema": 1}
    machine = {**cpu_info(), "load_average_1min_end": None}
    if args.mode == "binding":
        args.voices = args.voices or 3
        results["binding"] = {**binding(args), "machine": machine, "libraries": library_versions("torch", "onnxruntime", "onnx")}
        results["binding"]["machine"]["load_average_1min_end"] = round(os.getloadavg()[0], 2)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps(results["binding"]["summary"], indent=2))
        return
    args.voices = args.voices or 4
    with tempfile.TemporaryDirectory(prefix="rvc-scale-") as tmp:
        work = Path(tmp)
        recipes = write_voices(work, args.voices, args.size)
        runs = []
        for round_ in range(args.rounds):
            order = ("local", "ray") if round_ % 2 == 0 else ("ray", "local")
            for executor in order:
                runs.append(run(executor, recipes, args.workers, work, round_))
                print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    summary = {}
    for executor in ("local", "ray"):
        rates = [r["voices_per_hour"] for r in runs if r["executor"] == executor]
        summary[executor] = {"voices_per_hour_median": statistics.median(rates),
                             "build_s_median": statistics.median(s for r in runs if r["executor"] == executor for s in r["build_s"])}
    summary["ray_vs_local"] = round(summary["ray"]["voices_per_hour_median"] / summary["local"]["voices_per_hour_median"], 3)
    results["executors"] = {
        "voices": args.voices, "workers": args.workers, "size": args.size, "recipe": "recipes/demo.yaml, target.threads=1",
        "machine": {**machine, "load_average_1min_end": round(os.getloadavg()[0], 2)},
        "libraries": library_versions("torch", "onnxruntime", "ray"),
        "runs": runs, "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
