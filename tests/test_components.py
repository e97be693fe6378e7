"""The pipeline is generic: a test-only adapter for a tiny conv network (``tiny_component``, no RVC code)
builds, verifies, benches and loads in the runtime through the same code as the synthesizer."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from rvc_compile.components import ENV_VAR, get_component, known_kinds
from rvc_compile.errors import ArtifactError, RecipeError

HERE = Path(__file__).resolve().parent
TARGET = "tiny_component:TinyConvComponent"


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """The tiny adapter offered the way users offer theirs: by the environment (child processes inherit it)."""
    monkeypatch.setenv(ENV_VAR, TARGET)
    monkeypatch.setenv("PYTHONPATH", f"{HERE}:{__import__('os').environ.get('PYTHONPATH', '')}")
    monkeypatch.syspath_prepend(str(HERE))
    import tiny_component

    return tiny_component


def tiny_recipe(directory: Path, source: Path, *, backend: str = "onnxruntime", precision: str = "fp32", extra: str = "") -> Path:
    text = textwrap.dedent(f"""
    name: tiny-{backend}-{precision}
    version: 1.0.0
    source:
      component: tiny-conv
      checkpoint: {source}
    target:
      backend: {backend}
      precision: {precision}
      threads: 1
    shapes:
      min_frames: 4
      opt_frames: 32
      max_frames: 96
    latency:
      seconds: [0.3]
      repeat: 2
      warmup: 1
    golden:
      seconds: [0.2, 0.5]
    output_dir: {directory / 'artifacts'}
    """) + textwrap.dedent(extra)
    path = directory / f"tiny-{backend}-{precision}.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("backend,precision", [("onnxruntime", "fp32"), ("openvino", "fp32"), ("onnxruntime", "int8")])
def test_a_tiny_network_builds_verifies_and_runs_through_the_generic_pipeline(tiny, tmp_path, backend, precision):
    import torch

    from rvc_compile import runtime
    from rvc_compile.build.pipeline import build
    from rvc_compile.recipe.schema import load_recipe
    from rvc_compile.verify.gates import verify_artifact

    source = tiny.write_source(tmp_path / "tiny.pt")
    extra = "calibration:\n  source: generated\n  count: 4\n" if precision == "int8" else ""
    recipe = load_recipe(tiny_recipe(tmp_path, source, backend=backend, precision=precision, extra=extra))
    assert recipe.accuracy.max_log_mel_db is None  # the synthesizer's audio budgets do not apply
    result = build(recipe, cache_dir=tmp_path / "cache", log=lambda message: None)

    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["component"] == {"kind": "tiny-conv", "spec": {"channels": 4, "hidden": 16, "outputs": 2}}
    assert manifest["signature"]["inputs"] == [{"name": "signal", "dtype": "float32", "shape": [1, 4, "frames"]}]
    assert manifest["signature"]["axes"]["frames"] == {"unit": "frames", "per_second": 100.0}
    checks = {(check["stage"].split()[0], check["frames"]) for check in result.report["multi_length_checks"]}
    assert {("capture", 4), ("capture", 96), ("backend", 4), ("backend", 96)} <= checks

    verified = verify_artifact(result.path)  # a fresh process's evaluation, then this one's
    assert verified["passed"], verified
    assert verified["accuracy"]["budget"]["min_snr_db"] == tiny.TinyConvComponent.DEFAULT_BUDGETS[precision]["min_snr_db"]

    compiled = runtime.load(result.path)
    assert type(compiled).__name__ == "CompiledModel" and compiled.kind == "tiny-conv"
    arrays = tiny.TinyConvComponent().example_inputs(tiny.TinySpec(), 57, seed=9)  # a length no check used
    output = compiled.run_case(arrays)
    model = tiny.TinyConvComponent().build_model(tiny.TinySpec(), torch.load(tmp_path / "tiny.pt", weights_only=True)["weights"])
    with torch.inference_mode():
        expected = model(torch.from_numpy(arrays["signal"])).numpy().reshape(-1)
    snr = 10 * np.log10(np.sum(expected ** 2) / max(np.sum((output - expected) ** 2), 1e-30))
    assert output.shape == expected.shape and snr > (60 if precision == "fp32" else 15)


def test_a_tiny_artifact_benches_with_its_own_inputs(tiny, tmp_path, checkpoint_factory):
    from rvc_compile.build.pipeline import build
    from rvc_compile.errors import InputError
    from rvc_compile.measure.bench import BenchSettings, format_table, run_bench
    from rvc_compile.measure.profile import profile_artifact
    from rvc_compile.recipe.schema import load_recipe

    source = tiny.write_source(tmp_path / "tiny.pt")
    result = build(load_recipe(tiny_recipe(tmp_path, source)), cache_dir=tmp_path / "cache", log=lambda message: None)
    bench = run_bench([str(result.path)], BenchSettings(seconds=(0.2, 0.5), repeat=2, min_repeat=1, warmup=1, threads=1, floor=False, accuracy_seconds=0.5))
    rows = [row for row in bench["results"] if row["status"] == "ok"]
    assert {round(row["seconds"], 2) for row in rows} == {0.2, 0.5} and [row["frames"] for row in rows] == [20, 50]
    assert all(row["p50_ms"] > 0 for row in rows)
    assert bench["model"]["kind"] == "tiny-conv" and bench["model"]["spec"] == {"channels": 4, "hidden": 16, "outputs": 2}
    assert rows[1]["accuracy_vs_reference"] == {"reference": bench["sources"][0]["label"], "snr_db": None, "max_abs_error": 0.0, "length_mismatch": None}
    source = bench["sources"][0]
    assert source["gflop_per_second_of_audio"] > 0 and source["flops_counted_from"].startswith("artifact graph")
    assert "accuracy against" in format_table(bench)

    # Streaming cuts the component's own inputs along their time axis (signal [1, 4, frames]).
    streaming = run_bench([str(result.path)], BenchSettings(chunk_seconds=0.1, stream_seconds=0.5, repeat=1, warmup=0, threads=1, floor=False))
    (row,) = streaming["results"]
    assert row["status"] == "ok" and (row["frames"], row["chunks"], row["runs"]) == (10, 5, 5)

    # One component per run; and a component without speakers takes no --speaker.
    with pytest.raises(InputError, match="a synthesizer model, .* a tiny-conv model; bench one model per run"):
        run_bench([str(result.path), str(checkpoint_factory())], BenchSettings(seconds=(0.2,), repeat=1, threads=1, floor=False))
    with pytest.raises(InputError, match="--speaker 1: tiny-conv models have no speakers"):
        run_bench([str(result.path)], BenchSettings(seconds=(0.2,), repeat=1, threads=1, floor=False, speaker=1))

    # And its profile groups nodes by the component's modules (default: a weight's top-level module).
    profile = profile_artifact(result.path, seconds=0.3, threads=1, repeat=1)
    assert profile["component"] == "tiny-conv" and profile["frames"] == 30
    assert {"conv_in", "conv_mid", "conv_out"} <= {row["module"] for row in profile["by_module"]}, profile["by_module"]


def test_an_unknown_component_is_refused_with_the_known_ones(tiny, tmp_path):
    from rvc_compile.recipe.schema import load_recipe

    path = tiny_recipe(tmp_path, tmp_path / "none.pt").read_text().replace("component: tiny-conv", "component: hubert")
    (tmp_path / "bad.yaml").write_text(path)
    with pytest.raises(RecipeError, match=r"bad.yaml:\d+: source.component: 'hubert' is not a known component \(content-encoder, rmvpe, synthesizer, tiny-conv\)"):
        load_recipe(tmp_path / "bad.yaml")
    assert {"synthesizer", "tiny-conv"} <= set(known_kinds())
    with pytest.raises(ArtifactError, match="component 'hubert' is not known"):
        get_component("hubert", for_build=False)


def test_a_budget_key_the_component_does_not_measure_is_refused(tiny, tmp_path):
    from rvc_compile.recipe.schema import load_recipe

    path = tiny_recipe(tmp_path, tmp_path / "none.pt", extra="accuracy:\n  max_log_mel_db: 1.0\n")
    with pytest.raises(RecipeError, match="accuracy.max_log_mel_db: not a metric of tiny-conv graphs"):
        load_recipe(path)


def test_the_runtime_imports_no_component_build_code():
    """Adapters import numpy only at the top: the runtime finds them without torch."""
    import subprocess

    code = "import sys, rvc_compile.runtime as r; from rvc_compile.components import get_component; get_component('synthesizer'); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_a_format_3_synthesizer_artifact_without_a_component_section_still_loads(tmp_path, tiny_artifact):
    import shutil

    from rvc_compile import runtime
    from rvc_compile.artifact.manifest import MANIFEST
    from test_fuzz import reseal

    directory = tmp_path / "old"
    shutil.copytree(tiny_artifact, directory)
    manifest = json.loads((directory / MANIFEST).read_text())
    assert manifest["format_version"] == 4 and manifest["component"]["kind"] == "synthesizer"
    del manifest["component"], manifest["signature"]["axes"]
    manifest["format_version"] = 3
    reseal(directory, manifest)
    old, new = runtime.load(directory), runtime.load(tiny_artifact)
    assert old.kind == "synthesizer" and old.spec == new.spec
    arrays = new.example_inputs(24, seed=3)
    assert np.array_equal(old.run_case(arrays), new.run_case(arrays))
    manifest["format_version"] = 1
    reseal(directory, manifest)
    with pytest.raises(ArtifactError, match=r"format version 1; this rvc-compile reads 2, 3, 4"):
        runtime.load(directory)


def test_the_build_reads_a_training_checkpoint_with_the_recipes_sample_rate(tmp_path):
    """Defect: build ignored source.sample_rate (calibration inspect and prune passed it), so a training
    checkpoint whose shapes fit two official configs loaded there but not in build."""
    import torch

    from rvc_compile.build.records import BuildContext
    from rvc_compile.build.steps import load_source
    from rvc_compile.components.synthesizer.synthetic import make_checkpoint
    from rvc_compile.errors import CheckpointError
    from rvc_compile.recipe.schema import load_recipe

    path = make_checkpoint(tmp_path / "G_100.pth", version="v1", sample_rate="48k", f0=False, layout="training", seed=1)
    data = torch.load(path, weights_only=True)
    weights = data["model"] if "model" in data else data["weight"]
    for key in [key for key in weights if key.startswith("enc_q.")]:  # without the posterior encoder, 32k and 48k fit
        del weights[key]
    torch.save(data, path)
    recipe_path = tmp_path / "v1.yaml"
    recipe_path.write_text(f"name: v1\nversion: 1.0.0\nsource:\n  checkpoint: {path}\n  sample_rate: 48k\n")

    def loaded(recipe):
        context = BuildContext(recipe=recipe, component=get_component("synthesizer"), backend=None, stages=None, workdir=tmp_path,
                               log=lambda message: None, target_isa=None, machine_isa=None, emulation={}, torch_passes=(), onnx_passes=())
        return load_source(context).loaded

    assert loaded(load_recipe(recipe_path)).spec.sampling_rate == 48000
    with pytest.raises(CheckpointError, match="2 official configs"):
        loaded(load_recipe(recipe_path, overrides=["source.sample_rate=null"]))
