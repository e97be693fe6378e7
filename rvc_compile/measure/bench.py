"""``rvc-compile bench``: time checkpoints, artifacts and named baselines on identical inputs, interleaved.

How it measures (the same for every source, every number in one run):

- Each SOURCE runs in its own worker process (``rvc_compile.worker``), loaded once. Only one worker
  computes at a time, so they never compete for the cores; the parent sends "run" to each in turn,
  with a short pause between calls so the previous source's thread pool has stopped spinning.
  Separate processes are what make peak memory per source meaningful: a worker's resident-set
  high-water mark (``machine.peak_memory_mb``, Linux's ``VmHWM``) is its source's alone. Lengths run
  shortest first, so the peak read after a length is the peak at that length.
- Sources are of one component (``components/``): a synthesizer checkpoint and its artifacts, or the
  artifacts of any other component; their inputs must fit all of them (``_common_model``).
- Inputs are identical for all sources: every worker builds them from the same (frames, seed) with the
  component's ``example_inputs`` (for the synthesizer: real content features, a phrase f0 contour and
  seeded noise); sources built for a fixed speaker set the speaker for all.
- Per length: every source is warmed up, then the repetitions are interleaved round-robin (A B C A B
  C ...), so drift in the machine (other load, thermal state) hits all sources alike. Timing is taken
  inside the worker around the model call only (``time.perf_counter``).
- Streaming (``chunk_seconds``): the input is split into consecutive chunks of that length, along the
  time axis of each input (the component's signature); each chunk call is timed; latency percentiles
  are per chunk and the real-time factor is time / chunk duration.
- In-run accuracy: the component's ``compare`` against the reference source on the same input.
- A source that cannot run a length (an artifact's frame range, a shape it was not built for) is
  reported "n/a" with the reason; a source that crashes is "failed"; neither stops the run.

The result is a JSON-able dict (schema ``rvc-compile-bench/1``, see ``docs/PERFORMANCE.md``) and
``format_table`` renders it. "Seconds" are seconds of input at the component's ``frames_per_second``
(for the synthesizer, seconds of audio). torch is imported only where a FLOP count or the floor needs it.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .sources import SourceSpec, parse_sources
from ..errors import InputError, RvcCompileError
from ..machine import cpu_info, library_versions
from ..verify.metrics import latency_stats
from ..worker import Failure, Worker, WorkerError

SCHEMA = "rvc-compile-bench/1"
LIBRARIES = ("torch", "onnxruntime", "openvino", "numpy")
DEFAULT_SECONDS = (0.5, 2.0, 10.0)
SETTLE_S = 0.01  # pause before each timed call: idle thread pools of the previous source stop spinning
LINEARITY_TOLERANCE = 1.10  # RTF at the longest length may exceed RTF at 2 s by at most 10 %
FLOP_COUNT_FRAMES = 200  # an artifact's graph is counted at 200 frames (2 s of synthesizer audio)
SHAPE_CHECK_FRAMES = 8  # sources must take inputs of the same shapes (checked at this many frames)


@dataclasses.dataclass
class BenchSettings:
    seconds: tuple[float, ...] = DEFAULT_SECONDS
    chunk_seconds: float | None = None  # streaming mode when set
    stream_seconds: float = 2.0  # audio split into chunks in streaming mode
    threads: int = 2
    repeat: int = 10  # runs at lengths <= 2 s; longer lengths get fewer (see repeats_for)
    min_repeat: int = 3
    warmup: int = 1
    # Lengths above this run without warm-up: every code path (compilations, windows) was warmed at a
    # shorter length, and a warm-up run of 30 s costs as much as a measured one.
    warmup_max_seconds: float | None = None
    seed: int = 0
    speaker: int | None = None
    floor: bool = True
    accuracy_seconds: float = 2.0  # in-run accuracy against the reference is taken at this length
    # Longest length to run per source label or kind (the suite's time budget keeps slow baselines short).
    max_seconds: dict[str, float] = dataclasses.field(default_factory=dict)

    def runs_at(self, spec: SourceSpec, seconds: float) -> bool:
        limit = self.max_seconds.get(spec.label, self.max_seconds.get(spec.kind))
        return limit is None or seconds <= limit + 1e-9

    def repeats_for(self, seconds: float) -> int:
        """About as much audio per length as ``repeat`` runs of 2 s, never fewer than ``min_repeat`` runs."""
        if seconds <= 2.0:
            return self.repeat
        return max(self.min_repeat, min(self.repeat, math.ceil(self.repeat * 2.0 / seconds)))


# -- the worker process --------------------------------------------------------------------------

class SourceWorker:
    """The parent's handle on one source's worker process (``rvc_compile.worker``, serving a
    ``sources.SourceServer``). Failures are ``WorkerError``; ``failure.user_error`` tells a source
    that cannot run something (n/a) from one that broke (failed)."""

    def __init__(self, spec: SourceSpec, threads: int, workdir: str):
        self.spec = spec
        self.worker = Worker("rvc_compile.measure.sources:SourceServer", spec, threads, workdir, name=f"bench worker for {spec.label}")
        self.info: dict[str, Any] = {}
        self.component: Any = None  # the source's component and spec, rebuilt here from ``info`` (``_common_model``)
        self.model_spec: Any = None

    def loaded(self) -> dict[str, Any]:
        payload = self.worker.ready()
        self.info = payload["info"]
        return payload

    def call(self, command: str, **args: Any) -> Any:
        if command == "run":
            time.sleep(SETTLE_S)
        return self.worker.call(command, **args)

    def stop(self) -> None:
        self.worker.stop()


def _raise_user_error(spec: SourceSpec, failure: Failure) -> None:
    """Re-raise a worker's user error in this process: the same error, naming the SOURCE if it does not."""
    error = failure.error
    if isinstance(error, RvcCompileError) and spec.path in str(error):
        raise error from None
    cls = type(error) if isinstance(error, RvcCompileError) else InputError
    raise cls(f"{spec.text}: {failure.message}") from None


