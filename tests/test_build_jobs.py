"""``rvc-compile build RECIPE... --jobs N``: many recipes on a worker pool, past failures, one result each."""

from __future__ import annotations

from pathlib import Path

import pytest

from rvc_compile.build.batch import FAILED, OK, RecipeResult, exit_code, format_results
from rvc_compile.artifact.manifest import check_integrity

from conftest import run_cli, write_tiny_recipe


def test_jobs_builds_the_good_recipe_past_a_bad_one_and_reports_both(tmp_path, checkpoint_factory):
    good = write_tiny_recipe(tmp_path, checkpoint_factory(), name="good-voice")
    bad = tmp_path / "bad-voice.yaml"
    bad.write_text(good.read_text().replace("name: good-voice", "name: bad-voice").replace("threads: 1", "threads: 1\n  thread: 3"))
    missing = tmp_path / "missing-checkpoint.yaml"
    missing.write_text(good.read_text().replace("name: good-voice", "name: missing").replace(str(checkpoint_factory()), str(tmp_path / "nope.pth")))

    process = run_cli("build", bad, good, missing, "--jobs", "2", "--cache-dir", tmp_path / "cache")
    assert process.returncode == 2, process.stderr  # a user error among the failures
    artifact = tmp_path / "artifacts" / "good-voice" / "1.0.0"
    assert process.stdout.strip().splitlines() == [str(artifact)]
    assert check_integrity(artifact) == []
    table = process.stderr[process.stderr.index("RECIPE"):].splitlines()
    rows = {line.split()[0]: line for line in table[1:-1]}
    assert rows[str(good)].split()[1] == OK and str(artifact) in rows[str(good)]
    assert rows[str(bad)].split()[1] == FAILED and "target.thread" in rows[str(bad)]
    assert rows[str(missing)].split()[1] == FAILED and "nope.pth" in rows[str(missing)]
    assert table[-1] == "3 recipes: 1 ok, 2 failed"
    assert "[good-voice] built" in process.stderr  # each worker's log lines say whose they are
    assert not (tmp_path / "artifacts" / "bad-voice").exists() and not (tmp_path / "artifacts" / "missing").exists()


def test_exit_code_is_two_for_any_user_error_else_one_for_gates_and_crashes():
    def result(code: int) -> RecipeResult:
        return RecipeResult(recipe=Path(f"r{code}.yaml"), status=OK if code == 0 else FAILED, exit_code=code, seconds=1.0,
                            path=Path("out") if code == 0 else None, error=None if code == 0 else "why")

    assert exit_code([result(0), result(0)]) == 0
    assert exit_code([result(0), result(1)]) == 1
    assert exit_code([result(1), result(2), result(0)]) == 2
    text = format_results([result(0), result(1)])
    assert text.splitlines()[0].split() == ["RECIPE", "STATUS", "TIME", "ARTIFACT", "/", "ERROR"]
    assert "r1.yaml  failed  1.0 s  why" in text and text.splitlines()[-1] == "2 recipes: 1 ok, 1 failed"


def test_ray_executor_builds_each_voice_as_a_task_past_a_failure_into_one_shared_cache(tmp_path, checkpoint_factory, monkeypatch):
    """A local Ray instance (what a cluster address replaces): one task per voice, a bad one reported
    without stopping the others, every task reading and writing the one cache the driver resolved."""
    pytest.importorskip("ray")
    good = write_tiny_recipe(tmp_path, checkpoint_factory(), name="ray-voice")
    missing = tmp_path / "missing-checkpoint.yaml"
    missing.write_text(good.read_text().replace("name: ray-voice", "name: missing").replace(str(checkpoint_factory()), str(tmp_path / "nope.pth")))
    cache = tmp_path / "cache"
    monkeypatch.setenv("RVC_COMPILE_CACHE", str(cache))  # the driver's choice; the tasks must not look elsewhere
    monkeypatch.chdir(tmp_path)

    process = run_cli("build", good.name, missing.name, "--executor", "ray", "--jobs", "2")
    assert process.returncode == 2, process.stderr
    artifact = tmp_path / "artifacts" / "ray-voice" / "1.0.0"
    assert process.stdout.strip().splitlines()[-1] == str(artifact)
    assert check_integrity(artifact) == []
    table = process.stderr[process.stderr.index("RECIPE"):].splitlines()
    assert table[-1] == "2 recipes: 1 ok, 1 failed"
    assert any(line.startswith("missing-checkpoint.yaml") and "nope.pth" in line for line in table)
    assert "[ray-voice] built" in process.stderr  # the tasks' log lines reach the driver, labelled
    assert any(path.is_file() for path in cache.rglob("*"))  # the stages were stored where the driver said


def test_ray_executor_without_ray_is_one_clear_line(tmp_path, checkpoint_factory, monkeypatch):
    import builtins

    from rvc_compile.build import batch
    from rvc_compile.errors import RecipeError

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    recipe = write_tiny_recipe(tmp_path, checkpoint_factory(), name="voice")
    with pytest.raises(RecipeError, match=r"pip install 'rvc-compile\[ray\]'"):
        batch.build_recipes([recipe], executor="ray")
    assert not (tmp_path / "artifacts").exists()
    with pytest.raises(ValueError, match="executor"):
        batch.build_recipes([recipe], executor="dask")


def test_ray_executor_with_an_unreachable_cluster_is_one_line_and_builds_nothing(tmp_path, checkpoint_factory):
    pytest.importorskip("ray")
    recipe = write_tiny_recipe(tmp_path, checkpoint_factory(), name="voice")
    process = run_cli("build", recipe, "--executor", "ray", "--ray-address", "127.0.0.1:9")  # port 9: nothing listens
    assert process.returncode == 2, process.stderr
    last = process.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --executor ray: could not start or join the Ray cluster at 127.0.0.1:9"), process.stderr
    assert "Traceback" not in process.stderr
    assert not (tmp_path / "artifacts").exists()
