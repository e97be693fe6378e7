"""The pruning section of the benchmark suite (``benchmarks/run_all.py`` runs every ``section_*.py``).

On the suite's checkpoint: FLOPs before/after 50 % decoder pruning, eager fp32 unpruned vs pruned at
2 s, and the held-out log-mel distance right after pruning vs after a CPU distillation run
(``prune_bench.measure``; the standalone ``prune_bench.py`` writes benchmarks/results/prune.json).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def run(context: dict[str, Any]) -> dict[str, Any]:
    from prune_bench import markdown, measure  # benchmarks/ is on sys.path in the suite

    quick = bool(context.get("quick"))
    results = measure(
        Path(context["checkpoint"]), Path(context["work"]) / "pruning", threads=int(context.get("threads", 2)),
        steps=6 if quick else 40, repeats=2 if quick else 5, log=context.get("log", print),
    )
    results["markdown"] = markdown(results)
    return results


def render(result: dict[str, Any]) -> str:
    return result["markdown"]
