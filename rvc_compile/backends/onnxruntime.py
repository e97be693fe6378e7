"""ONNX Runtime backend (CPU). The artifact holds the ONNX graph and the session options used."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, RecipeError

NAME = "onnxruntime"
MODEL_FILE = "model.onnx"
PRECISIONS = ("fp32",)
DEVICES = ("cpu",)
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


def check_target(target: Any) -> None:
    if target.device not in DEVICES:
        raise RecipeError(f"target.device: onnxruntime backend supports {', '.join(DEVICES)}, not {target.device!r}")
    if target.precision not in PRECISIONS:
        raise RecipeError(f"target.precision: onnxruntime backend supports {', '.join(PRECISIONS)}, not {target.precision!r}")


def session_options(threads: int, graph_optimization: str) -> dict[str, Any]:
    return {
        "intra_op_num_threads": int(threads),
        "inter_op_num_threads": 1,
        "execution_mode": "sequential",
        "graph_optimization_level": graph_optimization,
        "providers": ["CPUExecutionProvider"],
    }


def build(onnx_path: Path, target: Any, out_dir: Path) -> dict[str, Any]:
    import onnx
    import onnxruntime

    onnx.checker.check_model(str(onnx_path), full_check=True)
    shutil.copyfile(onnx_path, out_dir / MODEL_FILE)
    return {
        "name": NAME,
        "library_version": onnxruntime.__version__,
        "files": {"model": MODEL_FILE},
        "session_options": session_options(target.threads, target.graph_optimization),
    }


class Runner:
    """One InferenceSession; ``run`` is safe to call from several threads (ORT sessions are)."""

    def __init__(self, model_path: Path, options: dict[str, Any], threads: int | None = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads or options["intra_op_num_threads"])
        so.inter_op_num_threads = int(options.get("inter_op_num_threads", 1))
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        level = options.get("graph_optimization_level", "all")
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
        so.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(model_path), sess_options=so, providers=list(options.get("providers", ["CPUExecutionProvider"])))
        except Exception as exc:  # ORT raises its own exception types for bad graphs
            raise ArtifactError(f"{model_path}: onnxruntime cannot load the graph ({str(exc).splitlines()[0][:200]})") from None
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, {name: inputs[name] for name in self.input_names})[0]


def load(artifact_dir: Path, backend: dict[str, Any], threads: int | None = None) -> Runner:
    return Runner(Path(artifact_dir) / backend["files"]["model"], backend["session_options"], threads)
