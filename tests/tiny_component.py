"""A test-only component adapter: a three-layer 1-D conv network, no RVC code.

It proves the pipeline is generic: the same build, verify, bench and runtime code that compile the RVC
synthesizer compile this through ``rvc_compile.components.base.Component`` alone. Its source file is a
torch ``.pt`` holding ``{"format": "tiny-conv/1", "config": {...}, "weights": {...}}``.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from rvc_compile.components.base import Component, LoadedSource, Signature, TensorSpec
from rvc_compile.errors import CheckpointError

FORMAT = "tiny-conv/1"
FRAMES_PER_SECOND = 100.0


@dataclass(frozen=True)
class TinySpec:
    channels: int = 4
    hidden: int = 16
    outputs: int = 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _model(spec: TinySpec) -> Any:
    import torch

    class TinyConv(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv_in = torch.nn.Conv1d(spec.channels, spec.hidden, 5, padding=2)
            self.conv_mid = torch.nn.Conv1d(spec.hidden, spec.hidden, 3, padding=1)
            self.conv_out = torch.nn.Conv1d(spec.hidden, spec.outputs, 1)

        def forward(self, signal: torch.Tensor) -> torch.Tensor:
            hidden = torch.nn.functional.leaky_relu(self.conv_in(signal), 0.1)
            hidden = hidden + torch.nn.functional.leaky_relu(self.conv_mid(hidden), 0.1)
            return self.conv_out(hidden)

    return TinyConv()


def write_source(path: Path, spec: TinySpec = TinySpec(), seed: int = 0) -> Path:
    """A random-weight source file in the adapter's format."""
    import torch

    torch.manual_seed(seed)
    model = _model(spec)
    torch.save({"format": FORMAT, "config": spec.to_dict(), "weights": model.state_dict()}, path)
    return path


class TinyConvComponent(Component):
    KIND = "tiny-conv"
    OUTPUT = "output"
    BUDGET_KEYS = {"min_snr_db": ("snr_db", "min"), "max_abs_error": ("max_abs_error", "max")}
    DEFAULT_BUDGETS = {
        "fp32": {"min_snr_db": 60.0, "max_abs_error": None},
        "fp16": {"min_snr_db": 40.0, "max_abs_error": None},
        "bf16": {"min_snr_db": 25.0, "max_abs_error": None},
        "int8": {"min_snr_db": 20.0, "max_abs_error": None},
        "auto": {"min_snr_db": 40.0, "max_abs_error": None},
    }

    def load(self, source: Any) -> LoadedSource:
        import torch

        path = Path(source.checkpoint)
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise CheckpointError(f"{path}: no such file") from None
        except Exception as exc:  # torch raises many types for a damaged file
            raise CheckpointError(f"{path}: not a readable tiny-conv file ({type(exc).__name__})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a {FORMAT} file")
        spec = self.spec_from_dict(data["config"], str(path))
        weights = {name: tensor.float() for name, tensor in data["weights"].items()}
        expected = {name: tuple(t.shape) for name, t in _model(spec).state_dict().items()}
        if {name: tuple(t.shape) for name, t in weights.items()} != expected:
            raise CheckpointError(f"{path}: weights do not match the config {spec.to_dict()}")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return LoadedSource(path=path, sha256=digest, spec=spec, weights=weights, description={"format": FORMAT}, cache_inputs={"checkpoint": digest})

    def spec_from_dict(self, data: Mapping[str, Any], source: str) -> TinySpec:
        try:
            spec = TinySpec(**{key: int(value) for key, value in data.items()})
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: bad tiny-conv config ({exc})") from None
        return spec

    def build_model(self, spec: TinySpec, weights: Mapping[str, Any] | None) -> Any:
        model = _model(spec)
        if weights is not None:
            model.load_state_dict(dict(weights), strict=True)
        model.input_names = ["signal"]
        return model.eval().requires_grad_(False)

    def input_names(self, spec: TinySpec) -> list[str]:
        return ["signal"]

    def frames_per_second(self, spec: TinySpec) -> float:
        return FRAMES_PER_SECOND

    def signature(self, spec: TinySpec, input_names: list[str]) -> Signature:
        return Signature(
            inputs=(TensorSpec("signal", "float32", (1, spec.channels, "frames")),),
            outputs=(TensorSpec("output", "float32", (1, spec.outputs, "frames")),),
            frames_per_second=FRAMES_PER_SECOND,
        )

    def output_samples(self, spec: TinySpec, frames: int) -> int:
        return spec.outputs * frames

    def example_inputs(self, spec: TinySpec, frames: int, seed: int, *, noise: str | None = None, speaker: int = 0) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {"signal": rng.standard_normal((1, spec.channels, frames), dtype=np.float32)}

    def calibration_feeds(self, spec: TinySpec, recipe: Any, names: list[str], *, static: int | None, speaker: int,
                          cache_dir: Path | None, log: Callable[[str], None]) -> tuple[list[dict[str, np.ndarray]], str, str]:
        frames = static or recipe.shapes.opt_frames
        feeds = [self.example_inputs(spec, frames, 1000 + index) for index in range(recipe.calibration.count)]
        digest = hashlib.sha256(b"".join(feed["signal"].tobytes() for feed in feeds)).hexdigest()
        return feeds, digest, f"{len(feeds)} random cases"

    def compare(self, spec: TinySpec, reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
        reference = np.asarray(reference, np.float64).reshape(-1)
        candidate = np.asarray(candidate, np.float64).reshape(-1)
        if reference.shape != candidate.shape:
            return {"length_mismatch": int(candidate.size - reference.size), "snr_db": -1e9, "max_abs_error": 1e9}
        error = float(np.sum((candidate - reference) ** 2))
        snr = None if error == 0 else float(10 * np.log10(np.sum(reference ** 2) / error))
        return {"snr_db": snr, "max_abs_error": float(np.max(np.abs(candidate - reference)))}

    def flops_per_second(self, spec: TinySpec, weights: Mapping[str, Any]) -> dict[str, float]:
        per_frame = sum(2 * int(np.prod(tuple(weights[name].shape))) for name in weights if name.endswith("weight"))
        return {"total": per_frame * FRAMES_PER_SECOND}
