"""What ``rvc-compile bench`` can run: a checkpoint, an artifact, or a named baseline of a checkpoint.

    CKPT.pth              eager fp32 PyTorch reference (what RVC's own inference runs on CPU)
    eager-fp32:CKPT.pth   the same, named explicitly
    eager-bf16:CKPT.pth   the same model under torch.autocast(cpu, bfloat16)
    naive-onnx:CKPT.pth   torch.onnx.export (TorchScript trace, no dynamic axes, no passes, no precision
                          work) run in ONNX Runtime with default session options and the thread count
    ARTIFACT/             a compiled artifact, through rvc_compile.runtime.load (its public ``infer``)

A naive export is a single trace: it only runs at the length it was traced at. That is how ad-hoc RVC
ONNX exports behave when no dynamic axes are declared, and it is the point of the baseline; the
bench exports one per benchmarked length, lazily, in a scratch folder, in a separate process (so
neither the export's time nor its memory count against the baseline's run).

Each source lives in its own worker process (see ``bench``); this module is what runs inside it,
served by ``SourceServer``. Every runner exposes ``describe()``, ``prepare(key, frames, seed, speaker, chunk_frames)``,
``run(key, index) -> audio`` and ``release(key)``.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..machine import peak_memory_mb
from ..artifact.golden import example_case
from ..components.synthesizer.inputs import make_noise

BASELINES = ("eager-fp32", "eager-bf16", "naive-onnx")
KINDS = BASELINES + ("artifact",)
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

def make_inputs(info: dict[str, Any], frames: int, seed: int) -> dict[str, np.ndarray]:
    """The benchmark's inputs at ``frames``: real-feature based content, a phrase f0 contour, seeded noise.

    Deterministic in (model shape, frames, seed), so every worker builds identical arrays itself.
    """
    case = example_case(info["feature_dim"], frames, seed)
    noise = make_noise(f"seed:{seed}", frames, inter_channels=info["inter_channels"], hop_length=info["hop_length"], has_f0=info["has_f0"])
    return {"features": case["features"], "f0": case["f0"] if info["has_f0"] else None, **noise}


def split_chunks(arrays: dict[str, Any], chunk_frames: int, hop_length: int) -> list[dict[str, Any]]:
    """Consecutive chunks of ``chunk_frames`` frames (and their noise), dropping an incomplete tail."""
    count = arrays["features"].shape[0] // chunk_frames
    chunks = []
    for i in range(count):
        frames = slice(i * chunk_frames, (i + 1) * chunk_frames)
        chunk = {
            "features": arrays["features"][frames],
            "f0": arrays["f0"][frames] if arrays["f0"] is not None else None,
            "prior_noise": np.ascontiguousarray(arrays["prior_noise"][:, :, frames]),
        }
        if "source_noise" in arrays:
            chunk["source_noise"] = np.ascontiguousarray(arrays["source_noise"][:, frames.start * hop_length : frames.stop * hop_length])
        chunks.append(chunk)
    return chunks


def _noise(arrays: dict[str, Any]) -> dict[str, np.ndarray]:
    return {name: arrays[name] for name in ("prior_noise", "source_noise") if name in arrays}


# -- runners ----------------------------------------------------------------------------------------

class _Runner:
    """Prepared inputs per key; subclasses implement ``_call(arrays)``."""

    def __init__(self) -> None:
        self.prepared: dict[str, list[dict[str, Any]]] = {}
        self.speaker = 0

    def prepare(self, key: str, frames: int, seed: int, speaker: int, chunk_frames: int | None = None) -> int:
        arrays = make_inputs(self.info, frames, seed)
        self.speaker = speaker
        self.prepared[key] = split_chunks(arrays, chunk_frames, self.info["hop_length"]) if chunk_frames else [arrays]
        self._prepare_graph(key, chunk_frames or frames)
        return len(self.prepared[key])

    def _prepare_graph(self, key: str, frames: int) -> None:
        pass

    def run(self, key: str, index: int = 0) -> np.ndarray:
        return self._call(key, self.prepared[key][index])

    def release(self, key: str) -> None:
        self.prepared.pop(key, None)


class EagerRunner(_Runner):
    """The fp32 reference (``ReferenceModel.infer``), optionally under bf16 autocast."""

    def __init__(self, path: str, threads: int, bf16: bool = False):
        super().__init__()
        from ..components.synthesizer.checkpoint import load_checkpoint
        from ..components.synthesizer.reference import ReferenceModel

        checkpoint = load_checkpoint(path)
        self.reference = ReferenceModel(checkpoint, threads=threads)
        self.bf16 = bf16
        spec = checkpoint.spec
        self.info = {
            **_model_info(spec),
            "precision": "bf16" if bf16 else "fp32",
            "backend": "pytorch eager" + (" + autocast(cpu, bfloat16)" if bf16 else ""),
            "size_bytes": Path(path).stat().st_size,
            "size_what": "checkpoint file (fp16 weights as RVC stores them)",
        }

    def _call(self, key: str, arrays: dict[str, Any]) -> np.ndarray:
        if not self.bf16:
            return self.reference.infer(arrays["features"], arrays["f0"], speaker=self.speaker, noise=_noise(arrays))
        import torch

        inputs = self.reference.graph_inputs(arrays["features"], arrays["f0"], self.speaker, _noise(arrays))
        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs]
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return self.reference.model(*tensors)[0].float().numpy()


class ArtifactRunner(_Runner):
    """A compiled artifact through the public runtime API (windowing, validation and all)."""

    def __init__(self, path: str, threads: int):
        super().__init__()
        from ..runtime import load

        self.voice = load(path, threads=threads)
        manifest = self.voice.manifest
        model = manifest["model"]
        self.info = {
            "sample_rate": self.voice.sample_rate,
            "hop_length": self.voice.hop_length,
            "feature_dim": self.voice.feature_dim,
            "has_f0": self.voice.has_f0,
            "inter_channels": self.voice.inter_channels,
            "n_speakers": self.voice.n_speakers,
            "fixed_speaker": self.voice.fixed_speaker,
            "frames": model.get("frames"),
            "precision": manifest["target"].get("precision"),
            "backend": manifest["backend"].get("name"),
            "artifact": {"name": manifest["name"], "version": manifest["version"]},
            "size_bytes": model_files_bytes(manifest),
            "size_what": "model files (" + ", ".join(sorted(manifest["backend"].get("files", {}).values())) + ")",
            "load_s": self.voice.load_time_s,
        }

    def _call(self, key: str, arrays: dict[str, Any]) -> np.ndarray:
        return self.voice.infer(arrays["features"], arrays["f0"], speaker=self.speaker, noise=_noise(arrays))


class NaiveOnnxRunner(_Runner):
    """One static TorchScript-traced ONNX export per length, run by a default ONNX Runtime session."""

    def __init__(self, path: str, threads: int, workdir: str):
        super().__init__()
        from ..components.synthesizer.spec import ModelSpec
        from ..worker import Worker

        self.path, self.threads, self.workdir = path, threads, Path(workdir)
        # torch lives in the exporter's process only: its memory never counts against the baseline's.
        self.exporter = Worker("rvc_compile.worker:FunctionCaller", name=f"naive ONNX exporter for {Path(path).name}")
        spec_dict = self._export_step(f"{__name__}:_checkpoint_spec", path)
        self.spec = ModelSpec.from_dict(spec_dict, source=path)
        self.sessions: dict[str, Any] = {}
        self.export_s: dict[str, float] = {}
        self.info = {
            **_model_info(self.spec),
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

    def _call(self, key: str, arrays: dict[str, Any]) -> np.ndarray:
        session = self.sessions[key]
        feeds = {
            "features": arrays["features"][None],
            "f0": arrays["f0"][None] if arrays["f0"] is not None else None,
            "speaker": np.array([self.speaker], dtype=np.int64),
            **_noise(arrays),
        }
        return session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})[0].reshape(-1)

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


def _model_info(spec: Any) -> dict[str, Any]:
    return {
        "sample_rate": spec.sampling_rate,
        "hop_length": spec.hop_length,
        "feature_dim": spec.feature_dim,
        "has_f0": spec.f0,
        "inter_channels": spec.inter_channels,
        "n_speakers": spec.n_speakers,
        "fixed_speaker": None,
        "frames": None,
    }


def _checkpoint_spec(path: str) -> dict[str, Any]:
    from ..components.synthesizer.checkpoint import load_checkpoint

    return load_checkpoint(path).spec.to_dict()


def export_naive_onnx(checkpoint_path: str, frames: int, out_path: str) -> str:
    """The export users make today: trace the model once at ``frames``, save, nothing else."""
    import contextlib
    import io
    import warnings

    import torch

    from ..capture.export import graph_inputs
    from ..components.synthesizer.checkpoint import load_checkpoint
    from ..components.synthesizer.model import build_model, input_names

    checkpoint = load_checkpoint(checkpoint_path)
    spec = checkpoint.spec
    model = build_model(spec, checkpoint.state_dict)
    names = input_names(spec)
    example = tuple(torch.from_numpy(a) for a in graph_inputs(spec, names, frames, seed=0).values())
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(model, example, out_path, input_names=names, output_names=["audio"], opset_version=NAIVE_ONNX_OPSET, dynamo=False)
    return out_path


def model_files_bytes(manifest: dict[str, Any]) -> int:
    """Bytes of the files the backend loads (graph and weights): what a downstream app ships."""
    names = set(manifest["backend"].get("files", {}).values())
    return int(sum(entry["size"] for name, entry in manifest["files"].items() if name in names))


def open_runner(spec: SourceSpec, threads: int, workdir: str) -> _Runner:
    if spec.kind == "artifact":
        return ArtifactRunner(spec.path, threads)
    if spec.kind == "naive-onnx":
        return NaiveOnnxRunner(spec.path, threads, workdir)
    return EagerRunner(spec.path, threads, bf16=spec.kind == "eager-bf16")


class SourceServer:
    """One source inside its worker process (the ``rvc_compile.worker`` handler ``bench`` starts).

    Loads the source once; each method is one request from the parent. ``run`` times the model call
    alone and returns seconds; the audio of a run asked to ``keep`` it is fetched later with ``output``
    (for the in-run accuracy), so timing never includes sending audio between processes.
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
        audio = self.runner.run(key, index)
        elapsed = time.perf_counter() - start
        if keep:
            self.outputs[key] = np.asarray(audio, dtype=np.float32).reshape(-1)
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
