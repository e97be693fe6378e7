"""``rvc-compile build``: recipe -> checkpoint -> torch passes -> capture -> ONNX passes -> backend -> artifact.

Every captured or transformed graph is checked against the fp32 PyTorch reference at the recipe's
check lengths; the artifact is assembled in a temporary folder and renamed into place only once its
accuracy (and latency) gates have passed, so a failed or killed build leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
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


def _calibration_feeds(recipe: Any, spec: Any, names: list[str], static: int | None, cache_dir: Path | None) -> list[dict[str, np.ndarray]]:
    """The recipe's calibration cases as graph feeds: seeded noise draws, host-side excitation, and cut
    or tiled to the chunk length of a static graph."""
    from .calibration import load_calibration
    from .inputs import graph_feed

    calibration = load_calibration(recipe.calibration, spec, cache_dir=cache_dir)
    feeds = []
    for index, case in enumerate(calibration.cases):
        case = dict(case)
        if static is not None:
            repeat = -(-static // case["features"].shape[0])
            case = {name: np.concatenate([array] * repeat)[:static] for name, array in case.items()}
        frames = case["features"].shape[0]
        draws = make_noise(f"seed:{1000 + index}", frames, inter_channels=spec.inter_channels, hop_length=spec.hop_length, has_f0=spec.f0)
        arrays = {name: array[None] for name, array in case.items()}
        arrays.update(speaker=np.array([recipe.golden.speaker], dtype=np.int64), **draws)
        feeds.append(graph_feed(arrays, names, hop_length=spec.hop_length, sample_rate=spec.sampling_rate))
    return feeds


def _precision_plan(recipe: Any, spec: Any, state: Any, static: int | None, cache_dir: Path | None) -> Any:
    import onnx

    from .layers import resolve, weighted_layers
    from .precision import PrecisionPlan

    policy = recipe.precision_policy
    precision = recipe.target.precision
    layers = weighted_layers(onnx.load(str(state.onnx_path), load_external_data=False))
    keep = resolve(policy.keep_fp32, layers, "precision_policy.keep_fp32")
    if precision != "fp32" and spec.f0 and "excitation" not in state.input_names:
        raise RecipeError(
            f"passes: a {precision} target needs the host_source pass for this pitch model (the NSF sine source's "
            "phase accumulation must stay out of the low-precision graph)"
        )
    feeds = _calibration_feeds(recipe, spec, state.input_names, static, cache_dir) if precision == "int8" else []
    return PrecisionPlan(
        precision=precision, layers=layers, keep_fp32=keep, calibration=feeds,
        calibration_method=policy.calibration_method, per_channel=policy.per_channel,
    )


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
        "excitation": ("float32", [1, f"frames*{spec.hop_length}"]),
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
    from .model import build_model
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

        reference_outputs: dict[str, np.ndarray] = {}

        def run_reference(inputs: dict[str, np.ndarray]) -> np.ndarray:
            """The fp32 reference on user-level inputs (features, f0, speaker, prior_noise, source_noise).

            Every stage is checked on the same inputs, so each reference output is computed once."""
            key = hashlib.sha256(b"".join(np.ascontiguousarray(inputs[name]).tobytes() for name in reference.input_names)).hexdigest()
            if key not in reference_outputs:
                ordered = [torch.from_numpy(inputs[name]) for name in reference.input_names]
                with torch.inference_mode():
                    reference_outputs[key] = reference(*ordered).numpy()
            return reference_outputs[key]

        model = build_model(spec, checkpoint.state_dict)
        state = GraphState(spec=spec, model=model, input_names=model.input_names)
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

        plan = _precision_plan(recipe, spec, state, static, cache_dir)
        log(f"precision {plan.precision}: {len(plan.low_precision_layers)} of {len(plan.layers)} layers in {plan.precision}"
            + (f", {len(plan.keep_fp32)} kept fp32" if plan.keep_fp32 else ""))
        backend_section = backend.build(state.onnx_path, recipe.target, writer.dir, plan, shapes=shapes, workdir=workdir)
        built_runner = backend.load(writer.dir, backend_section, threads=recipe.target.threads)
        stage = f"backend {backend.NAME} {plan.precision}"
        budget = dataclasses.asdict(recipe.accuracy) if plan.precision != "fp32" else None
        checks += multi_length_check(stage, built_runner.run, run_reference, spec, state.input_names, lengths, speaker=speaker, budget=budget)
        del built_runner
        log(f"backend {backend.NAME}: built, checked at {lengths} frames")

        golden_dir = writer.dir / "golden"
        golden_dir.mkdir()
        golden = []
        for index, seconds in enumerate(recipe.golden.seconds):
            frames = _frames_for(seconds, spec, shapes)
            case = example_case(spec.feature_dim, frames, seed=index)
            draws = make_noise(recipe.golden.noise, frames, inter_channels=spec.inter_channels, hop_length=spec.hop_length, has_f0=spec.f0)
            # User-level inputs: verify runs them through the runtime's whole path (host-side source included).
            arrays = {"features": case["features"][None], "speaker": np.array([speaker], dtype=np.int64), **draws}
            if spec.f0:
                arrays["f0"] = case["f0"][None]
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
            "precision": plan.summary(),
            "model": {
                "sample_rate": spec.sampling_rate,
                "hop_length": spec.hop_length,
                "feature_dim": spec.feature_dim,
                "f0": spec.f0,
                "inter_channels": spec.inter_channels,
                "n_speakers": spec.n_speakers,
                "fixed_speaker": state.fixed_inputs.get("speaker"),
                "host_source": "excitation" in state.input_names,
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
            "precision": plan.summary(),
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
    from .evaluate import run_case
    from .runtime import CompiledVoice

    backend = get_backend(manifest["backend"]["name"], for_build=False)
    runner = backend.load(artifact_dir, manifest["backend"])
    return run_case(CompiledVoice(Path(artifact_dir), manifest, runner, 0.0), arrays)
