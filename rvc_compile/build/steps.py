"""The build's stages, each a function from the previous stage's record to its own (``build.records``).

Every stage runs through the content-addressed cache (``StageRunner.run``), keyed by everything its
output depends on, and checks what it made against the fp32 eager reference at the recipe's lengths
(fp32 graphs to 1e-4 relative error, lower precisions against the accuracy budget).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..artifact.golden import load_case, save_case
from ..artifact.manifest import MANIFEST, MANIFEST_DIGEST
from ..errors import BuildError, GateFailure, RecipeError
from ..hashing import state_dict_sha256
from ..machine import cpu_info, int8_weight_bits, library_versions
from ..verify.parity import multi_length_check
from .records import BuildContext, CompiledRecord, GraphRecord, Reference, SourceRecord, pass_params
from .stages import copy_files

LIBRARIES = ("torch", "onnx", "onnxscript", "onnxruntime", "onnxslim", "openvino", "nncf", "numpy")
CAPTURE_LIBRARIES = ("torch", "onnx", "onnxscript", "numpy")
ONNX_PASS_LIBRARIES = ("onnx", "onnxslim", "onnxsim", "onnxruntime", "numpy")
GRAPH_FILE = "model.onnx"
DERIVED_FILE = "reference.pt"  # capture entry: the derived model's spec and weights (after prune)
PROGRAM_FILE = "program.pt2"  # capture entry, for backends that compile the torch program (``backends.base``: PROGRAM)


def _reference_runner(graph: Path, threads: int) -> Any:
    from ..backends.onnxruntime import reference_runner

    return reference_runner(graph, threads)


# -- load ----------------------------------------------------------------------------------------

def load_source(ctx: BuildContext) -> SourceRecord:
    """Read and validate the component's source (the recipe's ``source`` section)."""
    import hashlib

    loaded = ctx.component.load(ctx.recipe.source)
    ctx.component.check_shapes(loaded.spec, ctx.shapes)
    ctx.component.check_capture(loaded.spec, ctx.recipe.capture, ctx.shapes)
    ctx.log(f"loaded {loaded.path.name}: {ctx.component.describe(loaded.spec)} ({', '.join(f'{k} {v}' for k, v in loaded.description.items())})")
    model_key = hashlib.sha256(json.dumps({"kind": ctx.component.KIND, **loaded.cache_inputs}, sort_keys=True).encode()).hexdigest()
    reference = Reference(ctx.component, loaded.spec, loaded.weights, ctx.threads, stages=ctx.stages, model_key=model_key)
    return SourceRecord(loaded=loaded, reference=reference)


# -- capture -------------------------------------------------------------------------------------

def torch_graph(component: Any, spec: Any, weights: Any, torch_passes: Any, workdir: Path) -> tuple[Any, list[dict[str, Any]], dict[str, Any] | None]:
    """The torch model after the recipe's torch-stage passes, their records, and — when a pass changed
    the architecture (``prune``) — the plain weights of the model it derived (the new fp32 reference)."""
    from ..passes import GraphState

    model = component.build_model(spec, weights)
    state = GraphState(spec=spec, model=model, input_names=component.input_names(spec))
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


def _derived_reference(ctx: BuildContext, source: SourceRecord, derived: dict[str, Any]) -> tuple[Any, Any, Reference]:
    spec = ctx.component.spec_from_dict(derived["spec"], source=f"{source.loaded.path} (after the recipe's torch passes)")
    weights = derived["state_dict"]
    ctx.log("reference: the model the torch passes derived (its fp32 output is what the artifact must match)")
    # The spec is part of the key: a real-time block model has the source's weights but other outputs.
    import hashlib

    model_key = hashlib.sha256(json.dumps({"weights": state_dict_sha256(weights), "spec": spec.to_dict()}, sort_keys=True).encode()).hexdigest()
    return spec, weights, Reference(ctx.component, spec, weights, ctx.threads, stages=ctx.stages, model_key=model_key)


def entry_model(ctx: BuildContext, source: SourceRecord, entry: Any, derived_now: dict[str, Any]) -> tuple[Any, Any, Reference]:
    """The model a graph entry implements (spec, weights, reference): the one a torch pass derived, as
    its producer just made it (``derived_now["record"]``) or read back from the entry on a cache hit,
    else the source's."""
    if "record" in derived_now:
        return derived_now["record"]
    if DERIVED_FILE in entry.files:
        import torch

        return _derived_reference(ctx, source, torch.load(entry.file(DERIVED_FILE), map_location="cpu", weights_only=True))
    return source.loaded.spec, source.loaded.weights, source.reference