# -- the model every source runs ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class BenchModel:
    """The model all sources of a run share (their inputs fit all of them): the first source's component
    and spec, rebuilt in the parent from its worker's ``info``."""

    component: Any
    spec: Any
    frames_per_second: float

    @property
    def kind(self) -> str:
        return self.component.KIND

    def frames(self, seconds: float) -> int:
        return max(1, int(round(seconds * self.frames_per_second)))

    def seconds(self, frames: int) -> float:
        return frames / self.frames_per_second


def shared_fields(component: Any, spec: Any) -> dict[str, Any]:
    """What every source of a run must share so one set of inputs fits all and their outputs compare."""
    if component.KIND == "synthesizer":  # the fields its inputs and audio metrics depend on, named as bench always has
        return {"sample_rate": spec.sampling_rate, "hop_length": spec.hop_length, "feature_dim": spec.feature_dim,
                "has_f0": spec.f0, "inter_channels": spec.inter_channels}
    arrays = component.example_inputs(spec, SHAPE_CHECK_FRAMES, 0)
    fields: dict[str, Any] = {"frames_per_second": float(component.frames_per_second(spec))}
    fields.update({f"{name} at {SHAPE_CHECK_FRAMES} frames": f"{array.dtype} {list(array.shape)}" for name, array in arrays.items()})
    fields[f"output at {SHAPE_CHECK_FRAMES} frames"] = int(component.output_samples(spec, SHAPE_CHECK_FRAMES))
    return fields


def accuracy_keys(component: Any) -> list[str]:
    """The in-run accuracy's metrics: every metric the component's budgets read, and the length mismatch."""
    keys = list(dict.fromkeys(metric for metric, _ in component.BUDGET_KEYS.values()))
    return keys + ["length_mismatch"]


# -- statistics and floor ------------------------------------------------------------------------

def graph_shapes(signature: Any, frames: int) -> dict[str, list[int]]:
    """Concrete shapes of a signature's inputs at ``frames`` (a time axis of k samples per frame: frames * k)."""
    shapes = {}
    for tensor in signature.inputs:
        shapes[tensor.name] = [dim if isinstance(dim, int) else frames * (int(dim.split("*", 1)[1]) if "*" in dim else 1) for dim in tensor.shape]
    return shapes


def model_flops_at(component: Any, spec: Any, frames: int) -> float:
    """FLOPs of the component's eager model at ``frames``, counted on the meta device (shapes only, no weights)."""
    import torch

    from .flops import torch_flops

    names = list(component.input_names(spec))
    feed = component.graph_feed(spec, component.example_inputs(spec, frames, 0), names)
    inputs = [torch.from_numpy(np.ascontiguousarray(feed[name])).to("meta") for name in names]
    with torch.device("meta"):  # tensors the forward makes are meta too
        return torch_flops(component.build_model(spec, None), inputs)[0]


