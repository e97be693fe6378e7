"""Helpers that used to exist in several copies, merged: file hashing, peak memory, artifact names and
versions, latency statistics, the worker-process protocol, and structured error fields."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest

from rvc_compile import hashing, machine
from rvc_compile.errors import ArtifactError, BuildError, GateFailure, RecipeError
from rvc_compile.worker import Worker, WorkerError, run_function


# -- hashing ---------------------------------------------------------------------------------------

def test_one_sha256_file_for_artifacts_checkpoints_and_the_cache(tmp_path):
    from rvc_compile.artifact import manifest
    from rvc_compile.components.synthesizer import checkpoint

    path = tmp_path / "blob.bin"
    data = bytes(range(256)) * 1000
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert hashing.sha256_file(path) == expected
    assert hashing.sha256_file(path, chunk=1000) == expected  # chunk boundaries do not matter
    assert manifest.sha256_file is hashing.sha256_file and checkpoint.sha256_file is hashing.sha256_file
    with open(path, "rb") as handle:
        handle.read(10)
        assert hashing.sha256_stream(handle) == hashlib.sha256(data[10:]).hexdigest()


def test_sha256_hex_is_64_lowercase_digits_and_nothing_more():
    digest = hashlib.sha256(b"x").hexdigest()
    assert hashing.is_sha256_hex(digest)
    assert not hashing.is_sha256_hex(digest.upper())
    assert not hashing.is_sha256_hex(digest + "\n")  # a pattern ending in "$" would take this
    assert not hashing.is_sha256_hex(digest[:-1]) and not hashing.is_sha256_hex(None)


# -- names and versions ----------------------------------------------------------------------------

@pytest.mark.parametrize("name,valid", [
    ("voice", True), ("my-voice_2.1", True), ("a" * 100, True), ("a" * 101, False), (".hidden", False),
    ("..", False), ("a/b", False), ("voice\n", False), ("", False), (3, False),
])
def test_artifact_and_recipe_names_follow_one_rule(name, valid):
    from rvc_compile.artifact.manifest import check_name, is_valid_name

    assert is_valid_name(name) is valid
    if not valid:
        with pytest.raises(ArtifactError, match="use letters, digits"):
            check_name(name)


@pytest.mark.parametrize("version,valid", [
    ("1.0.0", True), ("0.10.2-rc.1+build.5", True), ("1.0", False), ("01.0.0", False), ("1.0.0\n", False), ("v1.0.0", False),
])
def test_versions_are_semantic_versions(version, valid):
    from rvc_compile.artifact.manifest import check_version, is_valid_version

    assert is_valid_version(version) is valid
    if not valid:
        with pytest.raises(ArtifactError, match="semantic version"):
            check_version(version)


def test_the_recipe_and_the_prune_recipe_refuse_names_with_the_artifact_rule(tmp_path):
    from rvc_compile.compress.prune_recipe import load_prune_recipe
    from rvc_compile.recipe.schema import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: 'bad name'\nversion: 1.0.0\nsource: {checkpoint: x.pth}\n")
    with pytest.raises(RecipeError, match=r"r\.yaml:1: name: 'bad name': use letters, digits"):
        load_recipe(recipe)
    recipe.write_text("name: voice\nversion: '1.0'\nsource: {checkpoint: x.pth}\n")
    with pytest.raises(RecipeError, match=r"version: '1.0' is not a semantic version"):
        load_recipe(recipe)
    prune = tmp_path / "p.yaml"
    prune.write_text("name: 'bad name'\nsource: {checkpoint: x.pth}\noutput: {checkpoint: y.pth}\n")
    with pytest.raises(RecipeError, match=r"p\.yaml:1: name: 'bad name': use letters, digits"):
        load_prune_recipe(prune)


# -- peak memory -----------------------------------------------------------------------------------

def test_one_peak_memory_reading_for_bench_and_evaluate():
    from rvc_compile.measure import sources
    from rvc_compile.verify import evaluate

    assert evaluate.peak_memory_mb is machine.peak_memory_mb and sources.peak_memory_mb is machine.peak_memory_mb
    peak = machine.peak_memory_mb()
    assert 1.0 < peak < 1e6
    if Path("/proc/self/status").exists():
        status = Path("/proc/self/status").read_text()
        high_water_kib = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])
        assert peak == pytest.approx(high_water_kib / 1024.0, rel=0.05)


def test_a_worker_reports_its_own_peak_not_its_parents():
    ballast = np.ones(64 * 2**20 // 8)  # 64 MB more in this process than a fresh interpreter holds
    assert run_function("rvc_compile.machine:peak_memory_mb") < machine.peak_memory_mb() - 32
    del ballast


# -- latency statistics ----------------------------------------------------------------------------

def test_latency_stats_has_every_key_reports_and_bench_read():
    from rvc_compile.measure import bench
    from rvc_compile.verify.metrics import latency_stats

    assert bench.latency_stats is latency_stats
    stats = latency_stats([0.4, 0.1, 0.3, 0.2], audio_seconds=2.0)
    assert set(stats) == {"runs", "min_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms", "rtf_p50", "rtf_p90", "rtf_p99"}
    assert stats["runs"] == 4
    assert stats["min_ms"] == pytest.approx(100.0) and stats["max_ms"] == pytest.approx(400.0) and stats["mean_ms"] == pytest.approx(250.0)
    assert stats["p50_ms"] == pytest.approx(250.0) and stats["min_ms"] <= stats["p90_ms"] <= stats["p99_ms"] <= stats["max_ms"]
    assert stats["rtf_p50"] == pytest.approx(0.125) and stats["rtf_p99"] == pytest.approx(stats["p99_ms"] / 2000.0)
    with pytest.raises(ValueError, match="no timed runs"):
        latency_stats([], 1.0)


# -- the worker protocol ---------------------------------------------------------------------------

def test_a_worker_runs_under_its_environment_overlay_and_stops():
    with Worker("rvc_compile.worker:FunctionCaller", env={"RVC_COMPILE_TEST_OVERLAY": "on"}) as worker:
        assert worker.ready() is None
        assert worker.call("call", target="os:getenv", args=("RVC_COMPILE_TEST_OVERLAY",)) == "on"
        # Chatter on the child's stdout goes to its stderr, never into the replies.
        assert worker.call("call", target="builtins:print", args=("chatter",), kwargs={"flush": True}) is None
        assert worker.call("call", target="operator:add", args=(2, 3)) == 5
    assert not worker.alive
    assert run_function("os:getenv", "RVC_COMPILE_TEST_OVERLAY") is None  # the overlay was that child's only


def test_a_failing_request_is_a_structured_error_and_the_worker_keeps_serving():
    with Worker("rvc_compile.worker:FunctionCaller", name="test worker") as worker:
        with pytest.raises(WorkerError) as info:
            worker.call("call", target="math:sqrt", args=(-1.0,))
        failure = info.value.failure
        assert failure.type == "ValueError" and failure.message == "math domain error" and not failure.user_error
        assert failure.last_line == "ValueError: math domain error" and "Traceback" in failure.traceback
        assert str(info.value) == "test worker: ValueError: math domain error" and not info.value.died
        with pytest.raises(WorkerError, match="has no method '_secret'"):
            worker.call("_secret")
        assert worker.call("call", target="operator:mul", args=(6, 7)) == 42


def test_a_user_error_comes_back_whole_with_its_fields():
    with pytest.raises(WorkerError) as info:
        run_function("rvc_compile.passes.prune:PruningParams.from_ratios", {"decoder": 1.5})
    failure = info.value.failure
    assert failure.user_error and failure.type == "RecipeError"
    assert isinstance(failure.error, RecipeError) and failure.error.key == "pruning.decoder"
    assert str(failure.error) == "pruning.decoder: ratio 1.5 must be in [0, 1)"


def test_a_dead_worker_says_how_it_died_and_its_last_words():
    with Worker("rvc_compile.worker:FunctionCaller") as worker:
        worker.call("call", target="builtins:print", args=("last words before exit",), kwargs={"flush": True})
        with pytest.raises(WorkerError) as info:
            worker.call("call", target="os:_exit", args=(3,))
        assert info.value.died and info.value.failure.exit_code == 3
        assert info.value.failure.last_line == "last words before exit"
        with pytest.raises(WorkerError) as again:
            worker.call("call", target="operator:add", args=(1, 1))
        assert again.value.died


def test_a_handler_that_cannot_be_built_fails_at_ready_every_time():
    worker = Worker("rvc_compile.worker:NoSuchHandler")
    with pytest.raises(WorkerError) as first:
        worker.ready()
    assert first.value.failure.type == "AttributeError" and not worker.started
    with pytest.raises(WorkerError) as second:
        worker.call("anything")
    assert second.value is first.value
    worker.stop()


def test_an_emulated_runner_reports_the_childs_last_traceback_line_as_a_build_error(tmp_path):
    from rvc_compile.backends.emulated import EmulatedRunner

    section = {"name": "onnxruntime", "files": {"model": "model.onnx"}}
    with EmulatedRunner(tmp_path / "missing", section, threads=1, env={"ONEDNN_MAX_CPU_ISA": "AVX2"}) as runner:
        with pytest.raises(BuildError, match=r"^running the graph under ONEDNN_MAX_CPU_ISA=AVX2 failed: \w+"):
            runner.run({"features": np.zeros((1, 4, 8), np.float32)})
        assert runner._worker is None  # a child that could not load is not kept: the next call starts afresh


# -- structured error fields -----------------------------------------------------------------------

def test_recipe_errors_carry_their_key_and_problem_and_survive_pickling():
    error = RecipeError.at("precision_policy.keep_fp32", "not for bf16")
    assert str(error) == "precision_policy.keep_fp32: not for bf16"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.key, copy.problem, copy.section) == ("precision_policy.keep_fp32", "not for bf16", "precision_policy")
    assert RecipeError("recipe.yaml: no such recipe file").key is None


def test_gate_failures_carry_each_failed_check():
    error = GateFailure("r.yaml: build gates failed (2): a; b", failures=["snr_db 20 < min_snr_db 27", "p50 too slow"])
    assert pickle.loads(pickle.dumps(error)).failures == ("snr_db 20 < min_snr_db 27", "p50 too slow")
    assert GateFailure("plain").failures == () and error.exit_code == 1


def test_pruning_and_distillation_params_are_validated_by_their_dataclasses():
    from rvc_compile.compress.distill import DistillConfig
    from rvc_compile.passes.prune import PruneParams, PruningParams

    with pytest.raises(RecipeError) as info:
        PruningParams(round_to=0).check("pruning")
    assert info.value.key == "pruning.round_to" and str(info.value) == "pruning.round_to: 0 must be at least 1"
    with pytest.raises(RecipeError, match="unknown group 'decoderr'"):
        PruningParams.from_ratios({"decoderr": 0.5})
    assert PruningParams.from_ratios({"flow": 0.25}).ratios() == {"decoder": 0.0, "encoder": 0.0, "flow": 0.25}
    with pytest.raises(RecipeError) as info:
        PruneParams(importance="activation", calibration_count=0).check()
    assert info.value.key == "passes.prune" and "calibration_count" in info.value.problem
    with pytest.raises(RecipeError) as info:
        DistillConfig(learning_rate=0.0).check()
    assert info.value.key == "distillation.learning_rate" and info.value.problem == "0.0 must be positive"
    with pytest.raises(RecipeError) as info:
        DistillConfig(mel_weight=0.0, stft_weight=0.0).check()
    assert info.value.key == "distillation"


def test_the_prune_recipe_names_the_line_of_a_key_its_dataclass_refused(tmp_path):
    from rvc_compile.compress.prune_recipe import load_prune_recipe

    path = tmp_path / "p.yaml"
    path.write_text("name: voice\nsource: {checkpoint: x.pth}\noutput: {checkpoint: y.pth}\ndistillation:\n  steps: 2\n  learning_rate: -1\n")
    with pytest.raises(RecipeError) as info:
        load_prune_recipe(path)
    assert str(info.value) == f"{path}:6: distillation.learning_rate: -1.0 must be positive"