def capture(ctx: BuildContext, source: SourceRecord) -> GraphRecord:
    """Torch passes, then export to ONNX with a symbolic time axis; checked at every length."""
    from ..capture.export import export_onnx, export_program

    recipe, shapes, component = ctx.recipe, ctx.shapes, ctx.component
    derived_now: dict[str, Any] = {}
    program = wants_program(ctx.backend)

    def produce(folder: Path) -> dict[str, Any]:
        import torch

        state, records, derived = torch_graph(component, source.loaded.spec, source.loaded.weights, ctx.torch_passes, ctx.workdir)
        for record in records:
            ctx.log(f"pass {record['name']}: done")
        reference = source.reference
        if derived is not None:
            torch.save(derived, folder / DERIVED_FILE)
            derived_now["record"] = _derived_reference(ctx, source, derived)
            reference = derived_now["record"][2]
        path = export_onnx(
            state.model, state.spec, state.input_names, folder / GRAPH_FILE, exporter=recipe.capture.exporter, component=component,
            opset=recipe.capture.opset, min_frames=shapes.min_frames, max_frames=shapes.max_frames, static_frames=ctx.static,
            trace_frames=component.TRACE_FRAMES,
        )
        speaker = int(state.fixed_inputs.get("speaker", recipe.golden.speaker))
        checks = multi_length_check("capture", _reference_runner(path, ctx.threads), reference, state.spec, state.input_names, ctx.lengths,
                                    speaker=speaker, component=component)
        ctx.log(f"capture ({recipe.capture.exporter}): checked at {ctx.lengths} frames")
        meta = {"input_names": state.input_names, "fixed_inputs": state.fixed_inputs, "passes": records, "checks": checks}
        if program:  # the backend compiles this program; it checks what it compiled at every length itself
            meta["program"] = export_program(
                state.model, state.spec, state.input_names, folder / PROGRAM_FILE, min_frames=shapes.min_frames, max_frames=shapes.max_frames,
                static_frames=ctx.static, trace_frames=component.TRACE_FRAMES, component=component,
            )
            ctx.log("capture: torch.export program saved for the backend")
        return meta

    entry = ctx.stages.run(
        "capture", produce, inputs=dict(source.loaded.cache_inputs),
        params={"component": component.KIND, "passes": pass_params(ctx.torch_passes), "capture": recipe.capture, "frames": [shapes.min_frames, shapes.max_frames, ctx.static],
                "lengths": ctx.lengths, "speaker": recipe.golden.speaker, **({"program": True} if program else {})},
        libraries=CAPTURE_LIBRARIES,
    )
    spec, weights, reference = entry_model(ctx, source, entry, derived_now)
    fixed_inputs = dict(entry.meta["fixed_inputs"])
    return GraphRecord(
        entry=entry, key=entry.key, spec=spec, weights=weights, reference=reference,
        input_names=tuple(entry.meta["input_names"]), fixed_inputs=fixed_inputs,
        passes=tuple(entry.meta["passes"]), checks=tuple(entry.meta["checks"]),
        speaker=int(fixed_inputs.get("speaker", recipe.golden.speaker)),
    )


def build_device(ctx: BuildContext) -> dict[str, Any]:
    """The ``device`` ingredient of the stages that run the artifact: this CPU, and the GPU of a cuda target."""
    from ..cache.store import cpu_device

    device = cpu_device()
    if ctx.recipe.target.device == "cuda":
        import torch

        device["gpu"] = torch.cuda.get_device_name(0)
    return device