def source_flops_per_second(spec: SourceSpec, info: dict[str, Any], component: Any, model_spec: Any,
                            weights: Callable[[str], Any] | None = None) -> tuple[float | None, str]:
    """FLOPs per second of input: counted on the artifact's own graph (the component's signature at
    ``FLOP_COUNT_FRAMES``), else by the component (``flops_per_second``) on the checkpoint's weights
    (``weights(path)`` loads them)."""
    from .flops import graph_flops
    from .sources import EXPORTS

    if spec.kind in EXPORTS:  # the artifact's model, as the file computes it (plus its small in-graph source)
        seconds = FLOP_COUNT_FRAMES / float(component.frames_per_second(model_spec))
        return model_flops_at(component, model_spec, FLOP_COUNT_FRAMES) / seconds, f"model at {FLOP_COUNT_FRAMES} frames (exported file)"
    if spec.kind != "artifact":
        if weights is None:
            return None, "not counted (no weights)"
        return float(component.flops_per_second(model_spec, weights(spec.path))["total"]), f"checkpoint model ({component.KIND} component's count)"
    frames = FLOP_COUNT_FRAMES
    frame_range = info.get("frames") or {}
    if frame_range:
        frames = min(max(frames, int(frame_range.get("min", frames))), int(frame_range.get("max", frames)))
    seconds = frames / float(component.frames_per_second(model_spec))
    import json

    manifest = json.loads((Path(spec.path) / "manifest.json").read_text())
    graphs = [name for name in manifest["backend"].get("files", {}).values() if name.endswith((".onnx", ".xml"))]
    if graphs:
        shapes = graph_shapes(component.signature(model_spec, list(info["input_names"])), frames)
        try:
            return graph_flops(Path(spec.path) / graphs[0], shapes) / seconds, f"artifact graph {graphs[0]} at {frames} frames"
        except Exception as exc:  # an op OpenVINO cannot read: fall back to the model count, say so
            fallback = f"model at {frames} frames (graph unreadable: {type(exc).__name__})"
    else:
        fallback = f"model at {frames} frames (no graph file to count)"
    return model_flops_at(component, model_spec, frames) / seconds, fallback


# -- the run -------------------------------------------------------------------------------------

