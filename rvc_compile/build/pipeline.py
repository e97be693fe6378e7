"""``rvc-compile build``: recipe -> checkpoint -> torch passes -> capture -> ONNX passes -> precision and
backend -> artifact.

Every stage runs through the content-addressed build cache (``build_stages``), keyed by everything its
output depends on. Every captured or transformed graph is checked against the fp32 PyTorch reference at
the recipe's check lengths (fp32 graphs to 1e-4 relative error, lower precisions against the accuracy
budget). The artifact is assembled in a temporary folder and renamed into place only once its accuracy
(and latency) gates have passed, so a failed or killed build leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import __version__
from ..artifact.manifest import ArtifactWriter, MANIFEST, MANIFEST_DIGEST
from ..backends import get_backend
from ..errors import BuildError, CheckpointError, GateFailure, RecipeError
from ..artifact.golden import example_case, load_case, save_case
from ..components.synthesizer.inputs import make_noise
from ..machine import cpu_info, emulation_env, int8_weight_bits, library_versions, machine_isa, resolve_target_cpu

LIBRARIES = ("torch", "onnx", "onnxscript", "onnxruntime", "onnxslim", "openvino", "nncf", "numpy")
CAPTURE_LIBRARIES = ("torch", "onnx", "onnxscript", "numpy")
BACKEND_LIBRARIES = {
    "onnxruntime": ("onnx", "onnxruntime", "onnxconverter-common", "numpy"),
    "openvino": ("onnx", "openvino", "nncf", "numpy"),
}
GRAPH_FILE = "model.onnx"
DERIVED_FILE = "reference.pt"  # capture entry: the derived model's spec and weights (after prune)


@dataclasses.dataclass
class BuildResult:
    path: Path
    report: dict[str, Any]
    cache: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # stage, key, hit


def _ort_runner(onnx_path: Path, threads: int) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    from ..backends.onnxruntime import Runner, session_options

    runner = Runner(onnx_path, session_options(threads, "all"))
    return runner.run


def _order_passes(recipe: Any) -> tuple[list[Any], list[Any]]:
    from ..passes import PASSES

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


def _pass_params(entries: list[tuple[Any, Any]]) -> list[dict[str, Any]]:
    return [{"name": entry.name, **dataclasses.asdict(entry.params)} for entry, _ in entries]


def _frames_for(seconds: float, spec: Any, shapes: Any, windowed: bool = False) -> int:
    """Frames of a golden case: the chunk of a static graph; else clamped to the graph's range, except
    that a windowed runtime takes any length (a golden case past the window checks the windows)."""
    if shapes.mode == "static":
        return int(shapes.chunk_frames)
    frames = max(int(round(seconds * spec.frames_per_second)), shapes.min_frames)
    return frames if windowed else min(frames, shapes.max_frames)


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


class _Reference:
    """The fp32 eager reference, built on first use (a fully cached build never needs it).

    It is the checkpoint's model, or the model a torch pass derived from it when that pass changes
    the architecture itself (``prune``): the artifact implements that model, and is checked against it.
    Every stage is checked on the same inputs, so each reference output is computed once."""

    def __init__(self, spec: Any, state_dict: dict[str, Any], threads: int, *, stages: Any = None, model_key: str | None = None):
        self.spec, self.state_dict, self.threads = spec, state_dict, threads
        self.stages, self.model_key = stages, model_key  # with both, outputs are shared through the build cache
        self._model = None
        self._outputs: dict[str, np.ndarray] = {}

    def _compute(self, inputs: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
        import torch

        from ..components.synthesizer.model import build_model

        if self._model is None:
            torch.set_num_threads(max(1, self.threads))
            self._model = build_model(self.spec, self.state_dict)
        with torch.inference_mode():
            return self._model(*[torch.from_numpy(inputs[name]) for name in names]).numpy()

    def p50_ms(self, inputs: dict[str, np.ndarray], *, repeat: int, warmup: int) -> float:
        """Median wall time of the eager fp32 reference on ``inputs`` (the baseline of speed-up goals)."""
        from ..components.synthesizer.model import input_names

        names = input_names(self.spec)
        for _ in range(warmup):
            self._compute(inputs, names)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            self._compute(inputs, names)
            times.append(time.perf_counter() - start)
        return float(np.median(times) * 1000.0)

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        from ..components.synthesizer.model import input_names

        names = input_names(self.spec)
        key = hashlib.sha256(b"".join(np.ascontiguousarray(inputs[name]).tobytes() for name in names)).hexdigest()
        if key in self._outputs:
            return self._outputs[key]
        if self.stages is None or self.model_key is None:
            self._outputs[key] = self._compute(inputs, names)
            return self._outputs[key]
        # Every recipe built from one checkpoint checks against the same reference outputs: compute
        # each once per cache (an eager run of 10 s of audio costs as much as the rest of a check).
        from .stages import code_fingerprint
        from ..cache.store import stage_key

        cache_key = stage_key("reference-output", inputs={"model": self.model_key, "inputs": key},
                              libraries={**library_versions("torch", "numpy"), "rvc_compile_code": code_fingerprint()})

        def produce(folder: Path) -> None:
            np.save(folder / "audio.npy", self._compute(inputs, names))

        entry, _ = self.stages.store.get_or_create(cache_key, produce, stage="reference-output")
        with entry:
            self._outputs[key] = np.load(entry.file("audio.npy"), allow_pickle=False)
        return self._outputs[key]


def torch_graph(checkpoint: Any, torch_passes: list[tuple[Any, Any]], workdir: Path) -> tuple[Any, list[dict[str, Any]], dict[str, Any] | None]:
    """The torch model after the recipe's torch-stage passes, their records, and — when a pass changed
    the architecture (``prune``) — the plain weights of the model it derived (the new fp32 reference)."""
    from ..components.synthesizer.model import build_model
    from ..passes import GraphState

    model = build_model(checkpoint.spec, checkpoint.state_dict)
    state = GraphState(spec=checkpoint.spec, model=model, input_names=model.input_names)
    records, derived = [], None
    for entry, graph_pass in torch_passes:
        notes_before = len(state.notes)
        spec_before = state.spec
        state = graph_pass.run(state, workdir)
        record = {"name": entry.name, "stage": "torch", "params": dataclasses.asdict(entry.params), "notes": "; ".join(state.notes[notes_before:])}
        if entry.name in state.records:
            record["record"] = state.records[entry.name]
        records.append(record)
        if state.spec != spec_before:
            # Taken right after the pass: later rewrites (polyphase) change module structure, not the model.
            derived = {"spec": state.spec.to_dict(), "state_dict": {k: v.detach().clone() for k, v in state.model.state_dict().items()}}
    return state, records, derived


def _calibration_feeds(recipe: Any, spec: Any, calibration: Any, names: list[str], static: int | None) -> list[dict[str, np.ndarray]]:
    """Calibration cases as graph feeds: seeded noise draws, host-side excitation, and cut or tiled to
    the chunk length of a static graph."""
    from ..components.synthesizer.inputs import graph_feed

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


class _Build:
    """One build: the stages in order, each through the cache."""

    def __init__(self, recipe: Any, stages: Any, workdir: Path, log: Callable[[str], None], choice: dict[str, Any] | None = None):
        self.recipe, self.stages, self.workdir, self.log = recipe, stages, workdir, log
        self.choice = choice  # precision: auto's candidates so far
        self.backend = get_backend(recipe.target.backend)
        # The CPU class the artifact is for, and how its checks run on this machine: natively, or (a lower
        # class, on a backend whose kernels obey oneDNN's cap) in child processes that dispatch as on it.
        self.target_isa, self.machine_isa = resolve_target_cpu(recipe.target.cpu), machine_isa()
        self.emulation = emulation_env(self.target_isa, self.machine_isa) if getattr(self.backend, "ISA_EMULATION", False) else {}
        self.torch_passes, self.onnx_passes = _order_passes(recipe)
        shapes = recipe.shapes
        self.shapes = shapes
        self.static = shapes.chunk_frames if shapes.mode == "static" else None
        self.lengths = shapes.check_lengths()
        self.threads = int(recipe.target.threads)

    # -- stages ----------------------------------------------------------------------------------

    def load(self) -> None:
        from ..components.synthesizer.checkpoint import load_checkpoint

        recipe = self.recipe
        checkpoint = load_checkpoint(recipe.source.checkpoint, config_path=recipe.source.config)
        if recipe.source.sha256 and recipe.source.sha256 != checkpoint.sha256:
            raise CheckpointError(f"{checkpoint.path}: sha256 {checkpoint.sha256} does not match the recipe's pin source.sha256 {recipe.source.sha256}")
        self.checkpoint, self.spec = checkpoint, checkpoint.spec
        self.state_dict = checkpoint.state_dict
        spec = self.spec
        self.log(f"loaded {checkpoint.path.name}: {spec.version} {spec.sample_rate_tag} f0={int(spec.f0)} ({checkpoint.layout})")
        self.source_inputs = {"checkpoint": checkpoint.sha256}
        if recipe.source.config is not None:
            from ..components.synthesizer.checkpoint import sha256_file

            self.source_inputs["config"] = sha256_file(Path(recipe.source.config))
        model_key = hashlib.sha256(json.dumps(self.source_inputs, sort_keys=True).encode()).hexdigest()
        self.reference = _Reference(checkpoint.spec, checkpoint.state_dict, self.threads, stages=self.stages, model_key=model_key)

    def capture(self) -> None:
        from ..capture.export import export_onnx, multi_length_check

        recipe, shapes = self.recipe, self.shapes

        def produce(folder: Path) -> dict[str, Any]:
            import torch

            state, records, derived = torch_graph(self.checkpoint, self.torch_passes, self.workdir)
            for record in records:
                self.log(f"pass {record['name']}: done")
            if derived is not None:
                torch.save(derived, folder / DERIVED_FILE)
                self._use_derived(derived)
            spec = self.spec
            path = export_onnx(
                state.model, spec, state.input_names, folder / GRAPH_FILE, exporter=recipe.capture.exporter,
                opset=recipe.capture.opset, min_frames=shapes.min_frames, max_frames=shapes.max_frames, static_frames=self.static,
            )
            speaker = int(state.fixed_inputs.get("speaker", recipe.golden.speaker))
            checks = multi_length_check("capture", _ort_runner(path, self.threads), self.reference, spec, state.input_names, self.lengths, speaker=speaker)
            self.log(f"capture ({recipe.capture.exporter}): checked at {self.lengths} frames")
            return {"input_names": state.input_names, "fixed_inputs": state.fixed_inputs, "passes": records, "checks": checks}

        entry = self.stages.run(
            "capture", produce, inputs=self.source_inputs,
            params={"passes": _pass_params(self.torch_passes), "capture": recipe.capture, "frames": [shapes.min_frames, shapes.max_frames, self.static], "lengths": self.lengths, "speaker": recipe.golden.speaker},
            libraries=CAPTURE_LIBRARIES,
        )
        if DERIVED_FILE in entry.files and self.spec == self.checkpoint.spec:  # a cache hit: read it back
            import torch

            self._use_derived(torch.load(entry.file(DERIVED_FILE), map_location="cpu", weights_only=True))
        self.input_names: list[str] = entry.meta["input_names"]
        self.fixed_inputs: dict[str, Any] = entry.meta["fixed_inputs"]
        self.pass_records: list[dict[str, Any]] = list(entry.meta["passes"])
        self.checks: list[dict[str, Any]] = list(entry.meta["checks"])
        self.speaker = int(self.fixed_inputs.get("speaker", recipe.golden.speaker))
        self.graph_key, self.graph_entry = entry.key, entry

    def _use_derived(self, derived: dict[str, Any]) -> None:
        from ..components.synthesizer.spec import ModelSpec

        self.spec = ModelSpec.from_dict(derived["spec"], source=f"{self.checkpoint.path} (after the recipe's torch passes)")
        self.state_dict = derived["state_dict"]
        digest = hashlib.sha256()
        for name in sorted(self.state_dict):
            digest.update(name.encode())
            digest.update(self.state_dict[name].detach().cpu().contiguous().numpy().tobytes())
        self.reference = _Reference(self.spec, self.state_dict, self.threads, stages=self.stages, model_key=digest.hexdigest())
        self.log("reference: the model the torch passes derived (its fp32 output is what the artifact must match)")

    def onnx_passes_stage(self) -> None:
        from ..capture.export import multi_length_check
        from ..passes import GraphState

        for entry_spec, graph_pass in self.onnx_passes:
            source = self.graph_entry

            def produce(folder: Path, source: Any = source, entry_spec: Any = entry_spec, graph_pass: Any = graph_pass) -> dict[str, Any]:
                scratch = Path(tempfile.mkdtemp(dir=self.workdir))
                state = GraphState(spec=self.spec, onnx_path=source.file(GRAPH_FILE), input_names=self.input_names, fixed_inputs=dict(self.fixed_inputs))
                state = graph_pass.run(state, scratch)
                shutil.copyfile(state.onnx_path, folder / GRAPH_FILE)  # never move the cached input away
                checks = multi_length_check(entry_spec.name, _ort_runner(folder / GRAPH_FILE, self.threads), self.reference, self.spec, self.input_names, self.lengths, speaker=self.speaker)
                self.log(f"pass {entry_spec.name}: checked at {self.lengths} frames")
                record = {"name": entry_spec.name, "stage": "onnx", "params": dataclasses.asdict(entry_spec.params), "notes": "; ".join(state.notes)}
                return {"record": record, "checks": checks}

            entry = self.stages.run(
                f"pass:{entry_spec.name}", produce, inputs={"graph": self.graph_key},
                params={"params": entry_spec.params, "lengths": self.lengths, "speaker": self.speaker},
                libraries=("onnx", "onnxslim", "onnxsim", "onnxruntime", "numpy"),
            )
            self.pass_records.append(entry.meta["record"])
            self.checks += entry.meta["checks"]
            self.graph_key, self.graph_entry = entry.key, entry

    def precision_and_backend(self) -> None:
        import onnx

        from ..cache.store import cpu_device
        from ..precision.layers import resolve, weighted_layers

        recipe, spec = self.recipe, self.spec
        precision, policy = recipe.target.precision, recipe.precision_policy
        graph = self.graph_entry.file(GRAPH_FILE)
        layers = weighted_layers(onnx.load(str(graph), load_external_data=False))
        keep = resolve(policy.keep_fp32, layers, "precision_policy.keep_fp32")
        if precision != "fp32" and spec.f0 and "excitation" not in self.input_names:
            raise RecipeError(
                f"passes: a {precision} target needs the host_source pass for this pitch model (the NSF sine source's "
                "phase accumulation must stay out of the low-precision graph)"
            )
        inputs = {"graph": self.graph_key}
        calibration = None
        if precision == "int8":
            from ..precision.calibration import load_calibration

            calibration = load_calibration(recipe.calibration, spec, cache_dir=self.stages.root, log=self.log)
            inputs["calibration"] = calibration.sha256
            self.log(f"calibration: {calibration.source} ({len(calibration.cases)} cases{', cached' if calibration.cache_hit else ''})")

        def produce(folder: Path) -> dict[str, Any]:
            from ..precision.plan import PrecisionPlan

            feeds = _calibration_feeds(recipe, spec, calibration, self.input_names, self.static) if calibration is not None else []
            plan = PrecisionPlan(
                precision=precision, layers=layers, keep_fp32=keep, calibration=feeds,
                calibration_method=policy.calibration_method, per_channel=policy.per_channel,
                weight_bits=int8_weight_bits(self.target_isa),
            )
            self.log(f"precision {precision}: {len(plan.low_precision_layers)} of {len(layers)} layers in {precision}" + (f", {len(keep)} kept fp32" if keep else ""))
            meta: dict[str, Any] = {}
            if policy.accuracy_aware:
                plan, meta["accuracy_aware"] = self._accuracy_aware(plan, graph, feeds)
            section = self.backend.build(graph, recipe.target, folder, plan, shapes=self.shapes, workdir=self.workdir)
            checks = self._check_backend(folder, section, plan)
            return {**meta, "section": section, "plan": plan.summary(), "checks": checks}

        entry = self.stages.run(
            f"backend:{self.backend.NAME}", produce, inputs=inputs,
            params={"target": recipe.target, "policy": policy, "shapes": self.shapes, "lengths": self.lengths, "accuracy": recipe.accuracy, "speaker": self.speaker},
            libraries=BACKEND_LIBRARIES.get(self.backend.NAME, ()), device=cpu_device(),
        )
        self.backend_section = entry.meta["section"]
        self.plan_summary = entry.meta["plan"]
        self.accuracy_aware = entry.meta.get("accuracy_aware")
        self.checks += entry.meta["checks"]
        self.backend_key, self.backend_entry = entry.key, entry

    def _check_backend(self, folder: Path, section: dict[str, Any], plan: Any) -> list[dict[str, Any]]:
        from ..capture.export import multi_length_check

        if self.emulation:
            from ..backends.emulated import EmulatedRunner

            runner = EmulatedRunner(folder, section, self.threads, self.emulation)
        else:
            runner = self.backend.load(folder, section, threads=self.threads)
        stage = f"backend {self.backend.NAME} {plan.precision}" + (f" (as on {self.target_isa.name})" if self.emulation else "")
        budget = dataclasses.asdict(self.recipe.accuracy) if plan.precision != "fp32" else None
        checks = multi_length_check(stage, runner.run, self.reference, self.spec, self.input_names, self.lengths, speaker=self.speaker, budget=budget)
        self.log(f"{stage}: checked at {self.lengths} frames")
        return checks

    def _accuracy_aware(self, plan: Any, graph: Path, feeds: list[dict[str, np.ndarray]]) -> tuple[Any, dict[str, Any]]:
        """Quantize, and while the budget fails keep more of the most sensitive layers in fp32."""
        from ..capture.export import graph_inputs
        from ..precision.search import Trial, search
        from ..precision.sensitivity import layer_flops, layer_sensitivity

        policy = self.recipe.precision_policy
        trial_root = self.workdir / "accuracy-aware"

        def trial(extra: list[str]) -> Trial:
            candidate = dataclasses.replace(plan, keep_fp32=[name for name in plan.layers if name in set(plan.keep_fp32) | set(extra)])
            folder = trial_root / f"keep-{len(extra)}"
            folder.mkdir(parents=True, exist_ok=True)
            section = self.backend.build(graph, self.recipe.target, folder, candidate, shapes=self.shapes, workdir=self.workdir)
            try:
                checks = self._check_backend(folder, section, candidate)
            except GateFailure as exc:
                return Trial(extra, False, str(exc).split("(", 1)[-1].rstrip(")"))
            return Trial(extra, True, None, checks)

        first = trial([])
        if first.passed:
            self.log("accuracy-aware: every layer quantized passes the budget")
            return plan, {"extra_fp32": [], "sensitivity": {}, "trials": [dataclasses.asdict(first)]}
        self.log(f"accuracy-aware: all-int8 fails ({first.failure}); measuring per-layer sensitivity")
        state, _, _ = torch_graph(self.checkpoint, self.torch_passes, self.workdir)
        validation = [graph_inputs(self.spec, self.input_names, self.static or self.shapes.opt_frames, seed=500, speaker=self.speaker)]
        sensitivity = layer_sensitivity(
            state.model, self.input_names, feeds[:4], validation, self.spec.sampling_rate, per_channel=plan.per_channel,
            layers=[name for name in plan.low_precision_layers],
        )
        flops = layer_flops(state.model, self.input_names, validation[0], seconds=validation[0]["features"].shape[1] / self.spec.frames_per_second)
        ranking = sorted(sensitivity, key=lambda name: sensitivity[name]["snr_db"])
        result = search(ranking, lambda extra: first if not extra else trial(extra), max_layers=policy.max_fp32_layers, log=self.log)
        kept = result.extra_fp32
        self.log(f"accuracy-aware: {len(kept)} extra layer(s) kept fp32: {', '.join(kept[:6])}{' ...' if len(kept) > 6 else ''}")
        final = dataclasses.replace(plan, keep_fp32=[name for name in plan.layers if name in set(plan.keep_fp32) | set(kept)])
        layers = {
            name: {**sensitivity[name], "gflop_per_second": round(flops.get(name, 0.0) / 1e9, 4), "precision": "fp32" if name in kept else plan.precision}
            for name in ranking
        }
        return final, {"extra_fp32": kept, "sensitivity": layers, "trials": [dataclasses.asdict(t) for t in result.trials]}

    def assemble(self, writer: Any) -> dict[str, Any]:
        """Golden set, manifest, evaluation in a fresh runtime process, report: the artifact stage."""
        recipe, spec = self.recipe, self.spec

        def produce(folder: Path) -> dict[str, Any]:
            from ..recipe.schema import recipe_sha256, recipe_to_dict
            from ..components.synthesizer.reference import flops_per_second, parameter_counts
            from ..artifact.report import write_report

            from .stages import copy_files

            copy_files(self.backend_entry, folder)
            golden = self._golden(folder)
            manifest = self._manifest(golden, recipe_to_dict(recipe), recipe_sha256(recipe))
            self.log("measuring accuracy and latency in a fresh runtime process")
            evaluation, samples = _evaluate_in_subprocess(folder, manifest, self.workdir, env=self.emulation)
            self._speedup_goals(evaluation["latency"])
            flops = flops_per_second(spec, self.state_dict)
            golden_dir = folder / "golden"
            model_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_relative_to(golden_dir))
            report = {
                "artifact": {
                    "name": recipe.name, "version": recipe.version, "backend": self.backend.NAME, "device": recipe.target.device,
                    "precision": recipe.target.precision, "size_bytes": model_bytes, "created": manifest["created"],
                },
                "machine": {**cpu_info(), "threads": recipe.target.threads, "libraries": manifest["library_versions"]},
                "isa": manifest["isa"],
                **({"precision_choice": self.choice} if self.choice else {}),
                "source": {
                    "checkpoint": self.checkpoint.path.name, "sha256": self.checkpoint.sha256, "version": spec.version,
                    "sample_rate": spec.sampling_rate, "f0": spec.f0,
                    "parameters": parameter_counts(self.state_dict)["total"],
                    "gflop_per_second_of_audio": round(flops["total"] / 1e9, 3),
                },
                "accuracy": {**evaluation["accuracy"], "noise": recipe.golden.noise},
                "latency": evaluation["latency"],
                "multi_length_checks": self.checks,
                "passes": self.pass_records,
                "precision": {**self.plan_summary, "accuracy_aware": self.accuracy_aware},
                "build_time_s": round(time.perf_counter() - self.started, 1),
            }
            failures = evaluation["accuracy"]["failures"] + evaluation["latency"]["failures"]
            if failures:
                raise GateFailure(f"{recipe.recipe_path}: build gates failed ({len(failures)}): {'; '.join(failures[:3])}")
            golden_case = load_case(folder / golden[-1]["file"])
            candidate = _candidate_output(folder, manifest, golden_case)
            manifest["report"]["files"] = write_report(
                folder, report, reference_audio=golden_case["reference"].reshape(-1), candidate_audio=candidate,
                sample_rate=spec.sampling_rate, latency_samples=samples,
            )
            return {"manifest": manifest, "report": report}

        from ..cache.store import cpu_device

        entry = self.stages.run(
            "artifact", produce, inputs={"backend": self.backend_key},
            params={"name": recipe.name, "version": recipe.version, "golden": recipe.golden, "accuracy": recipe.accuracy, "latency": recipe.latency, "target": recipe.target, "shapes": self.shapes},
            libraries=LIBRARIES, device=cpu_device(),
        )
        from .stages import copy_files

        copy_files(entry, writer.dir, exclude=(MANIFEST, MANIFEST_DIGEST))
        return entry.meta

    def _speedup_goals(self, latency: dict[str, Any]) -> None:
        """Goals against the fp32 eager reference: time it here, on the inputs the artifact was timed on."""
        from ..verify.evaluate import check_goals

        goals = self.recipe.latency.goals
        wanted = sorted({goal.seconds for goal in goals if goal.min_speedup_vs_eager is not None})
        if not wanted:
            return
        eager = {}
        for case in latency["cases"]:
            if any(abs(case["seconds"] - seconds) < 0.02 for seconds in wanted):
                arrays = _timing_inputs(self.spec, case["frames"], self.speaker)
                eager[round(case["seconds"], 3)] = self.reference.p50_ms(arrays, repeat=self.recipe.latency.repeat, warmup=self.recipe.latency.warmup)
                self.log(f"eager fp32 reference at {case['seconds']:g} s: p50 {eager[round(case['seconds'], 3)]:.1f} ms")
        latency["goals"], failures = check_goals(latency["cases"], [dataclasses.asdict(goal) for goal in goals], eager)
        if self.emulation:  # the artifact ran as on the target class; the eager reference runs in this process, natively
            for goal in latency["goals"]:
                goal["eager_timed_on"] = f"{self.machine_isa.name} (natively; the artifact as on {self.target_isa.name})"
        latency["failures"] = failures
        latency["passed"] = not failures

    def _isa(self) -> dict[str, Any]:
        verified_by = "native" if self.target_isa.name == self.machine_isa.name else (
            f"emulation ({', '.join(f'{k}={v}' for k, v in self.emulation.items())})" if self.emulation
            else "this CPU; int8 sums are exact integers on every class with these weights" if self.recipe.target.precision == "int8"
            else "this CPU (its kernels round fp32 alike on every class)"
        )
        return {
            "requested": self.recipe.target.cpu,
            "target": self.target_isa.name,
            "built_on": self.machine_isa.name,
            "verified_on": self.target_isa.name if (self.emulation or self.target_isa.name == self.machine_isa.name) else self.machine_isa.name,
            "verified_by": verified_by,
            "int8_weight_bits": int8_weight_bits(self.target_isa) if self.recipe.target.precision == "int8" else None,
            "cpu": cpu_info()["cpu"],
        }

    # -- artifact contents -----------------------------------------------------------------------

    def _window(self) -> dict[str, int] | None:
        """The runtime's windows for long inputs: only where slicing the inputs is exact, i.e. the NSF
        source is computed on the host (or there is none); otherwise the phase would restart per window."""
        window = self.shapes.window()
        if window is None or (self.spec.f0 and "excitation" not in self.input_names):
            return None
        frames, context, crossfade = window
        return {"frames": frames, "context": context, "crossfade": crossfade}

    def _golden(self, folder: Path) -> list[dict[str, Any]]:
        recipe, spec = self.recipe, self.spec
        golden_dir = folder / "golden"
        golden_dir.mkdir()
        golden = []
        for index, seconds in enumerate(recipe.golden.seconds):
            frames = _frames_for(seconds, spec, self.shapes, windowed=self._window() is not None)
            case = example_case(spec.feature_dim, frames, seed=index)
            draws = make_noise(recipe.golden.noise, frames, inter_channels=spec.inter_channels, hop_length=spec.hop_length, has_f0=spec.f0)
            # User-level inputs: verify runs them through the runtime's whole path (host-side source included).
            arrays = {"features": case["features"][None], "speaker": np.array([self.speaker], dtype=np.int64), **draws}
            if spec.f0:
                arrays["f0"] = case["f0"][None]
            arrays["reference"] = self.reference(arrays)
            name = f"golden-{seconds:g}s"
            save_case(golden_dir / f"{name}.npz", arrays)
            golden.append({"name": name, "file": f"golden/{name}.npz", "frames": frames, "seconds": frames / spec.frames_per_second, "speaker": self.speaker, "noise": recipe.golden.noise})
        return golden

    def _manifest(self, golden: list[dict[str, Any]], resolved_recipe: dict[str, Any], recipe_digest: str) -> dict[str, Any]:
        recipe, spec, shapes, static = self.recipe, self.spec, self.shapes, self.static
        checkpoint = self.checkpoint
        return {
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
            "recipe": resolved_recipe,
            "recipe_sha256": recipe_digest,
            "target": dataclasses.asdict(recipe.target),
            "isa": self._isa(),
            **({"precision_choice": self.choice} if self.choice else {}),
            "backend": self.backend_section,
            "precision": self.plan_summary,
            "model": {
                "sample_rate": spec.sampling_rate,
                "hop_length": spec.hop_length,
                "feature_dim": spec.feature_dim,
                "f0": spec.f0,
                "inter_channels": spec.inter_channels,
                "n_speakers": spec.n_speakers,
                "fixed_speaker": self.fixed_inputs.get("speaker"),
                "host_source": "excitation" in self.input_names,
                "frames": {"min": static or shapes.min_frames, "opt": static or shapes.opt_frames, "max": static or shapes.max_frames, "static": static is not None},
                "window": self._window(),
            },
            "signature": _signature(spec, self.input_names),
            "passes": self.pass_records,
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


def build(
    recipe: Any,
    *,
    out_dir: Path | None = None,
    force: bool = False,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    log: Callable[[str], None] = print,
) -> BuildResult:
    """Build ``recipe`` (a loaded ``recipe.Recipe``) into an artifact folder; return its path and report.

    ``cache_dir``: the build cache (None: ``$RVC_COMPILE_CACHE`` or the user cache folder, see
    ``cache.resolve_cache_dir``); ``use_cache=False`` builds every stage afresh in a throwaway cache.
    ``target.precision: auto`` builds the candidates fastest first and keeps the first inside the budget.
    """
    _check_target_cpu(recipe)
    if recipe.target.precision != "auto":
        return _build_one(recipe, out_dir=out_dir, force=force, cache_dir=cache_dir, use_cache=use_cache, log=log)
    backend = get_backend(recipe.target.backend)
    candidates, choice = auto_precision_candidates(recipe, backend)
    log(f"precision auto: candidates {', '.join(candidates)} (fastest first) on {resolve_target_cpu(recipe.target.cpu).name}")
    for precision in candidates:
        policy = dataclasses.replace(recipe.precision_policy, accuracy_aware=recipe.precision_policy.accuracy_aware and precision == "int8")
        candidate = dataclasses.replace(recipe, target=dataclasses.replace(recipe.target, precision=precision), precision_policy=policy)
        try:
            backend.check_policy(candidate.target, candidate.precision_policy)
            result = _build_one(candidate, out_dir=out_dir, force=force, cache_dir=cache_dir, use_cache=use_cache, log=log,
                                choice={**choice, "chosen": precision})
        except (GateFailure, RecipeError) as exc:
            if isinstance(exc, RecipeError) and not str(exc).startswith("precision_policy"):
                raise
            choice["tried"].append({"precision": precision, "result": f"refused: {exc}"})
            log(f"precision auto: {precision} is out: {exc}")
            continue
        log(f"precision auto: chose {precision}")
        return result
    raise GateFailure(f"{recipe.recipe_path}: precision auto: no candidate passed the budget ({'; '.join(t['result'] for t in choice['tried'])})")


def auto_precision_candidates(recipe: Any, backend: Any) -> tuple[list[str], dict[str, Any]]:
    """``precision: auto``'s candidates, fastest first, and the record of those left out with why.

    Measured order on every CPU class (docs/PERFORMANCE.md): int8 before bf16 (only where the CPU has
    native bf16) before fp32. ONNX Runtime's fp16 runs slower than fp32 on CPUs (no fp16 arithmetic),
    so it is never a candidate."""
    isa = resolve_target_cpu(recipe.target.cpu)
    candidates, tried = [], []
    for precision in ("int8", "bf16", "fp32"):
        if precision not in backend.PRECISIONS:
            continue
        if precision == "int8" and recipe.calibration.source == "none":
            tried.append({"precision": "int8", "result": "skipped: no calibration data (calibration.source)"})
        elif precision == "bf16" and not isa.native_bf16:
            tried.append({"precision": "bf16", "result": f"skipped: {isa.name} has no native bf16"})
        elif precision in getattr(backend, "SLOW_PRECISIONS", {}).get(isa.name, {}):
            tried.append({"precision": precision, "result": f"skipped on {isa.name}: {backend.SLOW_PRECISIONS[isa.name][precision]}"})
        else:
            candidates.append(precision)
    return candidates, {"requested": "auto", "cpu": isa.name, "tried": tried}


def _check_target_cpu(recipe: Any) -> None:
    """A build is checked on this machine: for its own class, or a class whose features it has."""
    target, here = resolve_target_cpu(recipe.target.cpu), machine_isa()
    if not here.runs_as(target):
        missing = ", ".join(sorted(target.features - here.features))
        raise RecipeError(
            f"target.cpu: {recipe.target.cpu} needs {missing}, which this {here.name} CPU lacks, so the artifact's "
            "accuracy cannot be checked here; build it on such a CPU, or use auto or portable"
        )


def _build_one(
    recipe: Any, *, out_dir: Path | None, force: bool, cache_dir: Path | None, use_cache: bool,
    log: Callable[[str], None], choice: dict[str, Any] | None = None,
) -> BuildResult:
    from .stages import StageRunner

    started = time.perf_counter()
    backend = get_backend(recipe.target.backend)
    backend.check_target(recipe.target)
    backend.check_policy(recipe.target, recipe.precision_policy)
    _order_passes(recipe)
    out_root = Path(out_dir) if out_dir is not None else Path(recipe.output_dir)

    with ArtifactWriter(out_root, recipe.name, recipe.version, force=force) as writer, \
            StageRunner(cache_dir, use_cache=use_cache, log=log) as stages, \
            stages.store.scratch() as scratch:
        run = _Build(recipe, stages, scratch, log, choice=choice)
        run.started = started
        run.load()
        run.capture()
        run.onnx_passes_stage()
        run.precision_and_backend()
        meta = run.assemble(writer)
        path = writer.commit(meta["manifest"])
        cache_records = list(stages.records)
    hits = sum(record["hit"] for record in cache_records)
    log(f"built {path} in {time.perf_counter() - started:.1f} s ({hits} of {len(cache_records)} stages from the cache)")
    report = {**meta["report"], "cache": cache_records}
    return BuildResult(path=path, report=report, cache=cache_records)


def _timing_inputs(spec: Any, frames: int, speaker: int) -> dict[str, np.ndarray]:
    """The user-level inputs ``evaluate.measure_latency`` times an artifact on (same case, same noise)."""
    case = example_case(spec.feature_dim, frames, seed=7)
    arrays = {"features": case["features"][None], "speaker": np.array([speaker], dtype=np.int64)}
    arrays.update(make_noise("seed:1", frames, inter_channels=spec.inter_channels, hop_length=spec.hop_length, has_f0=spec.f0))
    if spec.f0:
        arrays["f0"] = case["f0"][None]
    return arrays


def _evaluate_in_subprocess(
    artifact_dir: Path, manifest: dict[str, Any], workdir: Path, env: dict[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    manifest_path, result_path = workdir / "manifest-draft.json", workdir / "evaluation.json"
    manifest_path.write_text(json.dumps(manifest))
    process = subprocess.run(
        [sys.executable, "-m", "rvc_compile.verify.evaluate", str(artifact_dir), str(manifest_path), str(result_path)],
        capture_output=True, text=True,
        # Its temporary files (compile blobs) go to the build's scratch; ``env`` may cap oneDNN's ISA.
        env={**os.environ, **(env or {}), "TMPDIR": str(workdir)},
    )
    if process.returncode != 0 or not result_path.exists():
        detail = (process.stderr.strip().splitlines() or ["no output"])[-1]
        raise BuildError(f"measuring the built artifact failed: {detail[:300]}")
    data = json.loads(result_path.read_text())
    return data["result"], data["samples"]


def _candidate_output(artifact_dir: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> np.ndarray:
    from ..verify.evaluate import run_case
    from ..runtime import CompiledVoice

    backend = get_backend(manifest["backend"]["name"], for_build=False)
    runner = backend.load(artifact_dir, manifest["backend"])
    return run_case(CompiledVoice(Path(artifact_dir), manifest, runner, 0.0), arrays)
