"""Accuracy-aware quantization: keep the most sensitive layers in fp32 until the accuracy budget holds.

Backend-independent: a ``trial(extra_fp32_layers)`` callback builds the candidate with the backend's
own quantizer (NNCF for OpenVINO, QDQ for ONNX Runtime) and checks it against the budget; the ranking
comes from ``sensitivity.layer_sensitivity`` (each layer quantized alone, on the torch graph). The search
doubles the number of fp32 layers until a candidate passes, then bisects down to the fewest that pass,
so it costs O(log n) quantizations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import GateFailure


@dataclass
class Trial:
    extra_fp32: list[str]
    passed: bool
    failure: str | None
    checks: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SearchResult:
    extra_fp32: list[str]  # ranking[:k] for the smallest passing k
    trials: list[Trial]


def search(ranking: list[str], trial: Callable[[list[str]], Trial], *, max_layers: int | None, log: Callable[[str], None]) -> SearchResult:
    """The fewest most-sensitive layers to keep fp32 for ``trial`` to pass (``ranking``: most sensitive first)."""
    limit = len(ranking) if max_layers is None else min(max_layers, len(ranking))
    trials: dict[int, Trial] = {}

    def run(k: int) -> Trial:
        if k not in trials:
            trials[k] = trial(ranking[:k])
            outcome = "passes" if trials[k].passed else f"fails ({trials[k].failure})"
            log(f"accuracy-aware: {k} extra fp32 layer(s): {outcome}")
        return trials[k]

    if run(0).passed:
        return SearchResult([], list(trials.values()))
    low, high = 0, None  # low fails; high passes
    k = 1
    while k <= limit:
        if run(k).passed:
            high = k
            break
        low = k
        if k == limit:
            break
        k = min(2 * k, limit)
    if high is None:
        best = trials[max(trials)]
        raise GateFailure(
            f"accuracy-aware quantization: still outside the budget with the {max(trials)} most sensitive layers in fp32 "
            f"({best.failure}); raise precision_policy.max_fp32_layers, relax the accuracy budget, or use bf16",
            failures=[best.failure or "outside the budget"],
        )
    while high - low > 1:
        middle = (low + high) // 2
        if run(middle).passed:
            high = middle
        else:
            low = middle
    ordered = [trials[k] for k in sorted(trials)]
    return SearchResult(ranking[:high], ordered)
