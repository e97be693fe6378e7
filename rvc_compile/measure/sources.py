"""What ``rvc-compile bench`` can run: a checkpoint, an artifact, or a named baseline of a checkpoint.

    CKPT.pth              eager fp32 PyTorch reference (what RVC's own inference runs on CPU)
    eager-fp32:CKPT.pth   the same, named explicitly
    eager-bf16:CKPT.pth   the same model under torch.autocast(cpu, bfloat16)
    naive-onnx:CKPT.pth   torch.onnx.export (TorchScript trace, no dynamic axes, no passes, no precision
                          work) run in ONNX Runtime with default session options and the thread count
    ARTIFACT/             a compiled artifact of any component, through rvc_compile.runtime.load
                          (``CompiledModel.run_case``; for a synthesizer, its public ``infer``)
    vc-client:FILE.onnx   a file ``rvc-compile export`` wrote, fed the way its app feeds it (names or
    rvc-onnx:FILE.onnx    positions, dtypes, coarse pitch; the noise the app leaves to the graph is drawn
                          there), in ONNX Runtime with the thread count; its sidecar FILE.onnx.json says
                          which voice it holds

Checkpoint sources are RVC synthesizer checkpoints (``CHECKPOINT_COMPONENT``): a file does not say
which component it belongs to, an artifact's manifest does. The eager runners use the component's
``build_model``/``input_names``/``graph_feed``; the naive ONNX baseline is a synthesizer baseline
(the ad-hoc RVC export it stands for).

Inputs come from the component (``example_inputs`` with noise ``seed:{seed}``), so every source of a
run gets identical arrays; streaming cuts them along the time axes of the component's signature.

A naive export is a single trace: it only runs at the length it was traced at. That is how ad-hoc RVC
ONNX exports behave when no dynamic axes are declared, and it is the point of the baseline; the
bench exports one per benchmarked length, lazily, in a scratch folder, in a separate process (so
neither the export's time nor its memory count against the baseline's run).

Each source lives in its own worker process (see ``bench``); this module is what runs inside it,
served by ``SourceServer``. Every runner has ``info`` (a dict: ``model_info`` and the source's facts),
``prepare(key, frames, seed, speaker, chunk_frames)``, ``run(key, index) -> flat output`` and
``release(key)``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..machine import peak_memory_mb

BASELINES = ("eager-fp32", "eager-bf16", "naive-onnx")
EXPORTS = ("vc-client", "rvc-onnx")  # files `rvc-compile export` writes, one kind per profile
KINDS = BASELINES + EXPORTS + ("artifact",)
NAIVE_ONNX_OPSET = 17


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    text: str  # as the user wrote it
    kind: str  # one of KINDS
    path: str
    label: str


def parse_source(text: str) -> SourceSpec:
    """Resolve one SOURCE argument; InputError (one line, exit 2) when it names nothing usable."""
    from ..sources import is_artifact

    prefix, separator, rest = str(text).partition(":")
    if separator and prefix in KINDS:
        kind, path = prefix, Path(rest)
    else:
        path = Path(text)
        if not path.exists() and separator and "/" not in prefix and len(prefix) > 1:
            raise InputError(f"{text}: unknown source kind {prefix!r} (use a checkpoint, an artifact folder, or {', '.join(p + ':CKPT' for p in BASELINES)})")
        kind = "artifact" if is_artifact(path) else "eager-fp32"
    if not path.exists():
        raise InputError(f"{text}: no such checkpoint or artifact")
    if kind == "artifact" and not is_artifact(path):
        raise InputError(f"{text}: not an rvc-compile artifact (no manifest.json)")
    if kind in EXPORTS:
        from ..export import sidecar_path

        if not path.is_file() or not sidecar_path(path).is_file():
            raise InputError(f"{text}: {kind} needs a file `rvc-compile export` wrote, with its sidecar {sidecar_path(path).name}")
        return SourceSpec(text=str(text), kind=kind, path=str(path.resolve()), label=f"{kind}:{path.stem}")
    if kind != "artifact" and not path.is_file():
        raise InputError(f"{text}: {kind} needs a checkpoint file; {path} is a folder without manifest.json")
    return SourceSpec(text=str(text), kind=kind, path=str(path.resolve()), label=_default_label(kind, path))


def _default_label(kind: str, path: Path) -> str:
    if kind != "artifact":
        return kind
    import json

    try:
        manifest = json.loads((path / "manifest.json").read_text())
        return f"{manifest['name']}@{manifest['version']}"
    except (OSError, ValueError, KeyError, TypeError):
        return path.name


def parse_sources(texts: list[str]) -> list[SourceSpec]:
    """Resolve every SOURCE and give each a unique label (kind or artifact name, then the file stem)."""
    if not texts:
        raise InputError("bench: give at least one SOURCE (a checkpoint, an artifact folder or KIND:CKPT)")
    specs = [parse_source(text) for text in texts]
    seen: dict[str, int] = {}
    out = []
    for spec in specs:
        label = spec.label
        if sum(s.label == label for s in specs) > 1 and spec.kind != "artifact":
            label = f"{label}:{Path(spec.path).stem}"
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label}#{seen[label]}"
        out.append(dataclasses.replace(spec, label=label))
    return out


# -- inputs ---------------------------------------------------------------------------------------

# Checkpoint sources (CKPT, eager-fp32:CKPT, eager-bf16:CKPT, naive-onnx:CKPT) are read as this
# component's checkpoints; an artifact names its own component in its manifest.
CHECKPOINT_COMPONENT = "synthesizer"


@dataclasses.dataclass(frozen=True)
class CheckpointSource:
    """A bare checkpoint path in the shape of a recipe's source section (what ``Component.load`` reads)."""

    checkpoint: Path
    config: Path | None = None
    sample_rate: str | None = None
    sha256: str | None = None


