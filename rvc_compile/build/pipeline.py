"""``rvc-compile build``: recipe -> component source -> torch passes -> capture -> ONNX passes -> precision
and backend -> artifact.

Each stage is a function from one frozen record to the next (``build.steps``, ``build.records``), run
through the content-addressed build cache. Every captured or transformed graph is checked against the
fp32 PyTorch reference at the recipe's check lengths. The artifact is assembled in a temporary folder
and renamed into place only once its accuracy (and latency) gates have passed, so a failed or killed
build leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

from ..artifact.manifest import ArtifactWriter
from ..backends import get_backend
from ..components import get_component
from ..errors import GateFailure, RecipeError
from ..machine import emulation_env, machine_isa, resolve_target_cpu
from . import steps
from .records import BuildContext


@dataclasses.dataclass
class BuildResult:
    path: Path
    report: dict[str, Any]
    cache: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # stage, key, hit


def order_passes(recipe: Any) -> tuple[tuple[Any, Any], ...]:
    """The recipe's passes as (entry, pass) pairs, split into torch-stage and ONNX-stage passes."""
    from ..passes import PASSES
    from ..recipe.schema import PassEntry

    torch_passes, onnx_passes = [], []
    for index, entry in enumerate(recipe.passes):
        cls = PASSES[entry.name]
        if cls.stage == "torch":
            if onnx_passes:
                raise RecipeError(f"passes[{index}]: {entry.name} runs on the torch model and must come before ONNX passes ({onnx_passes[0][0].name})")
            torch_passes.append((entry, cls(entry.params)))
        else:
            onnx_passes.append((entry, cls(entry.params)))
    if getattr(recipe, "stream", None) is not None:
        # Real-time blocks: right after pruning (whose spec it keeps), before rewrites of the modules.
        from ..passes.stream_block import StreamBlockParams

        entry = PassEntry(name="stream_block", params=StreamBlockParams(skip_frames=recipe.stream.frames()["context"]))
        at = max((i + 1 for i, (e, _) in enumerate(torch_passes) if e.name == "prune"), default=0)
        torch_passes.insert(at, (entry, PASSES["stream_block"](entry.params)))
    return tuple(torch_passes), tuple(onnx_passes)


def build(
    recipe: Any,
    *,
    out_dir: Path | None = None,
    force: bool = False,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    log: Callable[[str], None] = print,
) -> BuildResult:
    """Build ``recipe`` (a loaded ``recipe.Recipe``) into an artifact folder; return its path and report.

    ``cache_dir``: the build cache (None: ``$RVC_COMPILE_CACHE`` or the user cache folder, see
    ``cache.resolve_cache_dir``); ``use_cache=False`` builds every stage afresh in a throwaway cache.
    ``target.precision: auto`` builds the candidates fastest first and keeps the first inside the budget.
    """
    _check_target_cpu(recipe)
    if recipe.target.precision != "auto":
        return _build_one(recipe, out_dir=out_dir, force=force, cache_dir=cache_dir, use_cache=use_cache, log=log)
    backend = get_backend(recipe.target.backend)
    candidates, choice = auto_precision_candidates(recipe, backend)
    log(f"precision auto: candidates {', '.join(candidates)} (fastest first) on {resolve_target_cpu(recipe.target.cpu).name}")
    for precision in candidates:
        policy = dataclasses.replace(recipe.precision_policy, accuracy_aware=recipe.precision_policy.accuracy_aware and precision == "int8")
        candidate = dataclasses.replace(recipe, target=dataclasses.replace(recipe.target, precision=precision), precision_policy=policy)
        try:
            backend.check_policy(candidate.target, candidate.precision_policy)
            result = _build_one(candidate, out_dir=out_dir, force=force, cache_dir=cache_dir, use_cache=use_cache, log=log,
                                choice={**choice, "chosen": precision})
        except (GateFailure, RecipeError) as exc:
            if isinstance(exc, RecipeError) and not _is_policy_error(exc):
                raise
            choice["tried"].append({"precision": precision, "result": f"refused: {exc}"})
            log(f"precision auto: {precision} is out: {exc}")
            continue
        log(f"precision auto: chose {precision}")
        return result
    results = [f"{t['precision']}: {t['result']}" for t in choice["tried"]]
    raise GateFailure(f"{recipe.recipe_path}: precision auto: no candidate passed the budget ({'; '.join(t['result'] for t in choice['tried'])})",
                      failures=results)


def _is_policy_error(exc: RecipeError) -> bool:
    """A backend refusing this precision's policy (that candidate is out), not a broken recipe."""
    return exc.section == "precision_policy"


