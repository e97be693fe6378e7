"""Precision policies on both backends: layer names, fp32 islands, int8 calibration, accuracy-aware search."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from rvc_compile.build.pipeline import build
from rvc_compile.errors import CalibrationError, GateFailure, RecipeError
from rvc_compile.precision.layers import matches, name_layers, resolve, weighted_layers
from rvc_compile.precision.search import Trial, search
from rvc_compile.recipe.schema import load_recipe

from conftest import assert_build_error, assert_user_error, run_cli

PASSES = """
  - name: fold_weight_norm
  - name: fold_speaker
  - name: host_source
  - name: polyphase_upsample
  - name: simplify
"""


def write_recipe(directory: Path, checkpoint: Path, *, backend: str, precision: str, name: str = "voice", extra: str = "", passes: str = PASSES,
                 cpu: str = "auto") -> Path:
    text = textwrap.dedent(f"""
    name: {name}
    version: 1.0.0
    source:
      checkpoint: {checkpoint}
    target:
      backend: {backend}
      precision: {precision}
      cpu: {cpu}
      threads: 2
    shapes:
      min_frames: 8
      opt_frames: 40
      max_frames: 120
    passes:{textwrap.indent(textwrap.dedent(passes), '      ')}
    latency:
      seconds: [0.25]
      repeat: 1
      warmup: 1
    golden:
      seconds: [0.3]
      noise: seed:3
    output_dir: {directory / 'artifacts'}
    """)
    if precision == "int8" and "calibration:" not in extra:
        extra += "\ncalibration:\n  source: generated\n  count: 3\n  seconds: 0.6\n"
    path = directory / f"{name}.yaml"
    path.write_text(text + textwrap.dedent(extra))
    return path


@pytest.fixture(scope="module")
def small_checkpoint(checkpoint_factory):
    return checkpoint_factory("v2", "40k", True)


def quiet(message: str) -> None:
    pass


# -- layer names ----------------------------------------------------------------------------------

def test_layers_are_named_after_module_paths_for_both_exporters(small_checkpoint, tmp_path):
    import onnx

    from rvc_compile.capture.export import export_onnx
    from rvc_compile.components.synthesizer.checkpoint import load_checkpoint
    from rvc_compile.components.synthesizer.model import build_model

    checkpoint = load_checkpoint(small_checkpoint)
    names = {}
    for exporter in ("dynamo", "torchscript"):
        model = build_model(checkpoint.spec, checkpoint.state_dict)
        path = export_onnx(model, checkpoint.spec, model.input_names, tmp_path / f"{exporter}.onnx", exporter=exporter, min_frames=4, max_frames=50)
        names[exporter] = weighted_layers(onnx.load(str(path)))
    assert "dec.conv_post" in names["dynamo"] and "enc_p.emb_phone" in names["dynamo"] and "dec.resblocks.3.convs1.2" in names["dynamo"]
    convs = {n for n in names["dynamo"] if n.startswith(("dec.", "flow."))}
    assert convs == {n for n in names["torchscript"] if n.startswith(("dec.", "flow."))}, "one name per layer whatever the exporter"
    assert len(set(names["dynamo"])) == len(names["dynamo"])


def test_resolve_selects_exact_names_and_module_prefixes_and_names_unknown_ones():
    layers = ["dec.conv_pre", "dec.ups.0", "dec.ups.1.convs.0", "dec.ups.1.convs.1", "dec.ups.10", "dec.conv_post"]
    assert resolve(["dec.ups.1"], layers, "k") == ["dec.ups.1.convs.0", "dec.ups.1.convs.1"]
    assert resolve(["dec.conv_post", "dec.ups.0"], layers, "k") == ["dec.ups.0", "dec.conv_post"]
    assert not matches("dec.ups.1", "dec.ups.10")
    with pytest.raises(RecipeError, match=r"precision_policy.keep_fp32\[1\]: no layer named 'dec.conv_postt'"):
        resolve(["dec.conv_pre", "dec.conv_postt"], layers, "precision_policy.keep_fp32")


# -- the search -----------------------------------------------------------------------------------

@pytest.mark.parametrize("needed", [0, 1, 5, 17, 40])
def test_accuracy_aware_search_finds_the_fewest_layers_in_log_many_trials(needed):
    ranking = [f"layer{i}" for i in range(40)]
    calls = []

    def trial(extra):
        calls.append(len(extra))
        return Trial(extra, len(extra) >= needed, None if len(extra) >= needed else "too noisy")

    result = search(ranking, trial, max_layers=None, log=quiet)
    assert result.extra_fp32 == ranking[:needed]
    assert len(calls) <= 2 * 6 + 1 and len(set(calls)) == len(calls), "O(log n) trials, none repeated"


def test_accuracy_aware_search_gives_up_past_the_limit_with_a_gate_failure():
    with pytest.raises(GateFailure, match="still outside the budget with the 4 most sensitive layers"):
        search([f"l{i}" for i in range(10)], lambda extra: Trial(extra, False, "snr_db 20 < min_snr_db 30"), max_layers=4, log=quiet)


# -- recipe errors (exit 2, nothing built) -------------------------------------------------------

def test_precision_policy_errors_name_the_key(small_checkpoint, tmp_path):
    recipe = write_recipe(tmp_path, small_checkpoint, backend="openvino", precision="int8", extra="precision_policy:\n  keep_fp32: [dec.no_such_layer]\n")
    process = run_cli("build", recipe)
    assert_build_error(process, "precision_policy.keep_fp32[0]", "no layer named 'dec.no_such_layer'")
    assert not (tmp_path / "artifacts" / "voice").exists()
    with pytest.raises(RecipeError, match="keep_fp32: only meaningful"):
        load_recipe(write_recipe(tmp_path, small_checkpoint, backend="openvino", precision="fp32", name="a", extra="precision_policy:\n  keep_fp32: [dec]\n"))
    with pytest.raises(RecipeError, match="accuracy_aware: only for int8"):
        load_recipe(write_recipe(tmp_path, small_checkpoint, backend="openvino", precision="bf16", name="b", extra="precision_policy:\n  accuracy_aware: true\n"))
    # The bf16 policy refusal is the backend's, whatever this CPU (a build here may refuse bf16 first).
    from rvc_compile.backends import openvino

    bf16 = load_recipe(write_recipe(tmp_path, small_checkpoint, backend="openvino", precision="bf16", name="d", extra="precision_policy:\n  keep_fp32: [dec]\n"))
    with pytest.raises(RecipeError, match="bf16 hint cannot keep single layers"):
        openvino.check_policy(bf16.target, bf16.precision_policy)
    with pytest.raises(RecipeError, match="per channel only"):
        build(load_recipe(write_recipe(tmp_path, small_checkpoint, backend="openvino", precision="int8", name="f", extra="precision_policy:\n  per_channel: false\n")), log=quiet)
    with pytest.raises(RecipeError, match="needs the host_source pass"):
        build(load_recipe(write_recipe(tmp_path, small_checkpoint, backend="openvino", precision="int8", name="c", passes="\n  - name: fold_speaker\n")), log=quiet)
    assert not any((tmp_path / "artifacts" / name).exists() for name in "cdf")


def test_int8_refuses_missing_empty_and_mismatched_calibration(small_checkpoint, tmp_path):
    with pytest.raises(RecipeError, match="calibration.source: int8 needs calibration data"):
        load_recipe(write_recipe(tmp_path, small_checkpoint, backend="onnxruntime", precision="int8", extra="calibration:\n  source: none\n"))
    empty = tmp_path / "empty"
    empty.mkdir()
    recipe = write_recipe(tmp_path, small_checkpoint, backend="openvino", precision="int8", name="e", extra=f"calibration:\n  source: npz\n  path: {empty}\n")
    assert_build_error(run_cli("build", recipe), str(empty))
    v1 = tmp_path / "v1-features"
    v1.mkdir()
    np.savez(v1 / "utt.npz", features=np.zeros((50, 256), np.float32), f0=np.full(50, 150.0, np.float32))
    recipe = write_recipe(tmp_path, small_checkpoint, backend="openvino", precision="int8", name="m", extra=f"calibration:\n  source: npz\n  path: {v1}\n")
    with pytest.raises(CalibrationError, match="256"):
        build(load_recipe(recipe), log=quiet)
    assert not (tmp_path / "artifacts" / "m").exists() and not (tmp_path / "artifacts" / "e").exists()


# -- islands really stay fp32 ---------------------------------------------------------------------

def test_openvino_int8_keeps_the_listed_layer_unquantized(small_checkpoint, tmp_path):
    import openvino as ov

    recipe = write_recipe(tmp_path, small_checkpoint, backend="openvino", precision="int8", extra="precision_policy:\n  keep_fp32: [dec.conv_post]\n")
    result = build(load_recipe(recipe), log=quiet)
    model = ov.Core().read_model(str(result.path / "model.xml"))
    ops = {op.get_friendly_name(): op for op in model.get_ops()}

    def quantized(layer):
        conv = next(op for name, op in ops.items() if name.split("/")[0] == layer and op.get_type_name() == "Convolution")
        producers = {conv.input_value(i).get_node().get_type_name() for i in range(2)}
        return "FakeQuantize" in producers or "Multiply" in producers  # FQ on activations / int8 weight decompression

    assert not quantized("dec.conv_post") and quantized("dec.resblocks.0.convs1.0")
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["precision"]["keep_fp32"] == ["dec.conv_post"] and manifest["backend"]["compile_options"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert run_cli("verify", result.path, "--skip-latency").returncode == 0


def test_onnxruntime_fp16_keeps_islands_in_fp32_and_io_in_fp32(small_checkpoint, tmp_path):
    import onnx

    recipe = write_recipe(tmp_path, small_checkpoint, backend="onnxruntime", precision="fp16", extra="precision_policy:\n  keep_fp32: [dec.conv_post]\n")
    result = build(load_recipe(recipe), log=quiet)
    graph = onnx.load(str(result.path / "model.onnx")).graph
    initializers = {init.name: init.data_type for init in graph.initializer}
    post = next(node for node in graph.node if node.name == "dec.conv_post")
    pre = next(node for node in graph.node if node.name == "dec.conv_pre")
    assert initializers[post.input[1]] == onnx.TensorProto.FLOAT and initializers[pre.input[1]] == onnx.TensorProto.FLOAT16
    assert all(i.type.tensor_type.elem_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64) for i in graph.input)
    assert run_cli("verify", result.path, "--skip-latency").returncode == 0


# -- accuracy-aware end to end --------------------------------------------------------------------

@pytest.mark.slow
def test_accuracy_aware_int8_keeps_the_most_sensitive_layers_until_the_budget_holds(small_checkpoint, tmp_path):
    plain = build(load_recipe(write_recipe(tmp_path, small_checkpoint, backend="openvino", precision="int8", name="plain")), log=quiet)
    worst_snr = min(check["snr_db"] for check in plain.report["multi_length_checks"] if check["stage"].startswith("backend"))
    target = worst_snr + 1.0
    messages = []
    recipe = write_recipe(
        tmp_path, small_checkpoint, backend="openvino", precision="int8", name="aware",
        extra=f"precision_policy:\n  accuracy_aware: true\n  max_fp32_layers: 40\naccuracy:\n  min_snr_db: {target:.2f}\n",
    )
    result = build(load_recipe(recipe), log=messages.append)
    aware = result.report["precision"]["accuracy_aware"]
    kept = aware["extra_fp32"]
    assert kept and all(aware["sensitivity"][name]["precision"] == "fp32" for name in kept)
    assert min(check["snr_db"] for check in result.report["multi_length_checks"] if check["stage"].startswith("backend")) >= target
    ranking = sorted(aware["sensitivity"], key=lambda name: aware["sensitivity"][name]["snr_db"])
    assert kept == ranking[: len(kept)], "the most sensitive layers are the ones kept"
    assert any("measuring per-layer sensitivity" in m for m in messages)
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert set(kept) <= set(manifest["precision"]["keep_fp32"])
    report_md = (result.path / "report.md").read_text()
    assert kept[0] in report_md

    impossible = write_recipe(
        tmp_path, small_checkpoint, backend="openvino", precision="int8", name="impossible",
        extra="precision_policy:\n  accuracy_aware: true\n  max_fp32_layers: 2\naccuracy:\n  min_snr_db: 90\n",
    )
    process = run_cli("build", impossible)
    assert_build_error(process, "still outside the budget with the 2 most sensitive layers", exit_code=1)
    assert not (tmp_path / "artifacts" / "impossible").exists()


def test_openvino_artifact_runs_without_torch_and_sets_the_precision_hint(small_checkpoint, tmp_path):
    import subprocess

    from rvc_compile.backends.openvino import HINTS
    from rvc_compile.machine import machine_isa

    # bf16 where this CPU runs it natively (the build refuses it elsewhere: test_bf16_is_refused_...).
    precision = "bf16" if machine_isa().native_bf16 else "fp32"
    result = build(load_recipe(write_recipe(tmp_path, small_checkpoint, backend="openvino", precision=precision)), log=quiet)
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["backend"]["compile_options"]["INFERENCE_PRECISION_HINT"] == HINTS[precision]
    assert manifest["backend"]["static_frames"] == [40, 120]
    code = textwrap.dedent(f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('torch', 'onnx', 'onnxscript', 'onnxslim', 'nncf'):
                    raise ImportError('blocked ' + name)
        sys.meta_path.insert(0, Block())
        import numpy as np
        import rvc_compile.runtime as runtime
        voice = runtime.load({str(result.path)!r})
        rng = np.random.default_rng(0)
        audio = voice.infer(rng.standard_normal((300, 768)).astype(np.float32), np.full(300, 150.0, np.float32))
        assert audio.shape == (300 * voice.hop_length,) and np.isfinite(audio).all()
        print('ok', voice.window)
    """)
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert process.returncode == 0, process.stderr
    assert "WindowPlan(frames=120" in process.stdout, "300 frames ran in windows of the graph's maximum"
