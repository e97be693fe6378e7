"""Build many recipes (many voices) on a pool of worker processes sharing one build cache.

Each recipe builds in its own fresh process (``rvc_compile.build.pipeline.build``), at most ``jobs`` at a time, so a
crash or an out-of-memory kill of one build fails that recipe only. A failed recipe does not stop the
others; every result is reported.

Two executors run the processes:

- ``local``: spawned processes on this machine (the default);
- ``ray``: Ray tasks (``pip install 'rvc-compile[ray]'``), on a local Ray instance or on the cluster at
  ``address``. Each task gets a fresh worker process (``max_calls=1``) and is not retried (a build that
  failed once fails again). Recipe, output and cache paths are sent as absolute paths, so on a cluster
  they must lie on storage every node mounts at the same path (docs/SCALE.md).
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
EXECUTORS = ("local", "ray")


@dataclasses.dataclass
class RecipeResult:
    recipe: Path
    status: str  # "ok" or "failed"
    exit_code: int  # 0 ok, 1 a gate failed or the build crashed, 2 a user error (bad recipe, checkpoint...)
    seconds: float
    path: Path | None = None  # the artifact, when ok
    error: str | None = None  # one line, when failed
    report: dict[str, Any] | None = None  # the build report, when ok
    host: str | None = None  # the machine that built it (Ray runs builds on other nodes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["recipe"], data["path"] = str(self.recipe), (str(self.path) if self.path else None)
        return data


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _build_one(recipe_path: str, overrides: list[str], out_dir: str | None, force: bool, cache_dir: str | None, label: str, use_cache: bool = True,
               progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build one recipe in this (worker) process; the result as a plain dict. Never raises.

    Every log line, prefixed with ``[label]``, goes to ``progress`` (default: this process's stderr)."""
    import socket

    from ..errors import GateFailure, RvcCompileError

    started = time.perf_counter()

    def log(message: str) -> None:
        line = f"[{label}] {message}"
        if progress is None:
            print(line, file=sys.stderr, flush=True)
        else:
            progress(line)

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
    result["host"] = socket.gethostname()
    return result


def _build_in_worker(connection: Any, recipe_path: str, overrides: list[str], out_dir: str | None, force: bool, cache_dir: str | None, label: str, use_cache: bool = True) -> None:
    """Local worker process body: build one recipe and send the result dict back through ``connection``."""
    result = _build_one(recipe_path, overrides, out_dir, force, cache_dir, label, use_cache)
    try:
        connection.send(result)
    except Exception as exc:  # e.g. a report that does not pickle: still say how the build went
        connection.send({**{k: v for k, v in result.items() if k != "report"}, "report": None, "note": repr(exc)})
    connection.close()


def _ray_build(cwd: str, progress: Any, *args: Any) -> dict[str, Any]:
    """Ray task body: the driver's working folder where this node has it (relative paths inside recipes
    resolve as they would for a local build), then ``_build_one`` with its log lines put on ``progress``
    (a ``ray.util.queue.Queue`` the driver prints from)."""
    import os

    if os.path.isdir(cwd):
        os.chdir(cwd)
    return _build_one(*args, progress=progress.put)


def _result(recipe: Path, data: dict[str, Any]) -> RecipeResult:
    return RecipeResult(
        recipe=recipe, status=data["status"], exit_code=data["exit_code"], seconds=data["seconds"],
        path=Path(data["path"]) if data.get("path") else None, error=data.get("error"), report=data.get("report"), host=data.get("host"),
    )


def _labels(recipes: list[Path]) -> list[str]:
    stems = [recipe.stem for recipe in recipes]
    return [stem if stems.count(stem) == 1 else str(recipe) for stem, recipe in zip(stems, recipes)]