def wants_program(backend: Any) -> bool:
    """Whether ``backend`` compiles the captured torch program (AOTInductor) instead of the ONNX graph."""
    return bool(getattr(backend, "PROGRAM", False))


def backend_build(ctx: BuildContext, graph: GraphRecord, folder: Path, plan: Any) -> dict[str, Any]:
    """``backend.build`` on the graph's ONNX file, with the torch program for a backend that compiles it."""
    extra = {"program": graph.entry.file(PROGRAM_FILE), "program_shapes": graph.entry.meta["program"]} if wants_program(ctx.backend) else {}
    return ctx.backend.build(graph.entry.file(GRAPH_FILE), ctx.recipe.target, folder, plan, shapes=ctx.shapes, workdir=ctx.workdir, **extra)


def apply_onnx_pass(ctx: BuildContext, graph: GraphRecord, entry_spec: Any, graph_pass: Any) -> GraphRecord:
    """One ONNX-stage pass on the cached graph; checked at every length."""
    from ..passes import GraphState

    names = list(graph.input_names)

    def produce(folder: Path) -> dict[str, Any]:
        scratch = Path(tempfile.mkdtemp(dir=ctx.workdir))
        state = GraphState(spec=graph.spec, onnx_path=graph.entry.file(GRAPH_FILE), input_names=names, fixed_inputs=dict(graph.fixed_inputs))
        state = graph_pass.run(state, scratch)
        shutil.copyfile(state.onnx_path, folder / GRAPH_FILE)  # never move the cached input away
        checks = multi_length_check(entry_spec.name, _reference_runner(folder / GRAPH_FILE, ctx.threads), graph.reference, graph.spec, names,
                                    ctx.lengths, speaker=graph.speaker, component=ctx.component)
        ctx.log(f"pass {entry_spec.name}: checked at {ctx.lengths} frames")
        record = {"name": entry_spec.name, "stage": "onnx", "params": dataclasses.asdict(entry_spec.params), "notes": "; ".join(state.notes)}
        return {"record": record, "checks": checks}

    entry = ctx.stages.run(
        f"pass:{entry_spec.name}", produce, inputs={"graph": graph.key},
        params={"params": entry_spec.params, "lengths": ctx.lengths, "speaker": graph.speaker},
        libraries=ONNX_PASS_LIBRARIES,
    )
    return dataclasses.replace(graph, entry=entry, key=entry.key, passes=(*graph.passes, entry.meta["record"]),
                               checks=(*graph.checks, *entry.meta["checks"]))


# -- precision and backend -----------------------------------------------------------------------