def load_checkpoint_source(path: str | Path) -> tuple[Any, Any]:
    """(component, ``LoadedSource``) of a checkpoint SOURCE: weights read and validated, one-line errors."""
    from ..components import get_component

    component = get_component(CHECKPOINT_COMPONENT)
    return component, component.load(CheckpointSource(Path(path)))


def make_inputs(component: Any, spec: Any, frames: int, seed: int, speaker: int = 0) -> dict[str, np.ndarray]:
    """The benchmark's user-level inputs at ``frames`` (batch dimension 1): the component's example inputs
    with the noise draws ``seed:{seed}`` (for the synthesizer: real-feature based content, a phrase f0
    contour, seeded noise). Deterministic in (model, frames, seed, speaker), so every worker builds
    identical arrays itself."""
    return component.example_inputs(spec, frames, seed, noise=f"seed:{seed}", speaker=speaker)


def time_axes(component: Any, spec: Any, names: Any) -> dict[str, tuple[int, int]]:
    """(axis, samples per frame) of every user-level input ``names`` that has a time axis.

    From the component's signature of those names (numpy only: an artifact's worker never imports torch;
    for the synthesizer they are the eager model's inputs, ``component.input_names(spec)``)."""
    return component.signature(spec, list(names)).time_axes()


def split_chunks(arrays: dict[str, np.ndarray], chunk_frames: int, axes: dict[str, tuple[int, int]]) -> list[dict[str, np.ndarray]]:
    """Consecutive chunks of ``chunk_frames`` frames, dropping an incomplete tail: every array with a time
    axis in ``axes`` (name -> (axis, samples per frame)) is cut along it, the others (a speaker id) go
    whole into every chunk."""
    timed = [name for name in arrays if name in axes]
    if not timed:
        raise InputError(f"streaming: the inputs ({', '.join(arrays)}) have no time axis to cut into chunks")
    axis, per_frame = axes[timed[0]]
    count = arrays[timed[0]].shape[axis] // per_frame // chunk_frames
    chunks = []
    for index in range(count):
        chunk = {}
        for name, array in arrays.items():
            if name not in axes:
                chunk[name] = array
                continue
            axis, per_frame = axes[name]
            cut = [slice(None)] * array.ndim
            cut[axis] = slice(index * chunk_frames * per_frame, (index + 1) * chunk_frames * per_frame)
            chunk[name] = np.ascontiguousarray(array[tuple(cut)])
        chunks.append(chunk)
    return chunks