def build_recipes(
    recipes: list[Path], *, jobs: int = 1, out_dir: Path | None = None, overrides: list[str] | tuple[str, ...] = (),
    force: bool = False, cache_dir: Path | None = None, use_cache: bool = True, on_result: Callable[[RecipeResult], None] | None = None,
    executor: str = "local", address: str | None = None,
) -> list[RecipeResult]:
    """Build every recipe, ``jobs`` at a time, each in a fresh process; results in the order given.

    ``on_result`` is called (in the parent) as each recipe finishes. ``executor``: ``local`` or ``ray``
    (``address``: a Ray cluster's, None for a local Ray instance; see ``_ray_build_recipes``).
    """
    if jobs < 1:
        raise ValueError("jobs must be at least 1")
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; executors: {', '.join(EXECUTORS)}")
    recipes = [Path(recipe) for recipe in recipes]
    if executor == "ray":
        return _ray_build_recipes(recipes, jobs=jobs, out_dir=out_dir, overrides=overrides, force=force, cache_dir=cache_dir,
                                  use_cache=use_cache, on_result=on_result, address=address)
    if address is not None:
        raise ValueError("address is for the ray executor")
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
            result = _result(recipes[index], data)
        if on_result is not None:
            on_result(result)
        return result

    labels = _labels(recipes)
    with ThreadPoolExecutor(max_workers=min(jobs, len(recipes)) or 1, thread_name_prefix="rvc-compile-build") as pool:
        futures = [pool.submit(run, index, label) for index, label in enumerate(labels)]
        return [future.result() for future in futures]


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        from ..errors import RecipeError

        raise RecipeError("--executor ray needs Ray, which is not installed: pip install 'rvc-compile[ray]'") from None
    return ray


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """A ``host:port`` address must accept a connection: Ray itself waits on an unreachable one for minutes."""
    import socket

    if not address or "://" in address or address == "auto" or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return
    except (OSError, ValueError) as exc:
        from ..errors import RecipeError

        raise RecipeError(f"--executor ray: could not start or join the Ray cluster at {address}: nothing answers there ({_one_line(str(exc))[:200]})") from None


def _ray_build_recipes(
    recipes: list[Path], *, jobs: int, out_dir: Path | None, overrides: list[str] | tuple[str, ...], force: bool, cache_dir: Path | None,
    use_cache: bool, on_result: Callable[[RecipeResult], None] | None, address: str | None,
) -> list[RecipeResult]:
    """The ``ray`` executor: one Ray task per recipe, at most ``jobs`` in flight.

    Without ``address`` a local Ray instance with ``jobs`` CPUs is started (and stopped after); with one,
    the driver joins that cluster (``auto``: the one this machine belongs to). A Ray instance already
    started in this process is used as it is. Every task reserves one CPU. The cache folder is resolved
    here, once, so that every worker reads and writes the same one (``$RVC_COMPILE_CACHE`` of the driver,
    not of the node)."""
    import os

    from ..cache.store import resolve_cache_dir

    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        # the tasks' log lines come through the progress queue, labelled, not through Ray's log forwarding
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
        if address is None:
            options["num_cpus"] = jobs
        else:
            options["address"] = address
        _check_reachable(address)
        try:
            ray.init(**options)
        except Exception as exc:  # no cluster there, a version mismatch, no room for a local instance
            from ..errors import RecipeError

            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise RecipeError(f"--executor ray: could not start or join {where}: {_one_line(f'{type(exc).__name__}: {exc}')[:300]}") from None
    try:
        from ray.util.queue import Empty, Queue

        progress = Queue(actor_options={"num_cpus": 0})
        task = ray.remote(num_cpus=1, max_calls=1, max_retries=0)(_ray_build)
        cwd = os.getcwd()
        shared = (str(out_dir.absolute()) if out_dir else None, force,
                  str(resolve_cache_dir(cache_dir)) if use_cache else None)
        labels = _labels(recipes)
        results: dict[int, RecipeResult] = {}
        pending: dict[Any, int] = {}
        submitted: dict[int, float] = {}
        queue = list(range(len(recipes)))

        def submit(index: int) -> None:
            out, force_, cache = shared
            ref = task.remote(cwd, progress, str(recipes[index].absolute()), list(overrides), out, force_, cache, labels[index], use_cache)
            pending[ref], submitted[index] = index, time.perf_counter()

        def print_progress() -> None:
            while True:
                try:
                    print(progress.get_nowait(), file=sys.stderr, flush=True)
                except Empty:
                    return

        while queue or pending:
            while queue and len(pending) < jobs:
                submit(queue.pop(0))
            done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            print_progress()
            if not done:
                continue
            index = pending.pop(done[0])
            try:
                result = _result(recipes[index], ray.get(done[0]))
            except Exception as exc:  # the worker died (killed, out of memory) or the node was lost
                detail = _one_line(f"{type(exc).__name__}: {exc}")[:300]
                result = RecipeResult(recipe=recipes[index], status=FAILED, exit_code=1, seconds=time.perf_counter() - submitted[index],
                                      error=f"the Ray task failed without a result: {detail}")
            results[index] = result
            if on_result is not None:
                on_result(result)
        return [results[index] for index in range(len(recipes))]
    finally:
        if started_here:
            ray.shutdown()


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