def compile_backend(ctx: BuildContext, graph: GraphRecord) -> CompiledRecord:
    """Apply the precision plan with the backend's own tools and write its files; checked at every length
    (natively, or as on the target CPU class under emulation)."""
    import onnx

    from ..precision.layers import resolve, weighted_layers

    recipe, component = ctx.recipe, ctx.component
    precision, policy = recipe.target.precision, recipe.precision_policy
    names = list(graph.input_names)
    graph_file = graph.entry.file(GRAPH_FILE)
    graph_model = onnx.load(str(graph_file), load_external_data=False)
    layers = weighted_layers(graph_model)
    keep = resolve(policy.keep_fp32, layers, "precision_policy.keep_fp32")
    component.check_precision(graph.spec, names, precision)
    fixed = [name for name in component.fixed_fp32_nodes(graph.spec, graph_model, precision) if name not in keep]
    del graph_model
    inputs = {"graph": graph.key}
    feeds: list[dict[str, np.ndarray]] = []
    if precision == "int8":
        feeds, digest, _ = component.calibration_feeds(graph.spec, recipe, names, static=ctx.static, speaker=graph.speaker,
                                                       cache_dir=ctx.stages.root, log=ctx.log)
        inputs["calibration"] = digest

    def produce(folder: Path) -> dict[str, Any]:
        from ..precision.plan import PrecisionPlan

        plan = PrecisionPlan(
            precision=precision, layers=layers, keep_fp32=keep + fixed, calibration=feeds,
            calibration_method=policy.calibration_method, per_channel=policy.per_channel,
            weight_bits=int8_weight_bits(ctx.target_isa),
        )
        ctx.log(f"precision {precision}: {len(plan.low_precision_layers)} of {len(layers)} layers in {precision}" + (f", {len(keep)} kept fp32" if keep else "")
                + (f"; {len(fixed)} other node(s) fp32 as {component.KIND} graphs need" if fixed else ""))
        meta: dict[str, Any] = {}
        if policy.accuracy_aware:
            plan, meta["accuracy_aware"] = _accuracy_aware(ctx, graph, plan, feeds)
        section = backend_build(ctx, graph, folder, plan)
        checks = _check_backend(ctx, graph, folder, section, plan)
        return {**meta, "section": section, "plan": plan.summary(), "checks": checks}

    entry = ctx.stages.run(
        f"backend:{ctx.backend.NAME}", produce, inputs=inputs,
        params={"target": recipe.target, "policy": policy, "shapes": ctx.shapes, "lengths": ctx.lengths, "accuracy": recipe.accuracy, "speaker": graph.speaker},
        libraries=tuple(ctx.backend.LIBRARIES), device=build_device(ctx),
    )
    return CompiledRecord(
        graph=graph, entry=entry, key=entry.key, section=entry.meta["section"], plan=entry.meta["plan"],
        accuracy_aware=entry.meta.get("accuracy_aware"), checks=(*graph.checks, *entry.meta["checks"]),
    )


def _check_backend(ctx: BuildContext, graph: GraphRecord, folder: Path, section: dict[str, Any], plan: Any) -> list[dict[str, Any]]:
    stage = f"backend {ctx.backend.NAME} {plan.precision}" + (f" (as on {ctx.target_isa.name})" if ctx.emulation else "")
    budget = dataclasses.asdict(ctx.recipe.accuracy) if plan.precision != "fp32" else None
    with contextlib.ExitStack() as stack:
        if ctx.emulation:
            from ..backends.emulated import EmulatedRunner

            runner = stack.enter_context(EmulatedRunner(folder, section, ctx.threads, dict(ctx.emulation)))
        else:
            runner = ctx.backend.load(folder, section, threads=ctx.threads)
        checks = multi_length_check(stage, runner.run, graph.reference, graph.spec, list(graph.input_names), ctx.lengths,
                                    speaker=graph.speaker, budget=budget, component=ctx.component)
    ctx.log(f"{stage}: checked at {ctx.lengths} frames")
    return checks


