"""``rvc-compile build``: recipe -> checkpoint -> torch passes -> capture -> ONNX passes -> backend -> artifact.

Every captured or transformed graph is checked against the fp32 PyTorch reference at the recipe's
check lengths; the artifact is assembled in a temporary folder and renamed into place only once its
accuracy (and latency) gates have passed, so a failed or killed build leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import __version__
from .artifact import ArtifactWriter
from .backends import get_backend
from .errors import BuildError, CheckpointError, GateFailure, RecipeError
from .golden import example_case, load_case, save_case
from .inputs import make_noise
from .machine import cpu_info, library_versions

LIBRARIES = ("torch", "onnx", "onnxscript", "onnxruntime", "onnxslim", "numpy")


@dataclasses.dataclass
class BuildResult:
    path: Path
    report: dict[str, Any]


def _ort_runner(onnx_path: Path, threads: int) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    from .backends.onnxruntime import Runner, session_options

    runner = Runner(onnx_path, session_options(threads, "all"))
    return runner.run


def _order_passes(recipe: Any) -> tuple[list[Any], list[Any]]:
    from .passes import PASSES

    torch_passes, onnx_passes = [], []
    for index, entry in enumerate(recipe.passes):
        cls = PASSES[entry.name]
        if cls.stage == "torch":
            if onnx_passes:
                raise RecipeError(f"passes[{index}]: {entry.name} runs on the torch model and must come before ONNX passes ({onnx_passes[0][0].name})")
            torch_passes.append((entry, cls(entry.params)))
        else:
            onnx_passes.append((entry, cls(entry.params)))
    return torch_passes, onnx_passes


def _frames_for(seconds: float, spec: Any, shapes: Any) -> int:
    if shapes.mode == "static":
        return int(shapes.chunk_frames)
    frames = int(round(seconds * spec.frames_per_second))
    return min(max(frames, shapes.min_frames), shapes.max_frames)


def _signature(spec: Any, names: list[str]) -> dict[str, Any]:
    shapes = {
        "features": ("float32", [1, "frames", spec.feature_dim]),
        "f0": ("float32", [1, "frames"]),
        "speaker": ("int64", [1]),
        "prior_noise": ("float32", [1, spec.inter_channels, "frames"]),
        "source_noise": ("float32", [1, f"frames*{spec.hop_length}"]),
    }
    return {
        "inputs": [{"name": n, "dtype": shapes[n][0], "shape": shapes[n][1]} for n in names],
        "outputs": [{"name": "audio", "dtype": "float32", "shape": [1, f"frames*{spec.hop_length}"]}],
    }


def build(recipe: Any, *, out_dir: Path | None = None, force: bool = False, cache_dir: Path | None = None, log: Callable[[str], None] = print) -> BuildResult:
    """Build ``recipe`` (a loaded ``recipe.Recipe``) into an artifact folder; return its path and report.

    ``cache_dir`` is the ``--cache-dir`` value (None: ``$RVC_COMPILE_CACHE`` or the user cache folder,
    see ``cache.resolve_cache_dir``); accepted here, not yet used by the stages.
    """
    import torch

    from .capture import export_onnx, multi_length_check
    from .checkpoint import load_checkpoint
    from .model import build_model, input_names
    from .passes import GraphState
    from .recipe import recipe_sha256, recipe_to_dict
    from .reference import flops_per_second, parameter_counts
    from .report import write_report

    started = time.perf_counter()
    backend = get_backend(recipe.target.backend)
    backend.check_target(recipe.target)
    torch_passes, onnx_passes = _order_passes(recipe)
    out_root = Path(out_dir) if out_dir is not None else Path(recipe.output_dir)

    with ArtifactWriter(out_root, recipe.name, recipe.version, force=force) as writer, tempfile.TemporaryDirectory(prefix="rvc-compile-") as scratch:
        workdir = Path(scratch)
        checkpoint = load_checkpoint(recipe.source.checkpoint, config_path=recipe.source.config)
        if recipe.source.sha256 and recipe.source.sha256 != checkpoint.sha256:
            raise CheckpointError(f"{checkpoint.path}: sha256 {checkpoint.sha256} does not match the recipe's pin source.sha256 {recipe.source.sha256}")
        spec = checkpoint.spec
        log(f"loaded {checkpoint.path.name}: {spec.version} {spec.sample_rate_tag} f0={int(spec.f0)} ({checkpoint.layout})")
        torch.set_num_threads(max(1, int(recipe.target.threads)))
        reference = build_model(spec, checkpoint.state_dict)

        def run_reference(inputs: dict[str, np.ndarray]) -> np.ndarray:
            arrays = dict(inputs)
            arrays.setdefault("speaker", np.array([state.fixed_inputs.get("speaker", 0)], dtype=np.int64))
            ordered = [torch.from_numpy(arrays[name]) for name in input_names(spec)]
            with torch.inference_mode():
                return reference(*ordered).numpy()

        state = GraphState(spec=spec, model=build_model(spec, checkpoint.state_dict), input_names=input_names(spec))
        pass_records = []
        def record(entry: Any, stage: str, notes_before: int) -> None:
            pass_records.append({
                "name": entry.name, "stage": stage, "params": dataclasses.asdict(entry.params),
                "notes": "; ".join(state.notes[notes_before:]),
            })

        for entry, graph_pass in torch_passes:
            notes_before = len(state.notes)
            state = graph_pass.run(state, workdir)
            record(entry, "torch", notes_before)
            log(f"pass {entry.name}: done")

        shapes = recipe.shapes
        static = shapes.chunk_frames if shapes.mode == "static" else None
        lengths = shapes.check_lengths()
        speaker = int(state.fixed_inputs.get("speaker", recipe.golden.speaker))
        captured = export_onnx(
            state.model, spec, state.input_names, workdir / "captured.onnx", exporter=recipe.capture.exporter,
            opset=recipe.capture.opset, min_frames=shapes.min_frames, max_frames=shapes.max_frames, static_frames=static,
        )
        state.onnx_path = captured
        checks = multi_length_check("capture", _ort_runner(captured, recipe.target.threads), run_reference, spec, state.input_names, lengths, speaker=speaker)
        log(f"capture ({recipe.capture.exporter}): checked at {lengths} frames")
        for entry, graph_pass in onnx_passes:
            notes_before = len(state.notes)
            state = graph_pass.run(state, workdir)
            checks += multi_length_check(entry.name, _ort_runner(state.onnx_path, recipe.target.threads), run_reference, spec, state.input_names, lengths, speaker=speaker)
            record(entry, "onnx", notes_before)
            log(f"pass {entry.name}: checked at {lengths} frames")

        backend_section = backend.build(state.onnx_path, recipe.target, writer.dir)
        log(f"backend {backend.NAME}: built")

        golden_dir = writer.dir / "golden"
        golden_dir.mkdir()
        golden = []
        for index, seconds in enumerate(recipe.golden.seconds):
            frames = _frames_for(seconds, spec, shapes)
            case = example_case(spec.feature_dim, frames, seed=index)
            draws = make_noise(recipe.golden.noise, frames, inter_channels=spec.inter_channels, hop_length=spec.hop_length, has_f0=spec.f0)
            arrays = {"features": case["features"][None], "f0": case["f0"][None], "speaker": np.array([speaker], dtype=np.int64), **draws}
            arrays = {name: arrays[name] for name in state.input_names}
            arrays["reference"] = run_reference(arrays)
            name = f"golden-{seconds:g}s"
            save_case(golden_dir / f"{name}.npz", arrays)
            golden.append({"name": name, "file": f"golden/{name}.npz", "frames": frames, "seconds": frames / spec.frames_per_second, "speaker": speaker, "noise": recipe.golden.noise})

        manifest = {
            "name": recipe.name,
            "version": recipe.version,
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "rvc_compile_version": __version__,
            "library_versions": library_versions(*LIBRARIES),
            "source": {
                "checkpoint": checkpoint.path.name,
                "sha256": checkpoint.sha256,
                "layout": checkpoint.layout,
                "stored_dtype": checkpoint.stored_dtype,
                **spec.to_dict(),
            },
            "recipe": recipe_to_dict(recipe),
            "recipe_sha256": recipe_sha256(recipe),
            "target": dataclasses.asdict(recipe.target),
            "backend": backend_section,
            "model": {
                "sample_rate": spec.sampling_rate,
                "hop_length": spec.hop_length,
                "feature_dim": spec.feature_dim,
                "f0": spec.f0,
                "inter_channels": spec.inter_channels,
                "n_speakers": spec.n_speakers,
                "fixed_speaker": state.fixed_inputs.get("speaker"),
                "frames": {"min": static or shapes.min_frames, "opt": static or shapes.opt_frames, "max": static or shapes.max_frames, "static": static is not None},
            },
            "signature": _signature(spec, state.input_names),
            "passes": pass_records,
            "golden": golden,
            "accuracy_budget": dataclasses.asdict(recipe.accuracy),
            "latency": {
                "seconds": [s for s in recipe.latency.seconds],
                "repeat": recipe.latency.repeat,
                "warmup": recipe.latency.warmup,
                "goals": [dataclasses.asdict(goal) for goal in recipe.latency.goals],
            },
            "report": {"json": "report.json", "markdown": "report.md"},
        }

        log("measuring accuracy and latency in a fresh runtime process")
        evaluation, samples = _evaluate_in_subprocess(writer.dir, manifest, workdir)
        flops = flops_per_second(spec, checkpoint.state_dict)
        model_bytes = sum(p.stat().st_size for p in writer.dir.rglob("*") if p.is_file() and not p.is_relative_to(golden_dir))
        report = {
            "artifact": {
                "name": recipe.name, "version": recipe.version, "backend": backend.NAME, "device": recipe.target.device,
                "precision": recipe.target.precision, "size_bytes": model_bytes, "created": manifest["created"],
            },
            "machine": {**cpu_info(), "threads": recipe.target.threads, "libraries": manifest["library_versions"]},
            "source": {
                "checkpoint": checkpoint.path.name, "sha256": checkpoint.sha256, "version": spec.version,
                "sample_rate": spec.sampling_rate, "f0": spec.f0,
                "parameters": parameter_counts(checkpoint.state_dict)["total"],
                "gflop_per_second_of_audio": round(flops["total"] / 1e9, 3),
            },
            "accuracy": {**evaluation["accuracy"], "noise": recipe.golden.noise},
            "latency": evaluation["latency"],
            "multi_length_checks": checks,
            "passes": pass_records,
            "build_time_s": round(time.perf_counter() - started, 1),
        }
        failures = evaluation["accuracy"]["failures"] + evaluation["latency"]["failures"]
        if failures:
            raise GateFailure(f"{recipe.recipe_path}: build gates failed ({len(failures)}): {'; '.join(failures[:3])}")
        golden_case = load_case(writer.dir / golden[-1]["file"])
        candidate = _candidate_output(writer.dir, manifest, golden_case)
        manifest["report"]["files"] = write_report(
            writer.dir, report, reference_audio=golden_case["reference"].reshape(-1), candidate_audio=candidate,
            sample_rate=spec.sampling_rate, latency_samples=samples,
        )
        path = writer.commit(manifest)
    log(f"built {path} in {time.perf_counter() - started:.1f} s")
    return BuildResult(path=path, report=report)


def _evaluate_in_subprocess(artifact_dir: Path, manifest: dict[str, Any], workdir: Path) -> tuple[dict[str, Any], dict[str, list[float]]]:
    manifest_path, result_path = workdir / "manifest-draft.json", workdir / "evaluation.json"
    manifest_path.write_text(json.dumps(manifest))
    process = subprocess.run(
        [sys.executable, "-m", "rvc_compile.evaluate", str(artifact_dir), str(manifest_path), str(result_path)],
        capture_output=True, text=True,
    )
    if process.returncode != 0 or not result_path.exists():
        detail = (process.stderr.strip().splitlines() or ["no output"])[-1]
        raise BuildError(f"measuring the built artifact failed: {detail[:300]}")
    data = json.loads(result_path.read_text())
    return data["result"], data["samples"]


def _candidate_output(artifact_dir: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> np.ndarray:
    backend = get_backend(manifest["backend"]["name"], for_build=False)
    runner = backend.load(artifact_dir, manifest["backend"])
    return np.asarray(runner.run(arrays)).reshape(-1)
