"""The multi-length check: a captured, transformed or compiled graph against the fp32 reference on
identical inputs at several lengths (a graph traced at one length can fail at others)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..components import Component, get_component
from ..errors import BuildError, GateFailure, first_line

# Checked lengths must match the fp32 reference this closely: far below audibility, above fp32 noise.
# (The default; a component may set its own, ``Component.FP32_MAX_RELATIVE_ERROR``.)
FP32_MAX_RELATIVE_ERROR = 1e-4


def multi_length_check(
    stage: str,
    run_candidate: Callable[[dict[str, np.ndarray]], np.ndarray],
    run_reference: Callable[[dict[str, np.ndarray]], np.ndarray],
    spec: Any,
    names: list[str],
    lengths: list[int],
    *,
    max_relative_error: float | None = None,
    speaker: int = 0,
    budget: dict[str, Any] | None = None,
    component: Component | None = None,
) -> list[dict[str, Any]]:
    """Run candidate and reference on identical inputs at each length; raise BuildError on any failure.

    ``run_reference`` takes the component's user-level inputs (default component: the synthesizer);
    ``run_candidate`` takes the graph's inputs ``names`` made from them (``Component.graph_feed``).
    An fp32 graph must match to ``max_relative_error`` (default: the component's
    ``FP32_MAX_RELATIVE_ERROR``); a lower-precision graph (``budget`` given: the
    recipe's accuracy budget) must stay inside the budget at every length.
    """
    from .metrics import check_budget

    component = component or get_component("synthesizer")
    if max_relative_error is None:
        max_relative_error = component.FP32_MAX_RELATIVE_ERROR
    results = []
    for i, frames in enumerate(lengths):
        inputs = component.example_inputs(spec, frames, seed=100 + i, speaker=speaker)
        feed = component.graph_feed(spec, inputs, names)
        try:
            candidate = np.asarray(run_candidate(feed)).reshape(-1)
        except Exception as exc:
            detail = first_line(exc, 200, type(exc).__name__)
            raise BuildError(f"{stage}: graph fails at {frames} frames: {detail}") from exc
        reference = np.asarray(run_reference(inputs)).reshape(-1)
        expected = component.output_samples(spec, frames)
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
            metrics = component.compare(spec, reference, candidate)
            result.update({metric: metrics.get(metric) for metric, _ in component.BUDGET_KEYS.values() if metric != "max_abs_error"})
            failures = check_budget(metrics, budget, keys=component.BUDGET_KEYS)
        result["passed"] = not failures
        results.append(result)
        if failures:
            # Past the precision budget is a failed gate (exit 1); an fp32 graph that differs is a broken build.
            message = f"{stage}: output at {frames} frames differs from the reference ({'; '.join(failures)})"
            if budget is not None:
                raise GateFailure(message, failures=[f"{frames} frames: {failure}" for failure in failures])
            raise BuildError(message)
    return results