def _accuracy_aware(ctx: BuildContext, graph: GraphRecord, plan: Any, feeds: list[dict[str, np.ndarray]]) -> tuple[Any, dict[str, Any]]:
    """Quantize, and while the budget fails keep more of the most sensitive layers in fp32."""
    from ..capture.export import graph_inputs
    from ..precision.search import Trial, search
    from ..precision.sensitivity import layer_flops, layer_sensitivity

    component, policy = ctx.component, ctx.recipe.precision_policy
    sample_rate = component.output_sample_rate(graph.spec)
    if sample_rate is None:
        raise RecipeError(f"precision_policy.accuracy_aware: not available for {component.KIND} graphs (its sensitivity is scored on audio)")
    trial_root = ctx.workdir / "accuracy-aware"

    def trial(extra: list[str]) -> Trial:
        candidate = dataclasses.replace(plan, keep_fp32=[name for name in plan.layers if name in set(plan.keep_fp32) | set(extra)])
        folder = trial_root / f"keep-{len(extra)}"
        folder.mkdir(parents=True, exist_ok=True)
        section = backend_build(ctx, graph, folder, candidate)
        try:
            checks = _check_backend(ctx, graph, folder, section, candidate)
        except GateFailure as exc:
            return Trial(extra, False, "; ".join(exc.failures) or str(exc))
        return Trial(extra, True, None, checks)

    first = trial([])
    if first.passed:
        ctx.log("accuracy-aware: every layer quantized passes the budget")
        return plan, {"extra_fp32": [], "sensitivity": {}, "trials": [dataclasses.asdict(first)]}
    ctx.log(f"accuracy-aware: all-int8 fails ({first.failure}); measuring per-layer sensitivity")
    state, _, _ = torch_graph(component, graph.spec, graph.weights, ctx.torch_passes, ctx.workdir)
    names = list(graph.input_names)
    frames = ctx.static or ctx.shapes.opt_frames
    validation = [graph_inputs(graph.spec, names, frames, seed=500, speaker=graph.speaker, component=component)]
    sensitivity = layer_sensitivity(state.model, names, feeds[:4], validation, sample_rate, per_channel=plan.per_channel,
                                    layers=list(plan.low_precision_layers))
    flops = layer_flops(state.model, names, validation[0], seconds=frames / component.frames_per_second(graph.spec))
    ranking = sorted(sensitivity, key=lambda name: sensitivity[name]["snr_db"])
    result = search(ranking, lambda extra: first if not extra else trial(extra), max_layers=policy.max_fp32_layers, log=ctx.log)
    kept = result.extra_fp32
    ctx.log(f"accuracy-aware: {len(kept)} extra layer(s) kept fp32: {', '.join(kept[:6])}{' ...' if len(kept) > 6 else ''}")
    final = dataclasses.replace(plan, keep_fp32=[name for name in plan.layers if name in set(plan.keep_fp32) | set(kept)])
    layers = {
        name: {**sensitivity[name], "gflop_per_second": round(flops.get(name, 0.0) / 1e9, 4), "precision": "fp32" if name in kept else plan.precision}
        for name in ranking
    }
    return final, {"extra_fp32": kept, "sensitivity": layers, "trials": [dataclasses.asdict(t) for t in result.trials]}


# -- artifact ------------------------------------------------------------------------------------

