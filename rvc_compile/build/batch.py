"""Build many recipes (many voices) on a pool of worker processes sharing one build cache.

Each recipe builds in its own fresh process (``rvc_compile.build.pipeline.build``), at most ``jobs`` at a time, so a
crash or an out-of-memory kill of one build fails that recipe only. A failed recipe does not stop the
others; every result is reported.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

OK, FAILED = "ok", "failed"


@dataclasses.dataclass
class RecipeResult:
    recipe: Path
    status: str  # "ok" or "failed"
    exit_code: int  # 0 ok, 1 a gate failed or the build crashed, 2 a user error (bad recipe, checkpoint...)
    seconds: float
    path: Path | None = None  # the artifact, when ok
    error: str | None = None  # one line, when failed
    report: dict[str, Any] | None = None  # the build report, when ok

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["recipe"], data["path"] = str(self.recipe), (str(self.path) if self.path else None)
        return data


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _build_in_worker(connection: Any, recipe_path: str, overrides: list[str], out_dir: str | None, force: bool, cache_dir: str | None, label: str, use_cache: bool = True) -> None:
    """Worker process body: build one recipe and send a result dict back through ``connection``."""
    from ..errors import GateFailure, RvcCompileError

    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{label}] {message}", file=sys.stderr, flush=True)

    result: dict[str, Any]
    try:
        from .pipeline import build
        from ..recipe.schema import load_recipe

        recipe = load_recipe(Path(recipe_path), overrides)
        built = build(recipe, out_dir=Path(out_dir) if out_dir else None, force=force, cache_dir=Path(cache_dir) if cache_dir else None, use_cache=use_cache, log=log)
        result = {"status": OK, "exit_code": 0, "path": str(built.path), "report": built.report}
    except GateFailure as exc:
        result = {"status": FAILED, "exit_code": exc.exit_code, "error": str(exc)}
    except RvcCompileError as exc:
        result = {"status": FAILED, "exit_code": exc.exit_code, "error": str(exc)}
    except Exception as exc:  # a bug, not a user error: keep the traceback for the bug report
        log("crashed:\n" + traceback.format_exc().rstrip())
        result = {"status": FAILED, "exit_code": 1, "error": _one_line(f"crashed: {type(exc).__name__}: {exc}")[:400]}
    result["seconds"] = time.perf_counter() - started
    try:
        connection.send(result)
    except Exception as exc:  # e.g. a report that does not pickle: still say how the build went
        connection.send({**{k: v for k, v in result.items() if k != "report"}, "report": None, "note": repr(exc)})
    connection.close()


def _labels(recipes: list[Path]) -> list[str]:
    stems = [recipe.stem for recipe in recipes]
    return [stem if stems.count(stem) == 1 else str(recipe) for stem, recipe in zip(stems, recipes)]


def build_recipes(
    recipes: list[Path], *, jobs: int = 1, out_dir: Path | None = None, overrides: list[str] | tuple[str, ...] = (),
    force: bool = False, cache_dir: Path | None = None, use_cache: bool = True, on_result: Callable[[RecipeResult], None] | None = None,
) -> list[RecipeResult]:
    """Build every recipe, ``jobs`` at a time, each in a fresh process; results in the order given.

    ``on_result`` is called (in the parent) as each recipe finishes.
    """
    if jobs < 1:
        raise ValueError("jobs must be at least 1")
    recipes = [Path(recipe) for recipe in recipes]
    context = multiprocessing.get_context("spawn")  # no fork: the parent may hold threads and torch state

    def run(index: int, label: str) -> RecipeResult:
        started = time.perf_counter()
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=_build_in_worker, name=f"rvc-compile-build-{label}",
            args=(sender, str(recipes[index]), list(overrides), str(out_dir) if out_dir else None, force, str(cache_dir) if cache_dir else None, label, use_cache),
        )
        process.start()
        sender.close()  # so recv() sees EOF if the worker dies without answering
        try:
            data = receiver.recv()
        except EOFError:
            data = None
        process.join()
        receiver.close()
        if data is None:
            result = RecipeResult(
                recipe=recipes[index], status=FAILED, exit_code=1, seconds=time.perf_counter() - started,
                error=f"the build process died (exit code {process.exitcode}) without a result",
            )
        else:
            result = RecipeResult(
                recipe=recipes[index], status=data["status"], exit_code=data["exit_code"], seconds=data["seconds"],
                path=Path(data["path"]) if data.get("path") else None, error=data.get("error"), report=data.get("report"),
            )
        if on_result is not None:
            on_result(result)
        return result

    labels = _labels(recipes)
    with ThreadPoolExecutor(max_workers=min(jobs, len(recipes)) or 1, thread_name_prefix="rvc-compile-build") as pool:
        futures = [pool.submit(run, index, label) for index, label in enumerate(labels)]
        return [future.result() for future in futures]


def exit_code(results: list[RecipeResult]) -> int:
    """0 when every recipe built; 2 when any failed on a user error; else 1 (a gate failed or a build crashed)."""
    codes = {result.exit_code for result in results}
    if codes <= {0}:
        return 0
    return 2 if 2 in codes else 1


def format_results(results: list[RecipeResult]) -> str:
    rows = [("RECIPE", "STATUS", "TIME", "ARTIFACT / ERROR")]
    for result in results:
        detail = str(result.path) if result.status == OK else (result.error or "")
        rows.append((str(result.recipe), result.status, f"{result.seconds:.1f} s", detail))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3] for row in rows]
    succeeded = sum(result.status == OK for result in results)
    lines.append(f"{len(results)} recipes: {succeeded} ok, {len(results) - succeeded} failed")
    return "\n".join(lines)
