"""End-to-end build pipeline on small models: recipe -> capture -> passes -> ORT artifact -> verify -> runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from rvc_compile.artifact.manifest import MANIFEST, check_integrity
from rvc_compile.build.pipeline import build
from rvc_compile.errors import BuildError, GateFailure, RecipeError
from rvc_compile.recipe.schema import load_recipe
from rvc_compile.components.synthesizer.synthetic import make_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def write_recipe(directory: Path, checkpoint: Path, *, name: str = "voice", extra: str = "", passes: str | None = None) -> Path:
    passes = passes if passes is not None else """
      - name: fold_weight_norm
      - name: fold_speaker
        speaker: 0
      - name: simplify
        tool: onnxslim
    """
    text = f"""
    name: {name}
    version: 1.0.0
    source:
      checkpoint: {checkpoint}
    target:
      backend: onnxruntime
      device: cpu
      precision: fp32
      threads: 2
    shapes:
      mode: dynamic
      min_frames: 8
      opt_frames: 60
      max_frames: 400
    capture:
      exporter: torchscript
    passes:{textwrap.indent(textwrap.dedent(passes), '      ') if passes.strip() else ' []'}
    latency:
      seconds: [0.25]
      repeat: 3
      warmup: 1
      goals:
        - seconds: 0.25
          max_rtf: 50.0
    golden:
      seconds: [0.3, 1.0]
      noise: seed:3
    output_dir: {directory / 'artifacts'}
    """
    path = directory / f"{name}.yaml"
    path.write_text(textwrap.dedent(text) + textwrap.dedent(extra))
    return path


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "small.pth", size="small", seed=11)


@pytest.fixture(scope="module")
def built(tmp_path_factory, small_checkpoint):
    directory = tmp_path_factory.mktemp("build")
    recipe = load_recipe(write_recipe(directory, small_checkpoint))
    result = build(recipe, log=lambda message: None)
    return result


def test_build_writes_a_complete_hashed_artifact(built):
    path = built.path
    assert path.name == "1.0.0" and path.parent.name == "voice"
    manifest = json.loads((path / MANIFEST).read_text())
    for key in ("format_version", "source", "recipe", "recipe_sha256", "library_versions", "backend", "target", "signature", "golden", "files"):
        assert key in manifest, key
    assert manifest["backend"]["session_options"]["intra_op_num_threads"] == 2
    assert manifest["model"]["fixed_speaker"] == 0
    assert [i["name"] for i in manifest["signature"]["inputs"]] == ["features", "f0", "prior_noise", "source_noise"]
    for name in ("model.onnx", "report.json", "report.md", "golden/golden-0.3s.npz"):
        assert name in manifest["files"], name
    assert any(name.endswith(".png") for name in manifest["files"])
    assert check_integrity(path) == []
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "temporary folders left behind"


def test_build_report_has_accuracy_latency_and_multi_length_checks(built):
    report = json.loads((built.path / "report.json").read_text())
    assert report["accuracy"]["passed"] is True
    assert all(case["snr_db"] is None or case["snr_db"] > 60 for case in report["accuracy"]["cases"])
    checked = {(c["stage"], c["frames"]) for c in report["multi_length_checks"]}
    for stage in ("capture", "simplify"):
        frames = sorted(f for s, f in checked if s == stage)
        assert len(frames) >= 3 and frames[0] == 8 and frames[-1] == 400
    assert report["latency"]["cases"][0]["p50_ms"] > 0


def test_runtime_output_matches_reference_at_unseen_lengths(built, small_checkpoint):
    from rvc_compile import runtime
    from rvc_compile.components.synthesizer.examples import example_case
    from rvc_compile.components.synthesizer.reference import ReferenceModel

    voice = runtime.load(built.path)
    reference = ReferenceModel.from_path(small_checkpoint)
    for frames in (8, 37, 399):
        case = example_case(768, frames, seed=frames)
        got = voice.infer(case["features"], case["f0"], noise="seed:5")
        want = reference.infer(case["features"], case["f0"], noise="seed:5")
        assert got.shape == want.shape == (frames * 400,)
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4


def test_runtime_rejects_inputs_outside_the_compiled_range_and_other_speakers(built):
    from rvc_compile import runtime
    from rvc_compile.errors import InputError

    voice = runtime.load(built.path)
    features, f0 = np.zeros((401, 768), np.float32), np.zeros(401, np.float32)
    with pytest.raises(InputError, match="at most 400"):
        voice.infer(features, f0)
    with pytest.raises(InputError, match="speaker 0 only"):
        voice.infer(features[:20], f0[:20], speaker=1)
    with pytest.raises(InputError, match="768"):
        voice.infer(np.zeros((20, 256), np.float32), f0[:20])


def test_runtime_loads_without_torch_or_onnx_tooling(built):
    code = textwrap.dedent(f"""
        import sys
        for blocked in ("torch", "onnx", "onnxslim", "onnxscript"):
            sys.modules[blocked] = None  # any import of these now raises ImportError
        import numpy as np
        import rvc_compile.runtime as runtime
        voice = runtime.load({str(built.path)!r})
        audio = voice.infer(np.zeros((30, 768), np.float32), np.full(30, 150.0, np.float32))
        assert audio.shape == (30 * 400,), audio.shape
        assert not any(name == "torch" or name.startswith("torch.") for name, module in sys.modules.items() if module is not None)
        print("ok")
    """)
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip() == "ok"


def test_existing_version_is_not_overwritten_without_force(built):
    recipe = load_recipe(built.path.parent.parent.parent / "voice.yaml")
    before = (built.path / MANIFEST).read_bytes()
    with pytest.raises(Exception, match="already exists"):
        build(recipe, log=lambda message: None)
    assert (built.path / MANIFEST).read_bytes() == before


def test_failed_build_leaves_no_artifact(tmp_path, small_checkpoint):
    # An accuracy budget no real graph can meet: the gate fails after everything else was built.
    recipe_path = write_recipe(tmp_path, small_checkpoint, name="strict", extra="accuracy:\n  max_abs_error: 0.0\n  min_snr_db: 1000.0\n", passes="")
    with pytest.raises(GateFailure, match="min_snr_db"):
        build(load_recipe(recipe_path), log=lambda message: None)
    artifacts = tmp_path / "artifacts"
    assert not (artifacts / "strict" / "1.0.0").exists()
    leftovers = list((artifacts / "strict").iterdir()) if (artifacts / "strict").exists() else []
    assert leftovers == []


def test_wrong_checkpoint_pin_is_refused_before_building(tmp_path, small_checkpoint):
    recipe_path = write_recipe(tmp_path, small_checkpoint, extra="")
    recipe = load_recipe(recipe_path, [f"source.sha256={'0' * 64}"])
    with pytest.raises(Exception, match="does not match"):
        build(recipe, log=lambda message: None)
    assert not (tmp_path / "artifacts" / "voice" / "1.0.0").exists()


def test_unavailable_backend_and_precision_are_recipe_errors(tmp_path, small_checkpoint):
    recipe_path = write_recipe(tmp_path, small_checkpoint)
    with pytest.raises(RecipeError, match="target.backend"):
        build(load_recipe(recipe_path, ["target.backend=tensorrt"]), log=lambda message: None)
    with pytest.raises(RecipeError, match="target.precision.*no bf16 kernels"):
        build(load_recipe(recipe_path, ["target.precision=bf16"]), log=lambda message: None)
    with pytest.raises(RecipeError, match="target.precision.*no fp16 compute"):
        build(load_recipe(recipe_path, ["target.backend=openvino", "target.precision=fp16"]), log=lambda message: None)
    with pytest.raises(RecipeError, match="calibration.source: int8 needs calibration data"):
        load_recipe(recipe_path, ["target.precision=int8"])
    assert not (tmp_path / "artifacts" / "voice").exists()


def test_torch_pass_after_onnx_pass_is_refused(tmp_path, small_checkpoint):
    recipe_path = write_recipe(tmp_path, small_checkpoint, passes="""
      - name: simplify
      - name: fold_speaker
        speaker: 0
    """)
    with pytest.raises(RecipeError, match="must come before"):
        build(load_recipe(recipe_path), log=lambda message: None)


def test_verify_passes_then_names_a_tampered_file(built, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(built.path, copy)
    cli = [sys.executable, "-m", "rvc_compile.cli"]
    ok = subprocess.run(cli + ["verify", str(copy), "--skip-latency"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASS" in ok.stdout
    golden = copy / "golden" / "golden-0.3s.npz"
    data = bytearray(golden.read_bytes())
    data[len(data) // 2] ^= 0x01
    golden.write_bytes(bytes(data))
    bad = subprocess.run(cli + ["verify", str(copy), "--json"], capture_output=True, text=True)
    assert bad.returncode == 1
    result = json.loads(bad.stdout)
    assert any("golden/golden-0.3s.npz" in problem for problem in result["integrity"]["problems"])
    missing = subprocess.run(cli + ["verify", str(tmp_path / "nope")], capture_output=True, text=True)
    assert missing.returncode == 2
    assert len(missing.stderr.strip().splitlines()) == 1


def test_verify_fails_an_accuracy_gate_when_the_graph_changes(built, tmp_path):
    """Swap in a graph with perturbed weights, re-seal the manifest: verify must catch it on accuracy."""
    import shutil

    import onnx
    from onnx import numpy_helper

    from rvc_compile.artifact.manifest import ArtifactWriter, read_manifest

    manifest = read_manifest(built.path)
    model = onnx.load(str(built.path / "model.onnx"))
    largest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    values = numpy_helper.to_array(largest).copy()
    values *= 1.05
    largest.CopyFrom(numpy_helper.from_array(values, largest.name))
    with ArtifactWriter(tmp_path, "voice", "9.9.9") as writer:
        for name in manifest["files"]:
            if name != "model.onnx":
                (writer.dir / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(built.path / name, writer.dir / name)
        onnx.save(model, str(writer.dir / "model.onnx"))
        resealed = {k: v for k, v in manifest.items() if k != "files"}
        resealed["accuracy_budget"] = {**resealed["accuracy_budget"], "min_snr_db": 60.0}
        path = writer.commit(resealed)
    process = subprocess.run([sys.executable, "-m", "rvc_compile.cli", "verify", str(path), "--skip-latency"], capture_output=True, text=True)
    assert process.returncode == 1, process.stdout
    assert "min_snr_db" in process.stdout


def test_build_cli_prints_artifact_path_last_and_maps_recipe_errors(tmp_path, small_checkpoint):
    recipe_path = write_recipe(tmp_path, small_checkpoint, name="cli-voice")
    process = subprocess.run([sys.executable, "-m", "rvc_compile.cli", "build", str(recipe_path)], capture_output=True, text=True)
    assert process.returncode == 0, process.stderr
    last = process.stdout.strip().splitlines()[-1]
    assert Path(last).is_dir() and (Path(last) / MANIFEST).exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe_path.read_text().replace("threads: 2", "threads: 2\n  thread: 3"))
    process = subprocess.run([sys.executable, "-m", "rvc_compile.cli", "build", str(bad)], capture_output=True, text=True)
    assert process.returncode == 2
    assert len(process.stderr.strip().splitlines()) == 1 and "target.thread" in process.stderr
    assert "Traceback" not in process.stderr


def test_infer_accepts_an_artifact_like_a_checkpoint(built, tmp_path, small_checkpoint):
    from rvc_compile.components.synthesizer.examples import example_case

    case = example_case(768, 50, seed=2)
    np.save(tmp_path / "f.npy", case["features"])
    np.save(tmp_path / "f0.npy", case["f0"])
    outputs = {}
    for label, source in (("artifact", built.path), ("checkpoint", small_checkpoint)):
        out = tmp_path / f"{label}.npy"
        process = subprocess.run(
            [sys.executable, "-m", "rvc_compile.cli", "infer", str(source), "--features", str(tmp_path / "f.npy"),
             "--f0", str(tmp_path / "f0.npy"), "--noise", "seed:4", "-o", str(out)],
            capture_output=True, text=True,
        )
        assert process.returncode == 0, process.stderr
        outputs[label] = np.load(out)
    assert np.linalg.norm(outputs["artifact"] - outputs["checkpoint"]) / np.linalg.norm(outputs["checkpoint"]) < 1e-4


def test_recipe_schema_command_prints_json_schema():
    process = subprocess.run([sys.executable, "-m", "rvc_compile.cli", "recipe", "schema"], capture_output=True, text=True)
    assert process.returncode == 0
    schema = json.loads(process.stdout)
    assert "properties" in schema and "target" in schema["properties"]


def test_latency_goals_are_reported_unless_enforced(tmp_path, small_checkpoint):
    from conftest import assert_build_error, run_cli

    """A slow or busy machine must not fail a correct artifact: goals are reported; ``enforce`` makes one a gate.
    Speed-up goals compare with the fp32 eager reference timed in the same build."""
    from conftest import write_tiny_recipe

    recipe = write_tiny_recipe(tmp_path, small_checkpoint)
    impossible = "latency.goals=[{seconds: 0.1, max_rtf: 0.000001, min_speedup_vs_eager: 1000}]"
    result = build(load_recipe(recipe, [impossible]), cache_dir=tmp_path / "cache", log=lambda message: None)
    goal = result.report["latency"]["goals"][0]
    assert result.report["latency"]["passed"] and goal["met"] is False and goal["enforce"] is False
    assert goal["speedup_vs_eager"] > 0 and goal["eager_p50_ms"] > 0 and len(goal["missed"]) == 2
    assert "missed, reported" in (result.path / "report.md").read_text()
    verified = run_cli("verify", result.path)
    assert verified.returncode == 0 and "not measured here" in verified.stdout, verified.stdout
    enforced = run_cli("build", recipe, "--set", impossible.replace("1000}", "1000, enforce: true}"), "--set", "name=enforced")
    assert_build_error(enforced, "real-time factor", exit_code=1)
    assert not (tmp_path / "artifacts" / "enforced").exists()
