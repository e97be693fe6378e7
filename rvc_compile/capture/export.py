"""Graph capture: torch model -> ONNX with a symbolic time axis, and the multi-length check.

The dynamo exporter (``torch.export`` underneath) is the default: it keeps the frame count symbolic
end to end. The TorchScript exporter is the fallback a recipe can choose; it traces at one length,
so ``dynamic_axes`` are declared and the multi-length check is what proves the graph generalises.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import BuildError, GateFailure, first_line
from ..artifact.golden import example_case
from ..components.synthesizer.inputs import graph_feed, make_noise

# Checked lengths must match the fp32 reference this closely: far below audibility, above fp32 noise.
FP32_MAX_RELATIVE_ERROR = 1e-4


def example_inputs(spec: Any, frames: int, seed: int, speaker: int = 0) -> dict[str, np.ndarray]:
    """User-level example inputs at ``frames`` (batch dimension added): real-feature based, seeded noise."""
    case = example_case(spec.feature_dim, frames, seed)
    noise = make_noise(f"seed:{seed}", frames, inter_channels=spec.inter_channels, hop_length=spec.hop_length, has_f0=spec.f0)
    arrays = {"features": case["features"][None], "speaker": np.array([speaker], dtype=np.int64), **noise}
    if spec.f0:
        arrays["f0"] = case["f0"][None]
    return arrays


def graph_inputs(spec: Any, names: list[str], frames: int, seed: int, speaker: int = 0) -> dict[str, np.ndarray]:
    """Example inputs for the graph's ``names`` at ``frames`` (``excitation`` made on the host)."""
    return graph_feed(example_inputs(spec, frames, seed, speaker), names, hop_length=spec.hop_length, sample_rate=spec.sampling_rate)


def _time_axes(spec: Any) -> dict[str, tuple[int, int]]:
    """For each input with a time axis: (axis, samples per frame)."""
    return {"features": (1, 1), "f0": (1, 1), "prior_noise": (2, 1), "source_noise": (1, spec.hop_length), "excitation": (1, spec.hop_length)}


def export_onnx(
    model: Any,
    spec: Any,
    names: list[str],
    out_path: Path,
    *,
    exporter: str = "dynamo",
    opset: int = 18,
    min_frames: int = 2,
    max_frames: int = 3000,
    static_frames: int | None = None,
    trace_frames: int = 64,
) -> Path:
    """Export ``model`` (forward(*names)) to ONNX; dynamic frames unless ``static_frames`` is set."""
    import torch

    frames = static_frames or min(max(trace_frames, min_frames), max_frames)
    example = tuple(torch.from_numpy(a) for a in graph_inputs(spec, names, frames, seed=0).values())
    axes = _time_axes(spec)
    log = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            warnings.simplefilter("ignore")
            logging.getLogger("torch").setLevel(logging.ERROR)
            if exporter == "dynamo":
                dynamic_shapes = None
                if static_frames is None:
                    dim = torch.export.Dim("frames", min=max(min_frames, 2), max=max_frames)
                    # forward(*inputs): one var-positional parameter, so the specs nest in a 1-tuple.
                    dynamic_shapes = (tuple(
                        {axes[name][0]: dim * axes[name][1] if axes[name][1] > 1 else dim} if name in axes else None
                        for name in names
                    ),)
                program = torch.onnx.export(
                    model, example, dynamic_shapes=dynamic_shapes, input_names=names, output_names=["audio"],
                    dynamo=True, opset_version=opset, optimize=True, verbose=False,
                )
                program.save(str(out_path))
            elif exporter == "torchscript":
                dynamic_axes = None
                if static_frames is None:
                    dynamic_axes = {name: {axes[name][0]: "frames" if axes[name][1] == 1 else "samples"} for name in names if name in axes}
                    dynamic_axes["audio"] = {1: "samples"}
                torch.onnx.export(
                    model, example, str(out_path), input_names=names, output_names=["audio"],
                    dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False,
                )
            else:
                raise BuildError(f"capture.exporter: unknown exporter {exporter!r}")
    except BuildError:
        raise
    except Exception as exc:  # the exporters raise many types; the message is what the user needs
        detail = first_line(exc, 300, type(exc).__name__)
        raise BuildError(f"capture ({exporter} exporter) failed: {type(exc).__name__}: {detail}") from exc
    if not out_path.exists():
        raise BuildError(f"capture ({exporter} exporter) wrote no graph to {out_path}")
    import onnx

    from ..precision.layers import name_layers

    graph = onnx.load(str(out_path))
    name_layers(graph)
    onnx.save(graph, str(out_path))
    return out_path


def multi_length_check(
    stage: str,
    run_candidate: Callable[[dict[str, np.ndarray]], np.ndarray],
    run_reference: Callable[[dict[str, np.ndarray]], np.ndarray],
    spec: Any,
    names: list[str],
    lengths: list[int],
    *,
    max_relative_error: float = FP32_MAX_RELATIVE_ERROR,
    speaker: int = 0,
    budget: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Run candidate and reference on identical inputs at each length; raise BuildError on any failure.

    ``run_reference`` takes the user-level inputs (features, f0, speaker, prior_noise, source_noise);
    ``run_candidate`` takes the graph's inputs ``names`` made from them (see ``inputs.graph_feed``).
    An fp32 graph must match to ``max_relative_error``; a lower-precision graph (``budget`` given: the
    recipe's accuracy budget) must stay inside the budget at every length.
    """
    from ..verify.metrics import check_budget, compare

    results = []
    for i, frames in enumerate(lengths):
        inputs = example_inputs(spec, frames, seed=100 + i, speaker=speaker)
        feed = graph_feed(inputs, names, hop_length=spec.hop_length, sample_rate=spec.sampling_rate)
        try:
            candidate = np.asarray(run_candidate(feed)).reshape(-1)
        except Exception as exc:
            detail = first_line(exc, 200, type(exc).__name__)
            raise BuildError(f"{stage}: graph fails at {frames} frames: {detail}") from exc
        reference = np.asarray(run_reference(inputs)).reshape(-1)
        expected = frames * spec.hop_length
        if candidate.shape[0] != expected:
            raise BuildError(f"{stage}: graph gives {candidate.shape[0]} samples at {frames} frames, expected {expected}")
        error = float(np.linalg.norm(candidate - reference) / max(np.linalg.norm(reference), 1e-12))
        result = {
            "stage": stage,
            "frames": frames,
            "relative_l2_error": error,
            "max_abs_error": float(np.abs(candidate - reference).max()),
        }
        if budget is None:
            failures = [] if np.isfinite(error) and error <= max_relative_error else [f"relative L2 error {error:.3g} > {max_relative_error:g}"]
        else:
            metrics = compare(reference, candidate, spec.sampling_rate)
            result.update({key: metrics[key] for key in ("snr_db", "log_mel_db", "mrstft", "f0_cents")})
            failures = check_budget(metrics, budget)
        result["passed"] = not failures
        results.append(result)
        if failures:
            # Past the precision budget is a failed gate (exit 1); an fp32 graph that differs is a broken build.
            error_class = GateFailure if budget is not None else BuildError
            raise error_class(f"{stage}: output at {frames} frames differs from the reference ({'; '.join(failures)})")
    return results