def auto_precision_candidates(recipe: Any, backend: Any) -> tuple[list[str], dict[str, Any]]:
    """``precision: auto``'s candidates, fastest first, and the record of those left out with why.

    Measured order on every CPU class (docs/PERFORMANCE.md): int8 before bf16 (only where the CPU has
    native bf16) before fp32. ONNX Runtime's fp16 runs slower than fp32 on CPUs (no fp16 arithmetic),
    so it is never a candidate."""
    isa = resolve_target_cpu(recipe.target.cpu)
    candidates, tried = [], []
    for precision in ("int8", "bf16", "fp32"):
        if precision not in backend.PRECISIONS:
            continue
        if precision == "int8" and recipe.calibration.source == "none":
            tried.append({"precision": "int8", "result": "skipped: no calibration data (calibration.source)"})
        elif precision == "bf16" and not isa.native_bf16:
            tried.append({"precision": "bf16", "result": f"skipped: {isa.name} has no native bf16"})
        elif precision in getattr(backend, "SLOW_PRECISIONS", {}).get(isa.name, {}):
            tried.append({"precision": precision, "result": f"skipped on {isa.name}: {backend.SLOW_PRECISIONS[isa.name][precision]}"})
        else:
            candidates.append(precision)
    return candidates, {"requested": "auto", "cpu": isa.name, "tried": tried}


def _check_target_cpu(recipe: Any) -> None:
    """A build is checked on this machine: for its own class, or a class whose features it has."""
    target, here = resolve_target_cpu(recipe.target.cpu), machine_isa()
    if not here.runs_as(target):
        missing = ", ".join(sorted(target.features - here.features))
        raise RecipeError(
            f"target.cpu: {recipe.target.cpu} needs {missing}, which this {here.name} CPU lacks, so the artifact's "
            "accuracy cannot be checked here; build it on such a CPU, or use auto or portable"
        )


def _check_program_recipe(recipe: Any, backend: Any, onnx_passes: tuple[tuple[Any, Any], ...]) -> None:
    """What a backend that compiles the torch program (not the ONNX graph) cannot honour, refused up front."""
    if onnx_passes:
        names = ", ".join(entry.name for entry, _ in onnx_passes)
        raise RecipeError.at("passes", f"{names} rewrite(s) the ONNX graph, which the {backend.NAME} backend does not compile (it compiles the "
                                       "torch program after the torch passes, and simplifies it itself): remove them")
    if recipe.source.bind_weights:
        raise RecipeError.at("source.bind_weights", f"binding weights into a compiled graph is for the ONNX backends; the {backend.NAME} "
                                                    "backend compiles each voice's own program")


def capture_graph(ctx: BuildContext, source: Any) -> Any:
    """Capture, then every ONNX pass: the checked fp32 graph the backend compiles."""
    graph = steps.capture(ctx, source)
    for entry, graph_pass in ctx.onnx_passes:
        graph = steps.apply_onnx_pass(ctx, graph, entry, graph_pass)
    return graph


def _build_one(
    recipe: Any, *, out_dir: Path | None, force: bool, cache_dir: Path | None, use_cache: bool,
    log: Callable[[str], None], choice: dict[str, Any] | None = None,
) -> BuildResult:
    from .stages import StageRunner

    started = time.perf_counter()
    component = get_component(recipe.source.component)
    backend = get_backend(recipe.target.backend)
    backend.check_target(recipe.target)
    backend.check_policy(recipe.target, recipe.precision_policy)
    torch_passes, onnx_passes = order_passes(recipe)
    if steps.wants_program(backend):
        _check_program_recipe(recipe, backend, onnx_passes)
    out_root = Path(out_dir) if out_dir is not None else Path(recipe.output_dir)
    target_isa, here = resolve_target_cpu(recipe.target.cpu), machine_isa()
    # The CPU class the artifact is for, and how its checks run on this machine: natively, or (a lower
    # class, on a backend whose kernels obey oneDNN's cap) in child processes that dispatch as on it.
    emulation = emulation_env(target_isa, here) if backend.ISA_EMULATION else {}

    with ArtifactWriter(out_root, recipe.name, recipe.version, force=force) as writer, \
            StageRunner(cache_dir, use_cache=use_cache, log=log) as stages, \
            stages.store.scratch() as scratch:
        ctx = BuildContext(
            recipe=recipe, component=component, backend=backend, stages=stages, workdir=scratch, log=log,
            target_isa=target_isa, machine_isa=here, emulation=emulation, torch_passes=torch_passes, onnx_passes=onnx_passes,
            choice=choice, started=started,
        )
        source = steps.load_source(ctx)
        if recipe.source.bind_weights:  # the architecture's graph, compiled once, with this voice's weights
            from .binding import bind

            graph = bind(ctx, source, capture_graph)
        else:
            graph = capture_graph(ctx, source)
        compiled = steps.compile_backend(ctx, graph)
        meta = steps.assemble(ctx, source, compiled, writer)
        path = writer.commit(meta["manifest"])
        cache_records = list(stages.records)
    hits = sum(record["hit"] for record in cache_records)
    log(f"built {path} in {time.perf_counter() - started:.1f} s ({hits} of {len(cache_records)} stages from the cache)")
    report = {**meta["report"], "cache": cache_records}
    return BuildResult(path=path, report=report, cache=cache_records)