def assemble(ctx: BuildContext, source: SourceRecord, compiled: CompiledRecord, writer: Any) -> dict[str, Any]:
    """Golden set, manifest, evaluation in a fresh runtime process, report: the artifact stage."""

    recipe, component, graph = ctx.recipe, ctx.component, compiled.graph

    def produce(folder: Path) -> dict[str, Any]:
        from ..artifact.report import write_report
        from ..recipe.schema import recipe_sha256, recipe_to_dict

        copy_files(compiled.entry, folder)
        golden = _golden(ctx, graph, folder)
        manifest = _manifest(ctx, source, compiled, golden, recipe_to_dict(recipe), recipe_sha256(recipe))
        if recipe.source.bind_weights:  # one graph for every voice of the architecture: its latency is measured once per machine
            evaluation, samples = _bound_evaluation(ctx, graph, folder, manifest)
        else:
            ctx.log("measuring accuracy and latency in a fresh runtime process")
            evaluation, samples = _evaluate_in_subprocess(folder, manifest, ctx.workdir, env=dict(ctx.emulation))
            _speedup_goals(ctx, graph, evaluation["latency"])
        flops = component.flops_per_second(graph.spec, graph.weights)
        golden_dir = folder / "golden"
        model_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_relative_to(golden_dir))
        report = {
            "artifact": {
                "name": recipe.name, "version": recipe.version, "backend": ctx.backend.NAME, "device": recipe.target.device,
                "precision": recipe.target.precision, "size_bytes": model_bytes, "created": manifest["created"],
            },
            "machine": {**cpu_info(), "threads": recipe.target.threads, "libraries": manifest["library_versions"]},
            "isa": manifest["isa"],
            **({"precision_choice": dict(ctx.choice)} if ctx.choice else {}),
            "source": {
                "checkpoint": source.loaded.path.name, "sha256": source.loaded.sha256, "component": component.KIND,
                "description": component.describe(graph.spec),
                "parameters": component.parameter_count(graph.weights),
                "gflop_per_second_of_audio": round(flops["total"] / 1e9, 3),
            },
            "accuracy": {**evaluation["accuracy"], "noise": recipe.golden.noise},
            "latency": evaluation["latency"],
            "multi_length_checks": list(compiled.checks),
            "passes": list(graph.passes),
            "precision": {**compiled.plan, "accuracy_aware": compiled.accuracy_aware},
            "build_time_s": round(time.perf_counter() - ctx.started, 1),
        }
        failures = evaluation["accuracy"]["failures"] + evaluation["latency"]["failures"]
        if failures:
            raise GateFailure(f"{recipe.recipe_path}: build gates failed ({len(failures)}): {'; '.join(failures[:3])}", failures=failures)
        golden_case = load_case(folder / golden[-1]["file"])
        candidate = _candidate_output(folder, manifest, golden_case)
        manifest["report"]["files"] = write_report(
            folder, report, reference_audio=golden_case["reference"].reshape(-1), candidate_audio=candidate,
            sample_rate=component.output_sample_rate(graph.spec), latency_samples=samples,
        )
        if recipe.export:  # drop-in files for the apps (exports/<profile>.onnx), each verified; hashed with the rest
            from ..export import export_into

            export_into(folder, manifest, list(recipe.export), threads=ctx.threads, log=ctx.log)
        return {"manifest": manifest, "report": report}

    entry = ctx.stages.run(
        "artifact", produce, inputs={"backend": compiled.key},
        params={"name": recipe.name, "version": recipe.version, "golden": recipe.golden, "accuracy": recipe.accuracy, "latency": recipe.latency,
                "target": recipe.target, "shapes": ctx.shapes, "export": recipe.export},
        libraries=LIBRARIES, device=build_device(ctx),
    )
    copy_files(entry, writer.dir, exclude=(MANIFEST, MANIFEST_DIGEST))
    return entry.meta


def _bound_evaluation(ctx: BuildContext, graph: GraphRecord, folder: Path, manifest: dict[str, Any]) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """A bound voice's evaluation: its own accuracy, and the latency of its architecture's graph on this
    machine. The first voice bound there is measured whole (in a fresh process, with the speed-up goals'
    eager timing) and its latency stored; later voices measure accuracy only and read that latency,
    which names the voice it was timed on."""

    architecture = next(record["params"]["architecture"] for record in graph.passes if record["name"] == "bind_weights")
    result: dict[str, Any] = {}

    def produce(entry_folder: Path) -> dict[str, Any]:
        ctx.log("measuring accuracy and the architecture's latency in a fresh runtime process (later voices of the architecture reuse the latency)")
        evaluation, samples = _evaluate_in_subprocess(folder, manifest, ctx.workdir, env=dict(ctx.emulation))
        _speedup_goals(ctx, graph, evaluation["latency"])
        evaluation["latency"]["measured_on"] = {"voice": ctx.recipe.name, "checkpoint_sha256": manifest["source"]["sha256"], "created": manifest["created"]}
        failures = evaluation["latency"]["failures"]
        if failures:  # as a full build: no entry, so no later voice inherits a failed measurement
            raise GateFailure(f"{ctx.recipe.recipe_path}: build gates failed ({len(failures)}): {'; '.join(failures[:3])}", failures=failures)
        result["now"] = (evaluation, samples)
        return {"latency": evaluation["latency"], "samples": samples}

    entry = ctx.stages.run(
        "architecture-latency", produce, inputs={"architecture": architecture},
        params={"target": ctx.recipe.target, "shapes": ctx.shapes, "latency": ctx.recipe.latency, "plan": manifest["precision"]},
        libraries=LIBRARIES, device=build_device(ctx),
    )
    if "now" in result:
        return result["now"]
    ctx.log("measuring accuracy in a fresh runtime process")
    evaluation, _ = _evaluate_in_subprocess(folder, manifest, ctx.workdir, env=dict(ctx.emulation), check_latency=False)
    ctx.log(f"latency: the architecture's, measured on {entry.meta['latency']['measured_on']['voice']} on this machine")
    evaluation["latency"] = dict(entry.meta["latency"])
    return evaluation, dict(entry.meta["samples"])