def run_bench(sources: list[str] | list[SourceSpec], settings: BenchSettings | None = None, *,
              peaks: dict[str, Any] | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Benchmark every source in one interleaved run; returns the result dict (see module docstring).

    ``peaks`` reuses an earlier floor measurement (``floor.measure_peaks``) instead of measuring again.
    """
    settings = settings or BenchSettings()
    log = log or (lambda message: None)
    started = time.perf_counter()
    _check_settings(settings)
    specs = list(sources) if all(isinstance(s, SourceSpec) for s in sources) else parse_sources([str(s) for s in sources])

    workers: list[SourceWorker] = []
    with tempfile.TemporaryDirectory(prefix="rvc-bench-") as workdir:
        try:
            # Nothing is printed until every source has loaded: a bad SOURCE stays a one-line error.
            for spec in specs:
                worker = SourceWorker(spec, settings.threads, workdir)
                workers.append(worker)
                try:
                    worker.loaded()
                except WorkerError as exc:
                    if exc.failure.user_error:
                        _raise_user_error(spec, exc.failure)
                    raise InputError(f"{spec.text}: cannot be loaded ({exc.failure.type}: {exc.failure.message[:200]})") from None
            model, model_info, speaker = _common_model(workers, settings)
            log("loaded " + ", ".join(f"{w.spec.label} ({w.spec.kind}, {w.info.get('load_s', 0):.1f} s)" for w in workers))
            if settings.floor and peaks is None:
                from .floor import measure_peaks

                log(f"measuring peak fp32/bf16/int8 matrix-product rates on {settings.threads} threads")
                peaks = measure_peaks(settings.threads)
            weights = _checkpoint_weights()
            source_records = [_source_record(w, weights) for w in workers]
            if settings.chunk_seconds is not None:
                results = _run_streaming(workers, settings, model, speaker, log)
            else:
                results = _run_lengths(workers, settings, model, speaker, log)
            for worker, record in zip(workers, source_records):
                try:
                    latest = worker.call("latest_info")
                    record["size_bytes"] = latest.get("size_bytes", record["size_bytes"])
                    if "export_s" in latest:
                        record["export_s"] = latest["export_s"]
                except WorkerError:
                    pass
        finally:
            for worker in workers:
                worker.stop()

    _add_ratios(results, source_records, peaks)
    result = {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {**cpu_info(), "threads": settings.threads, "libraries": library_versions(*LIBRARIES)},
        "settings": {
            **{k: v for k, v in dataclasses.asdict(settings).items()},
            "mode": "streaming" if settings.chunk_seconds is not None else "lengths",
            "speaker": speaker,
            "noise": f"seed:{settings.seed}",
            "inputs": f"the {model.kind} component's example_inputs (frames, seed {settings.seed}, noise seed:{settings.seed}), identical for every source",
            "timing": "per call inside each source's worker process; warm-up first, then repetitions interleaved round-robin across sources",
            "memory": "peak resident set of each source's own worker process (lengths run shortest first)",
        },
        "model": model_info,
        "floor": peaks,
        "sources": source_records,
        "results": results,
        "linearity": _linearity(results, source_records) if settings.chunk_seconds is None else [],
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    return result


def _check_settings(settings: BenchSettings) -> None:
    if settings.threads < 1:
        raise InputError(f"--threads: {settings.threads} must be at least 1")
    if settings.repeat < 1 or settings.warmup < 0:
        raise InputError("--repeat must be at least 1")
    if settings.chunk_seconds is not None and not (0 < settings.chunk_seconds <= settings.stream_seconds):
        raise InputError(f"--chunk: {settings.chunk_seconds} s must be positive and at most {settings.stream_seconds} s")
    if not settings.seconds or any(not (s > 0) for s in settings.seconds):
        raise InputError(f"--seconds: lengths must be positive, got {list(settings.seconds)}")


def _common_model(workers: list[SourceWorker], settings: BenchSettings) -> tuple[BenchModel, dict[str, Any], int]:
    """The model all sources share (inputs must fit all of them), its description for the result, and
    the speaker to use. Sets each worker's ``component`` and ``model_spec``."""
    from ..components import get_component

    for worker in workers:
        worker.component = get_component(worker.info["kind"], for_build=False)
        worker.model_spec = worker.component.spec_from_dict(worker.info["spec"], source=worker.spec.text)
    head = workers[0]
    for worker in workers[1:]:
        if worker.component.KIND != head.component.KIND:
            raise InputError(
                f"{worker.spec.text}: a {worker.component.KIND} model, {head.spec.text} a {head.component.KIND} model; bench one model per run"
            )
    first = shared_fields(head.component, head.model_spec)
    for worker in workers[1:]:
        fields = shared_fields(worker.component, worker.model_spec)
        different = [k for k in first if fields.get(k) != first[k]]
        if different:
            raise InputError(
                f"{worker.spec.text}: a different model from {head.spec.text} ({', '.join(f'{k} {fields.get(k)} vs {first[k]}' for k in different)}); bench one model per run"
            )
    fixed = {w.spec.text: w.info.get("fixed_speaker") for w in workers if w.info.get("fixed_speaker") is not None}
    if len(set(fixed.values())) > 1:
        raise InputError(f"sources are built for different speakers ({', '.join(f'{k}: {v}' for k, v in fixed.items())}); bench them separately")
    speaker = next(iter(fixed.values())) if fixed else (settings.speaker or 0)
    if settings.speaker is not None and settings.speaker != speaker:
        raise InputError(f"--speaker {settings.speaker}: {next(iter(fixed))} is built for speaker {speaker} only")
    speakers = [int(w.info["n_speakers"]) for w in workers if w.info.get("n_speakers") is not None]
    if not speakers:
        if settings.speaker:
            raise InputError(f"--speaker {settings.speaker}: {head.component.KIND} models have no speakers")
    else:
        n_speakers = min(speakers)
        if not 0 <= speaker < n_speakers:
            raise InputError(f"--speaker {speaker}: out of range (the model has {n_speakers} speakers)")
    model = BenchModel(head.component, head.model_spec, float(head.component.frames_per_second(head.model_spec)))
    description = {
        "kind": model.kind,
        "describe": head.info.get("describe"),
        "frames_per_second": model.frames_per_second,
        **first,
        "spec": head.info["spec"],
    }
    return model, description, int(speaker)


def _checkpoint_weights() -> Callable[[str], Any]:
    """``weights(path)``: a checkpoint SOURCE's weights, read once per file (for the component's FLOP count)."""
    from .sources import load_checkpoint_source

    loaded: dict[str, Any] = {}

    def weights(path: str) -> Any:
        if path not in loaded:
            loaded[path] = load_checkpoint_source(path)[1].weights
        return loaded[path]

    return weights


def _source_record(worker: SourceWorker, weights: Callable[[str], Any] | None = None) -> dict[str, Any]:
    spec, info = worker.spec, worker.info
    flops, counted = (None, "not counted")
    try:
        flops, counted = source_flops_per_second(spec, info, worker.component, worker.model_spec, weights)
    except Exception as exc:  # a count that cannot be made leaves the floor ratio empty, nothing else
        counted = f"not counted ({type(exc).__name__})"
    record = {
        "label": spec.label,
        "kind": spec.kind,
        "path": spec.path,
        "precision": info.get("precision"),
        "backend": info.get("backend"),
        "size_bytes": info.get("size_bytes"),
        "size_what": info.get("size_what"),
        "load_s": info.get("load_s"),
        "fixed_speaker": info.get("fixed_speaker"),
        "frames": info.get("frames"),
        "gflop_per_second_of_audio": None if flops is None else float(f"{flops / 1e9:.4g}"),  # 4 significant digits: tiny networks too
        "flops_counted_from": counted,
        "report": _artifact_report(spec) if spec.kind == "artifact" else None,
    }
    if info.get("export"):
        record["export"] = info["export"]
    return record


def _artifact_report(spec: SourceSpec) -> dict[str, Any] | None:
    """Accuracy (worst golden case) and build facts from the artifact's own report.json."""
    import json

    try:
        report = json.loads((Path(spec.path) / "report.json").read_text())
    except (OSError, ValueError):
        return None
    cases = report.get("accuracy", {}).get("cases", [])
    snrs = [c.get("snr_db") for c in cases]
    finite = [v for v in snrs if v is not None]

    def worst(key: str) -> float | None:
        values = [c.get(key) for c in cases if c.get(key) is not None]
        return max(values) if values else None

    return {
        "accuracy_passed": report.get("accuracy", {}).get("passed"),
        "min_snr_db": min(finite) if finite else None,  # None with snr_exact: every case matched exactly
        "snr_exact": bool(cases) and not finite,
        "max_log_mel_db": worst("log_mel_db"),
        "max_mrstft": worst("mrstft"),
        "max_f0_cents": worst("f0_cents"),
        "golden_cases": len(cases),
        "build_time_s": report.get("build_time_s"),
        "precision": report.get("artifact", {}).get("precision"),
        "passes": [p.get("name") for p in report.get("passes", [])],
    }


def _failure(exc: WorkerError) -> tuple[str, str]:
    failure = exc.failure
    if failure.user_error:
        return "n/a", failure.message
    return "failed", f"{failure.type}: {failure.message}"


def _warm(workers: list[SourceWorker], key: str, calls: int, warmup: int, status: dict[str, tuple[str, str]]) -> None:
    for worker in workers:
        if worker.spec.label in status:
            continue
        try:
            for _ in range(warmup):
                for index in range(calls):
                    worker.call("run", key=key, index=index)
        except WorkerError as exc:
            status[worker.spec.label] = _failure(exc)


def _run_lengths(workers: list[SourceWorker], settings: BenchSettings, model: BenchModel, speaker: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    results = []
    reference = _reference_worker(workers)
    accuracy_length = min(settings.seconds, key=lambda s: abs(s - settings.accuracy_seconds))
    for seconds in sorted(settings.seconds):
        frames = model.frames(seconds)
        input_seconds = model.seconds(frames)
        key = f"len-{frames}"
        repeats = settings.repeats_for(seconds)
        status: dict[str, tuple[str, str]] = {
            w.spec.label: ("skipped", f"not run above {settings.max_seconds.get(w.spec.label, settings.max_seconds.get(w.spec.kind)):g} s (time budget)")
            for w in workers if not settings.runs_at(w.spec, seconds)
        }
        log(f"{input_seconds:g} s ({frames} frames): preparing inputs" + (" and naive exports" if any(w.spec.kind == "naive-onnx" for w in workers) else ""))
        for worker in workers:
            if worker.spec.label in status:
                continue
            try:
                worker.call("prepare", key=key, frames=frames, seed=settings.seed, speaker=speaker)
            except WorkerError as exc:
                status[worker.spec.label] = _failure(exc)
        warmup = settings.warmup if settings.warmup_max_seconds is None or seconds <= settings.warmup_max_seconds + 1e-9 else 0
        log(f"{input_seconds:g} s: warm-up ({warmup} run each), then {repeats} interleaved runs of {len(workers)} sources")
        _warm(workers, key, 1, warmup, status)
        times: dict[str, list[float]] = {w.spec.label: [] for w in workers}
        keep_output = seconds == accuracy_length
        for repetition in range(repeats):
            for worker in workers:
                if worker.spec.label in status:
                    continue
                try:
                    last = repetition == repeats - 1
                    times[worker.spec.label].append(worker.call("run", key=key, keep=last and keep_output))
                except WorkerError as exc:
                    status[worker.spec.label] = _failure(exc)
        accuracy = _in_run_accuracy(workers, reference, key, model, status) if keep_output else {}
        for worker in workers:
            label = worker.spec.label
            entry: dict[str, Any] = {"source": label, "seconds": input_seconds, "frames": frames}
            if label in status:
                entry.update(status=status[label][0], reason=status[label][1])
            else:
                entry.update(status="ok", **latency_stats(times[label], input_seconds))
                try:
                    entry["peak_rss_mb"] = round(worker.call("memory")["peak_rss_mb"], 1)
                except WorkerError:
                    entry["peak_rss_mb"] = None
                if label in accuracy:
                    entry["accuracy_vs_reference"] = accuracy[label]
            if entry["status"] != "skipped":
                try:
                    worker.call("release", key=key)
                except WorkerError:
                    pass
            results.append(entry)
            if entry["status"] == "ok":
                log(f"  {label:<40} p50 {entry['p50_ms']:9.1f} ms   RTF {entry['rtf_p50']:.3f}   peak {entry['peak_rss_mb']} MB")
            else:
                log(f"  {label:<40} {entry['status']}: {entry['reason'][:120]}")
    return results


def _reference_worker(workers: list[SourceWorker]) -> SourceWorker:
    """The accuracy reference: the first eager fp32 source, else the first source."""
    return next((w for w in workers if w.spec.kind == "eager-fp32"), workers[0])


def _in_run_accuracy(workers: list[SourceWorker], reference: SourceWorker, key: str, model: BenchModel, status: dict[str, Any]) -> dict[str, Any]:
    """The component's metrics (``compare``) of every source's kept output against the reference's."""
    keys = accuracy_keys(model.component)
    if reference.spec.label in status:
        return {}
    try:
        reference_output = reference.call("output", key=key)
    except WorkerError:
        return {}
    if reference_output is None:
        return {}
    out = {}
    for worker in workers:
        if worker.spec.label in status:
            continue
        try:
            output = reference_output if worker is reference else worker.call("output", key=key)
        except WorkerError:
            continue
        if output is None:
            continue
        metrics = model.component.compare(model.spec, reference_output, output)
        out[worker.spec.label] = {"reference": reference.spec.label, **{k: metrics.get(k) for k in keys}}
    return out


def _run_streaming(workers: list[SourceWorker], settings: BenchSettings, model: BenchModel, speaker: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    chunk_frames = model.frames(settings.chunk_seconds)
    chunk_seconds = model.seconds(chunk_frames)
    total_frames = max(chunk_frames, (model.frames(settings.stream_seconds) // chunk_frames) * chunk_frames)
    key = f"chunk-{chunk_frames}"
    status: dict[str, tuple[str, str]] = {}
    calls = total_frames // chunk_frames
    log(f"streaming: {calls} chunks of {chunk_seconds:g} s ({chunk_frames} frames), {settings.repeat} interleaved passes")
    for worker in workers:
        try:
            calls = worker.call("prepare", key=key, frames=total_frames, seed=settings.seed, speaker=speaker, chunk_frames=chunk_frames)
        except WorkerError as exc:
            status[worker.spec.label] = _failure(exc)
    _warm(workers, key, calls, settings.warmup, status)
    times: dict[str, list[float]] = {w.spec.label: [] for w in workers}
    for _ in range(settings.repeat):
        for worker in workers:
            if worker.spec.label in status:
                continue
            try:
                for index in range(calls):
                    times[worker.spec.label].append(worker.call("run", key=key, index=index))
            except WorkerError as exc:
                status[worker.spec.label] = _failure(exc)
    results = []
    for worker in workers:
        label = worker.spec.label
        entry: dict[str, Any] = {"source": label, "seconds": chunk_seconds, "frames": chunk_frames, "chunk": True, "chunks": calls}
        if label in status:
            entry.update(status=status[label][0], reason=status[label][1])
        else:
            entry.update(status="ok", **latency_stats(times[label], chunk_seconds))
            try:
                entry["peak_rss_mb"] = round(worker.call("memory")["peak_rss_mb"], 1)
            except WorkerError:
                entry["peak_rss_mb"] = None
        results.append(entry)
        log(f"  {label:<40} " + (f"chunk p50 {entry['p50_ms']:.1f} ms  p99 {entry['p99_ms']:.1f} ms  RTF {entry['rtf_p50']:.3f}" if entry["status"] == "ok" else f"{entry['status']}: {entry['reason'][:120]}"))
    return results


def _add_ratios(results: list[dict[str, Any]], sources: list[dict[str, Any]], peaks: dict[str, Any] | None) -> None:
    """Speed-up against the first source at the same length, and time against the precision's floor."""
    from .floor import floor_seconds, precision_class

    first = sources[0]["label"]
    by_source = {s["label"]: s for s in sources}
    baseline = {r["seconds"]: r for r in results if r["source"] == first and r["status"] == "ok"}
    for entry in results:
        if entry["status"] != "ok":
            continue
        base = baseline.get(entry["seconds"])
        entry["speedup_vs_first"] = base["p50_ms"] / entry["p50_ms"] if base else None
        source = by_source[entry["source"]]
        gflop = source.get("gflop_per_second_of_audio")
        entry["floor_precision"] = precision_class(source.get("precision"))
        floor = floor_seconds(gflop * 1e9 * entry["seconds"], source.get("precision"), peaks) if (peaks and gflop) else None
        entry["floor_ms"] = None if floor is None else floor * 1e3
        entry["x_floor"] = None if floor is None else entry["p50_ms"] / (floor * 1e3)


def _linearity(results: list[dict[str, Any]], sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Does cost grow with the audio? RTF at the longest length against RTF at 2 s (or the shortest)."""
    out = []
    for source in sources:
        rows = sorted((r for r in results if r["source"] == source["label"] and r["status"] != "skipped"), key=lambda r: r["seconds"])
        ok = [r for r in rows if r["status"] == "ok"]
        rtf = {f"{r['seconds']:g}": (r["rtf_p50"] if r["status"] == "ok" else None) for r in rows}
        base = next((r for r in ok if abs(r["seconds"] - 2.0) < 1e-6), ok[0] if ok else None)
        longest = rows[-1] if rows else None
        ratio = None
        if base and longest and longest["status"] == "ok" and longest["seconds"] > base["seconds"]:
            ratio = longest["rtf_p50"] / base["rtf_p50"]
        memory_growth = None
        if base and longest and longest["status"] == "ok" and base.get("peak_rss_mb") and longest.get("peak_rss_mb"):
            memory_growth = longest["peak_rss_mb"] / base["peak_rss_mb"]
        out.append({
            "source": source["label"],
            "rtf_p50": rtf,
            "base_seconds": base["seconds"] if base else None,
            "longest_seconds": longest["seconds"] if longest else None,
            "rtf_ratio_longest_to_base": ratio,
            "linear": None if ratio is None else ratio <= LINEARITY_TOLERANCE,
            "peak_rss_ratio_longest_to_base": memory_growth,
            "longest_status": longest["status"] if longest else None,
        })
    return out


# -- text output ---------------------------------------------------------------------------------

def _fmt(value: Any, spec: str = ".1f", missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    return format(value, spec)


def machine_line(result: dict[str, Any]) -> str:
    machine = result["machine"]
    libraries = ", ".join(f"{k} {v}" for k, v in machine.get("libraries", {}).items())
    return (f"{machine['cpu']}, {machine['cores']} logical cores, flags {' '.join(machine['flags']) or '-'}; "
            f"{machine['threads']} threads; {libraries}")


def format_table(result: dict[str, Any]) -> str:
    """The human table: one block per length (or the streaming block), then linearity and floor."""
    lines = [f"machine: {machine_line(result)}"]
    sources = {s["label"]: s for s in result["sources"]}
    first = result["sources"][0]["label"]
    header = f"  {'source':<36}{'p50 ms':>10}{'p90 ms':>10}{'p99 ms':>10}{'RTF p50':>9}{'speed-up':>9}{'x floor':>9}{'peak MB':>9}{'size MB':>9}"
    streaming = result["settings"]["mode"] == "streaming"
    what = "audio" if result.get("model", {}).get("kind", "synthesizer") == "synthesizer" else "input"
    for seconds in sorted({r["seconds"] for r in result["results"]}):
        rows = [r for r in result["results"] if r["seconds"] == seconds]
        runs = max((r.get("runs", 0) for r in rows), default=0)
        title = (f"streaming: {seconds:g} s chunks ({rows[0]['frames']} frames, {rows[0].get('chunks')} chunks per pass, {runs} chunk calls); latency per chunk"
                 if streaming else f"{seconds:g} s of {what} ({rows[0]['frames']} frames, {runs} runs)")
        lines += ["", title, header]
        for row in rows:
            size = sources[row["source"]].get("size_bytes")
            size_text = _fmt(size / 1e6 if size else None)
            if row["status"] != "ok":
                lines.append(f"  {row['source']:<36}{row['status']:>10}  {row['reason'][:80]}")
                continue
            lines.append(
                f"  {row['source']:<36}{row['p50_ms']:>10.1f}{row['p90_ms']:>10.1f}{row['p99_ms']:>10.1f}{row['rtf_p50']:>9.3f}"
                f"{_fmt(row.get('speedup_vs_first'), '.2f') + 'x':>9}{_fmt(row.get('x_floor'), '.2f'):>9}"
                f"{_fmt(row.get('peak_rss_mb'), '.0f'):>9}{size_text:>9}"
            )
    lines.append("")
    lines.append(f"speed-up: p50 of {first} / p50 of the source at the same length. x floor: p50 / (FLOPs / measured peak of the source's precision).")
    if result["linearity"]:
        lines += ["", "linearity (RTF p50 per length; flag when the longest exceeds 2 s by more than 10 %)"]
        for row in result["linearity"]:
            rtfs = "  ".join(f"{k} s: {_fmt(v, '.3f', 'n/a')}" for k, v in row["rtf_p50"].items())
            verdict = "-" if row["linear"] is None else ("linear" if row["linear"] else "NOT LINEAR")
            ratio = _fmt(row["rtf_ratio_longest_to_base"], ".2f")
            lines.append(f"  {row['source']:<36}{rtfs}   ratio {ratio}  {verdict}")
    floor = result.get("floor")
    if floor:
        peaks = "; ".join(f"{p} {_fmt(floor[p]['gops'], '.0f')} GOP/s ({floor[p]['implementation']})" for p in ("fp32", "bf16", "int8") if p in floor)
        lines += ["", f"floor: peak {peaks}, {floor['matrix_size']}x{floor['matrix_size']} matrix products on {floor['threads']} threads"]
        for source in result["sources"]:
            lines.append(f"  {source['label']:<36}{_fmt(source['gflop_per_second_of_audio'], '.1f')} GFLOP per s of {what} ({source['flops_counted_from']}), precision {source['precision']}")
    accuracy = [(r["source"], r["accuracy_vs_reference"]) for r in result["results"] if r.get("accuracy_vs_reference")]
    if accuracy:
        lines += ["", *_accuracy_lines(accuracy)]
    return "\n".join(lines)


ACCURACY_TITLES = {"snr_db": "SNR dB", "log_mel_db": "log-mel dB", "max_abs_error": "max abs error"}


def _accuracy_lines(accuracy: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Two metrics of the in-run accuracy: SNR and log-mel distance for audio, else the component's first two."""
    metrics = [k for k in accuracy[0][1] if k not in ("reference", "length_mismatch")]
    columns = [k for k in ("snr_db", "log_mel_db") if k in metrics] or metrics[:2]
    if len(columns) == 1 and len(metrics) > 1:
        columns.append(next(k for k in metrics if k != columns[0]))
    lines = [f"accuracy against {accuracy[0][1]['reference']} on the same input ({' / '.join(ACCURACY_TITLES.get(k, k) for k in columns)})"]
    for label, acc in accuracy:
        if acc.get("length_mismatch"):  # a real-time block renders only its block: its output is not the reference's
            lines.append(f"  {label:<36}" + f"  not comparable: its output is {acc['length_mismatch']:+d} samples against the reference's")
            continue
        cells = []
        for key in columns:
            if key == "snr_db":
                cells.append("exact" if acc[key] is None else f"{acc[key]:.1f}")  # None: identical outputs
            else:
                cells.append(_fmt(acc[key], ".4f"))
        lines.append(f"  {label:<36}" + "".join(f"{cell:>10}" for cell in cells))
    return lines


def write_json(result: dict[str, Any], path: Path) -> None:
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, allow_nan=False, default=_json_default) + "\n")
    tmp.replace(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