def model_info(component: Any, spec: Any) -> dict[str, Any]:
    """What the parent needs of a source's model: its component and spec (the parent rebuilds the spec
    with ``component.spec_from_dict``), frame rate and speakers."""
    return {
        "kind": component.KIND,
        "spec": spec.to_dict(),
        "describe": component.describe(spec),
        "frames_per_second": float(component.frames_per_second(spec)),
        "n_speakers": getattr(spec, "n_speakers", None),  # None: a component without speakers
        "fixed_speaker": None,
        "frames": None,
    }


# -- runners ----------------------------------------------------------------------------------------

class _Runner:
    """Prepared inputs per key; subclasses set ``component``, ``spec``, ``info`` and implement ``_call(key, arrays)``."""

    def __init__(self, component: Any, spec: Any) -> None:
        self.component = component
        self.spec = spec
        self.prepared: dict[str, list[dict[str, np.ndarray]]] = {}

    def prepare(self, key: str, frames: int, seed: int, speaker: int, chunk_frames: int | None = None) -> int:
        arrays = make_inputs(self.component, self.spec, frames, seed, speaker)
        if chunk_frames:
            self.prepared[key] = split_chunks(arrays, chunk_frames, time_axes(self.component, self.spec, arrays))
        else:
            self.prepared[key] = [arrays]
        self._prepare_graph(key, chunk_frames or frames)
        return len(self.prepared[key])

    def _prepare_graph(self, key: str, frames: int) -> None:
        pass

    def _call(self, key: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def run(self, key: str, index: int = 0) -> np.ndarray:
        return self._call(key, self.prepared[key][index])

    def release(self, key: str) -> None:
        self.prepared.pop(key, None)


class EagerRunner(_Runner):
    """The component's fp32 eager model (``build_model``, fed ``graph_feed`` in ``input_names`` order),
    optionally under bf16 autocast."""

    def __init__(self, path: str, threads: int, bf16: bool = False):
        import torch

        component, loaded = load_checkpoint_source(path)
        super().__init__(component, loaded.spec)
        if threads:
            torch.set_num_threads(threads)
        self.model = component.build_model(loaded.spec, loaded.weights)
        self.names = list(component.input_names(loaded.spec))
        self.bf16 = bf16
        self.info = {
            **model_info(component, loaded.spec),
            "precision": "bf16" if bf16 else "fp32",
            "backend": "pytorch eager" + (" + autocast(cpu, bfloat16)" if bf16 else ""),
            "size_bytes": Path(path).stat().st_size,
            "size_what": "checkpoint file (fp16 weights as RVC stores them)" if component.KIND == "synthesizer" else "checkpoint file",
        }

    def _call(self, key: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
        import contextlib

        import torch

        feed = self.component.graph_feed(self.spec, arrays, self.names)
        tensors = [torch.from_numpy(np.ascontiguousarray(feed[name])) for name in self.names]
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            output = self.model(*tensors)
        if isinstance(output, (tuple, list)):
            output = output[0]
        return output.float().numpy().reshape(-1)


class ArtifactRunner(_Runner):
    """A compiled artifact through the public runtime API: ``CompiledModel.run_case`` (for a synthesizer,
    ``CompiledVoice.infer`` with its validation, host-side NSF source and windows)."""

    def __init__(self, path: str, threads: int):
        from ..runtime import load

        self.compiled = load(path, threads=threads)
        super().__init__(self.compiled.component, self.compiled.spec)
        manifest = self.compiled.manifest
        self.info = {
            **model_info(self.component, self.spec),
            "fixed_speaker": getattr(self.compiled, "fixed_speaker", None),
            "frames": manifest["model"].get("frames"),
            "input_names": list(self.compiled.input_names),
            "precision": manifest["target"].get("precision"),
            "backend": manifest["backend"].get("name"),
            "artifact": {"name": manifest["name"], "version": manifest["version"]},
            "size_bytes": model_files_bytes(manifest),
            "size_what": "model files (" + ", ".join(sorted(manifest["backend"].get("files", {}).values())) + ")",
            "load_s": self.compiled.load_time_s,
        }

    def _call(self, key: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
        return self.compiled.run_case(arrays)


class NaiveOnnxRunner(_Runner):
    """One static TorchScript-traced ONNX export per length, run by a default ONNX Runtime session.

    A synthesizer baseline (what ad-hoc RVC exports are): checkpoint sources are synthesizer checkpoints."""

    def __init__(self, path: str, threads: int, workdir: str):
        from ..components import get_component
        from ..worker import Worker

        component = get_component(CHECKPOINT_COMPONENT)
        self.path, self.threads, self.workdir = path, threads, Path(workdir)
        # torch lives in the exporter's process only: its memory never counts against the baseline's.
        self.exporter = Worker("rvc_compile.worker:FunctionCaller", name=f"naive ONNX exporter for {Path(path).name}")
        spec_dict = self._export_step(f"{__name__}:_checkpoint_spec", path)
        super().__init__(component, component.spec_from_dict(spec_dict, source=path))
        self.sessions: dict[str, Any] = {}
        self.export_s: dict[str, float] = {}
        self.info = {
            **model_info(component, self.spec),
            "precision": "fp32",
            "backend": "onnxruntime (default session options)",
            "size_bytes": None,
            "size_what": "exported ONNX file",
            "export": f"torch.onnx.export dynamo=False (TorchScript trace), opset {NAIVE_ONNX_OPSET}, static shapes, one file per length",
        }

    def _prepare_graph(self, key: str, frames: int) -> None:
        import onnxruntime as ort

        out = self.workdir / f"naive-{Path(self.path).stem}-{frames}.onnx"
        if not out.exists():
            start = time.perf_counter()
            self._export_step(f"{__name__}:export_naive_onnx", self.path, frames, str(out))
            self.export_s[str(frames)] = round(time.perf_counter() - start, 1)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        self.sessions[key] = ort.InferenceSession(str(out), options, providers=["CPUExecutionProvider"])
        self.info["size_bytes"] = out.stat().st_size
        self.info["export_s"] = self.export_s

    def _call(self, key: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
        session = self.sessions[key]
        names = [i.name for i in session.get_inputs()]
        return session.run(None, self.component.graph_feed(self.spec, arrays, names))[0].reshape(-1)

    def release(self, key: str) -> None:
        super().release(key)
        self.sessions.pop(key, None)

    def _export_step(self, target: str, *args: Any) -> Any:
        from ..worker import WorkerError

        try:
            return self.exporter.call("call", target=target, args=args)
        except WorkerError as exc:
            raise exc.unwrap() from None  # an unreadable checkpoint stays the user error it is

    def close(self) -> None:
        self.exporter.stop()


class ExportedFileRunner(_Runner):
    """A file ``rvc-compile export`` wrote, fed exactly as its app feeds it (``export.profiles.client_feed``):
    VC Client by name with the features' dtype taken from the first input, OnnxRVC by position with the
    prior noise as ``rnd``; noise the app does not feed is drawn in the graph. The voice (and so the
    benchmark inputs) comes from the file's sidecar."""

    def __init__(self, path: str, threads: int, profile: str):
        import json

        import onnxruntime as ort

        from ..components import get_component
        from ..export import sidecar_path
        from ..export.profiles import get_profile

        record = json.loads(sidecar_path(Path(path)).read_text())
        component = get_component(record["component"]["kind"], for_build=False)
        super().__init__(component, component.spec_from_dict(record["component"]["spec"], source=str(sidecar_path(Path(path)))))
        self.profile = get_profile(profile)
        if record.get("profile") != profile:
            raise InputError(f"{path}: a {record.get('profile')} file, not {profile} (its sidecar says so)")
        self.precision = record["precision"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.names = [item.name for item in self.session.get_inputs()]  # by name (VC Client) and position (OnnxRVC) alike
        self.info = {
            **model_info(component, self.spec),
            "fixed_speaker": record["voice"].get("fixed_speaker"),
            "precision": self.precision,
            "backend": f"onnxruntime ({self.profile.client} file, noise drawn in the graph)",
            "size_bytes": Path(path).stat().st_size,
            "size_what": f"{Path(path).name} ({profile} profile)",
            "export": {"profile": profile, "source": record.get("source", {}).get("artifact")},
        }

    def _call(self, key: str, arrays: dict[str, np.ndarray]) -> np.ndarray:
        from ..export.profiles import client_feed

        feed = client_feed(self.profile, features=arrays["features"], f0=arrays.get("f0"), speaker=int(arrays["speaker"][0]),
                           prior_noise=arrays.get("prior_noise"), has_f0=self.spec.f0, precision=self.precision)
        return np.asarray(self.session.run(None, {name: feed[name] for name in self.names})[0]).reshape(-1)


def _checkpoint_spec(path: str) -> dict[str, Any]:
    return load_checkpoint_source(path)[1].spec.to_dict()


def export_naive_onnx(checkpoint_path: str, frames: int, out_path: str) -> str:
    """The export users make today: trace the model once at ``frames``, save, nothing else."""
    import contextlib
    import io
    import warnings

    import torch

    component, loaded = load_checkpoint_source(checkpoint_path)
    spec = loaded.spec
    model = component.build_model(spec, loaded.weights)
    names = component.input_names(spec)
    example = component.graph_feed(spec, component.example_inputs(spec, frames, seed=0), names)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(torch.from_numpy(example[name]) for name in names), out_path, input_names=names,
                          output_names=[component.OUTPUT], opset_version=NAIVE_ONNX_OPSET, dynamo=False)
    return out_path


def model_files_bytes(manifest: dict[str, Any]) -> int:
    """Bytes of the files the backend loads (graph and weights): what a downstream app ships."""
    names = set(manifest["backend"].get("files", {}).values())
    return int(sum(entry["size"] for name, entry in manifest["files"].items() if name in names))


def open_runner(spec: SourceSpec, threads: int, workdir: str) -> _Runner:
    if spec.kind == "artifact":
        return ArtifactRunner(spec.path, threads)
    if spec.kind in EXPORTS:
        return ExportedFileRunner(spec.path, threads, spec.kind)
    if spec.kind == "naive-onnx":
        return NaiveOnnxRunner(spec.path, threads, workdir)
    return EagerRunner(spec.path, threads, bf16=spec.kind == "eager-bf16")


class SourceServer:
    """One source inside its worker process (the ``rvc_compile.worker`` handler ``bench`` starts).

    Loads the source once; each method is one request from the parent. ``run`` times the model call
    alone and returns seconds; the output of a run asked to ``keep`` it is fetched later with ``output``
    (for the in-run accuracy), so timing never includes sending outputs between processes.
    """

    def __init__(self, spec: SourceSpec, threads: int, workdir: str):
        start = time.perf_counter()
        self.runner = open_runner(spec, threads, workdir)
        self.info = dict(self.runner.info)
        self.info.setdefault("load_s", time.perf_counter() - start)
        self.outputs: dict[str, np.ndarray] = {}

    def ready(self) -> dict[str, Any]:
        return {"info": self.info, "rss_mb": peak_memory_mb()}

    def prepare(self, **args: Any) -> int:
        return self.runner.prepare(**args)

    def run(self, key: str, index: int = 0, keep: bool = False) -> float:
        start = time.perf_counter()
        output = self.runner.run(key, index)
        elapsed = time.perf_counter() - start
        if keep:
            self.outputs[key] = np.asarray(output, dtype=np.float32).reshape(-1)
        return elapsed

    def output(self, key: str) -> np.ndarray | None:
        return self.outputs.pop(key, None)

    def release(self, key: str) -> None:
        self.runner.release(key)
        self.outputs.pop(key, None)

    def memory(self) -> dict[str, float]:
        return {"peak_rss_mb": peak_memory_mb()}

    def latest_info(self) -> dict[str, Any]:
        """The runner's info now (a naive export records its size and export time as lengths are prepared)."""
        return dict(self.runner.info)

    def close(self) -> None:
        if hasattr(self.runner, "close"):
            self.runner.close()