def _speedup_goals(ctx: BuildContext, graph: GraphRecord, latency: dict[str, Any]) -> None:
    """Goals against the fp32 eager reference: time it here, on the inputs the artifact was timed on."""
    from ..verify.evaluate import check_goals

    goals = ctx.recipe.latency.goals
    wanted = sorted({goal.seconds for goal in goals if goal.min_speedup_vs_eager is not None})
    if not wanted:
        return
    eager = {}
    for case in latency["cases"]:
        if any(abs(case["seconds"] - seconds) < 0.02 for seconds in wanted):
            arrays = ctx.component.example_inputs(graph.spec, case["frames"], 7, noise="seed:1", speaker=graph.speaker)  # as evaluate.timing_inputs
            eager[round(case["seconds"], 3)] = graph.reference.p50_ms(arrays, repeat=ctx.recipe.latency.repeat, warmup=ctx.recipe.latency.warmup)
            ctx.log(f"eager fp32 reference at {case['seconds']:g} s: p50 {eager[round(case['seconds'], 3)]:.1f} ms")
    latency["goals"], failures = check_goals(latency["cases"], [dataclasses.asdict(goal) for goal in goals], eager)
    if ctx.emulation:  # the artifact ran as on the target class; the eager reference runs in this process, natively
        for goal in latency["goals"]:
            goal["eager_timed_on"] = f"{ctx.machine_isa.name} (natively; the artifact as on {ctx.target_isa.name})"
    latency["failures"] = failures
    latency["passed"] = not failures


def _isa(ctx: BuildContext) -> dict[str, Any]:
    target, here, int8 = ctx.target_isa, ctx.machine_isa, ctx.recipe.target.precision == "int8"
    verified_by = "native" if target.name == here.name else (
        f"emulation ({', '.join(f'{k}={v}' for k, v in ctx.emulation.items())})" if ctx.emulation
        else "this CPU; int8 sums are exact integers on every class with these weights" if int8
        else "this CPU (its kernels round fp32 alike on every class)"
    )
    return {
        "requested": ctx.recipe.target.cpu,
        "target": target.name,
        "built_on": here.name,
        "verified_on": target.name if (ctx.emulation or target.name == here.name) else here.name,
        "verified_by": verified_by,
        "int8_weight_bits": int8_weight_bits(target) if int8 else None,
        "cpu": cpu_info()["cpu"],
    }


def _window(ctx: BuildContext, graph: GraphRecord) -> dict[str, int] | None:
    """The runtime's windows for long inputs, where the component says slicing its inputs is exact."""
    window = ctx.shapes.window()
    if window is None or not ctx.component.windowable(graph.spec, list(graph.input_names)):
        return None
    frames, context, crossfade = window
    return {"frames": frames, "context": context, "crossfade": crossfade}


def _golden_frames(ctx: BuildContext, seconds: float, frames_per_second: float, windowed: bool) -> int:
    """Frames of a golden case: the chunk of a static graph; else clamped to the graph's range, except
    that a windowed runtime takes any length (a golden case past the window checks the windows)."""
    shapes = ctx.shapes
    if shapes.mode == "static":
        return int(shapes.chunk_frames)
    frames = max(int(round(seconds * frames_per_second)), shapes.min_frames)
    return frames if windowed else min(frames, shapes.max_frames)


