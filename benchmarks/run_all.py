"""The benchmark suite behind docs/PERFORMANCE.md (``make bench``).

    python benchmarks/run_all.py            # full suite: v2 40k full-size model, ~20 min on 2 cores
    python benchmarks/run_all.py --quick    # the same pipeline on a small model in a few minutes

Steps, each printed as it runs:

1. the demo checkpoint (v2 40k, official format, random weights; ``synthetic.make_checkpoint``);
2. every recipe in recipes/ built against it (``rvc-compile build --set source.checkpoint=...``); a
   recipe that fails to build is recorded as failed with its one-line error, and the suite goes on.
   An artifact already built from the same recipe and checkpoint (same recipe hash, same checkpoint
   sha256) is reused unless ``--rebuild``;
3. the machine's peak fp32/bf16/int8 rates (``floor.measure_peaks``), once, for both bench runs;
4. one interleaved bench run at 0.5, 2, 10 and 30 s: eager fp32, eager bf16, the naive ONNX export and
   every built artifact (the two slow baselines stop at 10 s to keep the suite in its time budget);
5. one interleaved streaming run with 0.25 s chunks;
6. per-module profiles of the eager reference and of the fastest artifact at 2 s;
7. extra sections: every ``benchmarks/section_*.py`` (build cache, pruning, ...) with ``run(context)``;
8. results as JSON in benchmarks/results/ (quick: out/bench-quick/results/), then
   ``benchmarks/report.py`` renders docs/PERFORMANCE.md and the speed-up/accuracy plot from them
   (quick: out/bench-quick/PERFORMANCE.md, so a quick run never overwrites the published figures).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from rvc_compile.measure.bench import BenchSettings, format_table, run_bench, write_json  # noqa: E402
from rvc_compile.machine import cpu_info  # noqa: E402

FULL = {
    "size": "full",
    "seconds": (0.5, 2.0, 10.0, 30.0),
    "repeat": 8,
    "min_repeat": 2,  # 10 s: 2 runs after a warm-up run; 30 s: 2 runs, no warm-up (warmed at 10 s)
    "warmup_max_seconds": 10.0,
    "max_seconds": {"eager-bf16": 10.0, "naive-onnx": 10.0},
    "stream_passes": 4,
    "profile_runs": 3,
}
QUICK = {
    "size": "small",
    "seconds": (0.5, 2.0),
    "repeat": 3,
    "min_repeat": 2,
    "warmup_max_seconds": None,
    "max_seconds": {},
    "stream_passes": 2,
    "profile_runs": 1,
}
CHUNK_SECONDS = 0.25
CHECKPOINT_SEED = 7


class Suite:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.plan = QUICK if args.quick else FULL
        self.work = Path(args.work or (ROOT / "out" / ("bench-quick" if args.quick else "bench")))
        self.results = Path(args.results or (self.work / "results" if args.quick else ROOT / "benchmarks" / "results"))
        self.started = time.perf_counter()
        self.phases: dict[str, float] = {}

    def log(self, message: str) -> None:
        elapsed = time.perf_counter() - self.started
        print(f"[{elapsed / 60:5.1f} min] {message}", flush=True)

    def phase(self, name: str, start: float) -> None:
        self.phases[name] = round(time.perf_counter() - start, 1)
        self.log(f"{name}: {self.phases[name]:.0f} s")

    # -- steps ---------------------------------------------------------------------------------

    def checkpoint(self) -> Path:
        from rvc_compile.components.synthesizer.synthetic import make_checkpoint

        path = self.work / f"demo_voice_v2_40k_{self.plan['size']}.pth"
        if not path.exists():
            self.log(f"writing the {self.plan['size']}-size v2 40k demo checkpoint: {path}")
            make_checkpoint(path, version="v2", sample_rate="40k", f0=True, size=self.plan["size"], seed=CHECKPOINT_SEED)
        return path

    def build_all(self, checkpoint: Path) -> list[dict[str, Any]]:
        recipes = sorted((ROOT / "recipes").glob("*.yaml"))
        if self.args.recipes:
            recipes = [r for r in recipes if any(pattern in r.stem for pattern in self.args.recipes)]
        self.log(f"{len(recipes)} recipes in recipes/: {', '.join(r.stem for r in recipes)}")
        return [self.build_one(recipe, checkpoint) for recipe in recipes]

    def build_one(self, recipe_path: Path, checkpoint: Path) -> dict[str, Any]:
        from rvc_compile.artifact.manifest import sha256_file
        from rvc_compile.errors import RvcCompileError
        from rvc_compile.recipe.schema import load_recipe, recipe_sha256

        # The suite times every artifact itself: the build's own latency measurement runs once, at 2 s
        # (the recipes' 0.5/2/10 s with repeats would double the suite's time for the same figures).
        overrides = [f"source.checkpoint={checkpoint}", "latency.seconds=[2.0]", "latency.repeat=1", "latency.warmup=1", "latency.goals=[]"]
        record: dict[str, Any] = {"recipe": recipe_path.name}
        artifacts = self.work / "artifacts"
        try:
            recipe = load_recipe(recipe_path, overrides)
        except RvcCompileError as exc:
            return {**record, "status": "failed", "error": str(exc)}
        expected = artifacts / recipe.name / recipe.version
        record.update(name=recipe.name, version=recipe.version, backend=recipe.target.backend, precision=recipe.target.precision)
        manifest_path = expected / "manifest.json"
        if manifest_path.exists() and not self.args.rebuild:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("recipe_sha256") == recipe_sha256(recipe) and manifest.get("source", {}).get("sha256") == sha256_file(checkpoint):
                self.log(f"build {recipe_path.name}: reusing {expected} (same recipe and checkpoint)")
                return {**record, "status": "reused", "artifact": str(expected), **self._report_facts(expected)}
        self.log(f"build {recipe_path.name} -> {expected}")
        start = time.perf_counter()
        command = [sys.executable, "-m", "rvc_compile.cli", "build", str(recipe_path), *sum((["--set", o] for o in overrides), []),
                   "--out", str(artifacts), "--force"]
        process = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        wall = round(time.perf_counter() - start, 1)
        if process.returncode != 0:
            error = (process.stderr.strip().splitlines() or ["no output"])[-1]
            self.log(f"build {recipe_path.name}: FAILED in {wall:.0f} s: {error[:200]}")
            return {**record, "status": "failed", "error": error, "exit_code": process.returncode, "wall_s": wall}
        path = Path(process.stdout.strip().splitlines()[-1])
        self.log(f"build {recipe_path.name}: built in {wall:.0f} s")
        return {**record, "status": "built", "artifact": str(path), "wall_s": wall, **self._report_facts(path)}

    @staticmethod
    def _report_facts(path: Path) -> dict[str, Any]:
        try:
            report = json.loads((path / "report.json").read_text())
        except (OSError, ValueError):
            return {}
        return {"build_time_s": report.get("build_time_s"), "passes": [p.get("name") for p in report.get("passes", [])]}

    def bench(self, checkpoint: Path, artifacts: list[str], peaks: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        sources = [f"eager-fp32:{checkpoint}", f"eager-bf16:{checkpoint}", f"naive-onnx:{checkpoint}", *artifacts]
        settings = BenchSettings(
            seconds=self.plan["seconds"], threads=self.args.threads, repeat=self.plan["repeat"], min_repeat=self.plan["min_repeat"],
            max_seconds=dict(self.plan["max_seconds"]), warmup_max_seconds=self.plan["warmup_max_seconds"],
        )
        start = time.perf_counter()
        self.log(f"bench at {', '.join(f'{s:g}' for s in settings.seconds)} s: {len(sources)} sources")
        lengths = run_bench(sources, settings, peaks=peaks, log=self.log)
        print(format_table(lengths), flush=True)
        self.phase("bench lengths", start)
        start = time.perf_counter()
        streaming_settings = BenchSettings(
            chunk_seconds=CHUNK_SECONDS, stream_seconds=2.0, threads=self.args.threads, repeat=self.plan["stream_passes"],
        )
        self.log(f"bench streaming: {CHUNK_SECONDS} s chunks")
        streaming = run_bench(sources, streaming_settings, peaks=peaks, log=self.log)
        print(format_table(streaming), flush=True)
        self.phase("bench streaming", start)
        return lengths, streaming

    def profiles(self, checkpoint: Path, lengths: dict[str, Any]) -> dict[str, Any]:
        from rvc_compile.measure.profile import profile_artifact, profile_reference

        runs = self.plan["profile_runs"]
        out: dict[str, Any] = {}
        self.log("profiling the eager reference at 2 s")
        try:
            out["reference"] = profile_reference(checkpoint, seconds=2.0, threads=self.args.threads, repeat=runs)
        except Exception as exc:
            out["reference"] = {"error": f"{type(exc).__name__}: {exc}"}
        # The fastest artifact that the backend's profiler can run (OpenVINO's PERF_COUNT mode has failed
        # on a graph that runs fine without it): failures are recorded, and the next fastest is tried.
        failures = []
        for best in _artifacts_by_speed(lengths, 2.0):
            self.log(f"profiling the fastest artifact at 2 s: {best['label']}")
            try:
                out["best_artifact"] = {"label": best["label"], **profile_artifact(best["path"], seconds=2.0, threads=self.args.threads, repeat=runs)}
                break
            except Exception as exc:
                failures.append({"label": best["label"], "error": f"{type(exc).__name__}: {str(exc).splitlines()[-1][:300]}"})
                self.log(f"profiling {best['label']} failed: {failures[-1]['error']}")
        if failures:
            out["profile_failures"] = failures
        return out

    def sections(self, context: dict[str, Any]) -> dict[str, Any]:
        """Extra measurements other issues add as benchmarks/section_*.py with ``run(context) -> dict``."""
        out = {}
        for path in sorted((ROOT / "benchmarks").glob("section_*.py")):
            name = path.stem.removeprefix("section_")
            self.log(f"section {name}")
            start = time.perf_counter()
            try:
                spec = importlib.util.spec_from_file_location(f"benchmarks_section_{name}", path)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
                out[name] = {"status": "ok", "result": module.run(context)}
            except Exception as exc:
                out[name] = {"status": "failed", "error": f"{type(exc).__name__}: {str(exc)[:300]}", "traceback": traceback.format_exc()[-2000:]}
            self.phase(f"section {name}", start)
        return out

    # -- the whole suite -----------------------------------------------------------------------

    def run(self) -> Path:
        from rvc_compile.measure.floor import measure_peaks

        self.work.mkdir(parents=True, exist_ok=True)
        self.log(f"{'QUICK' if self.args.quick else 'full'} suite; work folder {self.work}; results {self.results}")
        start = time.perf_counter()
        checkpoint = self.checkpoint()
        builds = self.build_all(checkpoint)
        self.phase("builds", start)
        start = time.perf_counter()
        self.log(f"measuring the floor: peak fp32/bf16/int8 rates on {self.args.threads} threads")
        peaks = measure_peaks(self.args.threads)
        self.phase("floor", start)
        artifacts = [b["artifact"] for b in builds if b.get("artifact")]
        lengths, streaming = self.bench(checkpoint, artifacts, peaks)
        start = time.perf_counter()
        profiles = self.profiles(checkpoint, lengths)
        self.phase("profiles", start)
        context = {"root": ROOT, "checkpoint": checkpoint, "work": self.work, "threads": self.args.threads, "quick": self.args.quick,
                   "builds": builds, "log": self.log}
        sections = self.sections(context)
        run = {
            "schema": "rvc-compile-suite/1",
            "quick": bool(self.args.quick),
            "model_size": self.plan["size"],
            "checkpoint": checkpoint.name,
            "machine": {**cpu_info(), "threads": self.args.threads},
            "plan": {k: v for k, v in self.plan.items()},
            "chunk_seconds": CHUNK_SECONDS,
            "phases_s": self.phases,
            "wall_time_s": round(time.perf_counter() - self.started, 1),
        }
        self.results.mkdir(parents=True, exist_ok=True)
        write_json(run, self.results / "run.json")
        write_json({"builds": builds}, self.results / "builds.json")
        write_json(peaks, self.results / "floor.json")
        write_json(lengths, self.results / "bench_lengths.json")
        write_json(streaming, self.results / "bench_streaming.json")
        write_json(profiles, self.results / "profiles.json")
        write_json(sections, self.results / "sections.json")
        from report import render  # benchmarks/report.py, beside this file

        doc = Path(self.args.doc) if self.args.doc else (self.work / "PERFORMANCE.md" if self.args.quick else ROOT / "docs" / "PERFORMANCE.md")
        render(self.results, doc)
        self.log(f"done in {(time.perf_counter() - self.started) / 60:.1f} min: {doc}")
        return doc


def _artifacts_by_speed(lengths: dict[str, Any], seconds: float) -> list[dict[str, Any]]:
    artifacts = {s["label"]: s for s in lengths["sources"] if s["kind"] == "artifact"}
    rows = [r for r in lengths["results"] if r["source"] in artifacts and r["status"] == "ok" and abs(r["seconds"] - seconds) < 1e-6]
    return [artifacts[r["source"]] for r in sorted(rows, key=lambda r: r["p50_ms"])]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model, 0.5 and 2 s, few repeats: proves the pipeline in minutes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rebuild", action="store_true", help="rebuild artifacts even when an identical one exists")
    parser.add_argument("--recipes", nargs="*", help="only recipes whose file name contains one of these")
    parser.add_argument("--work", help="folder for the checkpoint and artifacts (default out/bench or out/bench-quick)")
    parser.add_argument("--results", help="folder for the JSON results (default benchmarks/results; quick: in the work folder)")
    parser.add_argument("--doc", help="where to write PERFORMANCE.md (default docs/PERFORMANCE.md; quick: in the work folder)")
    args = parser.parse_args(argv)
    Suite(args).run()


if __name__ == "__main__":
    main()