def _golden(ctx: BuildContext, graph: GraphRecord, folder: Path) -> list[dict[str, Any]]:
    recipe, component = ctx.recipe, ctx.component
    fps = component.frames_per_second(graph.spec)
    golden_dir = folder / "golden"
    golden_dir.mkdir()
    golden = []
    for index, seconds in enumerate(recipe.golden.seconds):
        frames = _golden_frames(ctx, seconds, fps, windowed=_window(ctx, graph) is not None)
        # User-level inputs: verify runs them through the runtime's whole path (host-side source included).
        arrays = component.example_inputs(graph.spec, frames, index, noise=recipe.golden.noise, speaker=graph.speaker)
        arrays["reference"] = graph.reference(arrays)
        name = f"golden-{seconds:g}s"
        save_case(golden_dir / f"{name}.npz", arrays)
        golden.append({"name": name, "file": f"golden/{name}.npz", "frames": frames, "seconds": frames / fps, "speaker": graph.speaker, "noise": recipe.golden.noise})
    return golden


def _manifest(ctx: BuildContext, source: SourceRecord, compiled: CompiledRecord, golden: list[dict[str, Any]],
              resolved_recipe: dict[str, Any], recipe_digest: str) -> dict[str, Any]:
    recipe, component, graph, shapes, static = ctx.recipe, ctx.component, compiled.graph, ctx.shapes, ctx.static
    names = list(graph.input_names)
    signature = component.signature(graph.spec, names)
    return {
        "name": recipe.name,
        "version": recipe.version,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "rvc_compile_version": __version__,
        "library_versions": library_versions(*LIBRARIES),
        "component": {"kind": component.KIND, "spec": graph.spec.to_dict()},
        "source": {
            "checkpoint": source.loaded.path.name,
            "sha256": source.loaded.sha256,
            **source.loaded.description,
            **graph.spec.to_dict(),
        },
        "recipe": resolved_recipe,
        "recipe_sha256": recipe_digest,
        "target": dataclasses.asdict(recipe.target),
        "isa": _isa(ctx),
        **({"precision_choice": dict(ctx.choice)} if ctx.choice else {}),
        "backend": dict(compiled.section),
        "precision": dict(compiled.plan),
        "model": {
            **component.model_section(graph.spec, names, graph.fixed_inputs),
            "frames": {"min": static or shapes.min_frames, "opt": static or shapes.opt_frames, "max": static or shapes.max_frames, "static": static is not None},
            "window": _window(ctx, graph),
            **({"stream": recipe.stream.frames()} if getattr(recipe, "stream", None) is not None else {}),
        },
        "signature": signature.to_dict(),
        "passes": list(graph.passes),
        "golden": golden,
        "accuracy_budget": dataclasses.asdict(recipe.accuracy),
        "latency": {
            "seconds": list(recipe.latency.seconds),
            "repeat": recipe.latency.repeat,
            "warmup": recipe.latency.warmup,
            "goals": [dataclasses.asdict(goal) for goal in recipe.latency.goals],
        },
        "report": {"json": "report.json", "markdown": "report.md"},
    }


def _evaluate_in_subprocess(
    artifact_dir: Path, manifest: dict[str, Any], workdir: Path, env: dict[str, str] | None = None, *, check_latency: bool = True,
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Accuracy and latency measured in a fresh process, so load time and peak memory are the runtime's
    alone, without torch and the build's own allocations (``env`` may cap oneDNN's ISA; its temporary
    files, compile blobs, go to the build's scratch)."""
    from ..worker import WorkerError, run_function

    try:
        return run_function("rvc_compile.verify.evaluate:evaluate_artifact", Path(artifact_dir), manifest, check_latency=check_latency,
                            env={**(env or {}), "TMPDIR": str(workdir)}, name="artifact evaluation")
    except WorkerError as exc:
        if exc.failure.user_error:
            raise exc.unwrap() from None
        raise BuildError(f"measuring the built artifact failed: {exc.failure.last_line[:300]}") from None


def _candidate_output(artifact_dir: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> np.ndarray:
    from ..backends import get_backend
    from ..components import get_component

    backend = get_backend(manifest["backend"]["name"], for_build=False)
    runner = backend.load(artifact_dir, manifest["backend"])
    compiled = get_component(manifest["component"]["kind"], for_build=False).open(Path(artifact_dir), manifest, runner, 0.0)
    return compiled.run_case(arrays)
