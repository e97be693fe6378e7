"""CPU ISA classes: detection, target.cpu, the int8 scheme per class, checks under emulation, and the
runtime on another class. Nothing here depends on this machine's ISA: lower classes are reached through
oneDNN's ISA cap (ONEDNN_MAX_CPU_ISA) and other classes through the manifest."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from rvc_compile import machine
from rvc_compile.errors import ArtifactError, RecipeError
from rvc_compile.machine import ISA_CLASSES, class_of, features_of, resolve_target_cpu

from conftest import assert_user_error, run_cli
from test_precision import write_recipe

# /proc/cpuinfo flags of real CPUs (the ones that matter here).
HASWELL = {"avx", "avx2", "fma", "sse4_2"}
ALDER_LAKE = HASWELL | {"avx_vnni"}
SKYLAKE_SP = HASWELL | {"avx512f", "avx512bw", "avx512vl", "avx512dq"}
CASCADE_LAKE = SKYLAKE_SP | {"avx512_vnni"}
ZEN4 = CASCADE_LAKE | {"avx512_bf16"}
SAPPHIRE_RAPIDS = ZEN4 | {"amx_bf16", "amx_int8", "amx_tile"}
CAN_CAP = machine.machine_isa().name != "baseline"  # the cap needs at least AVX2 to leave something


@pytest.mark.parametrize("flags,expected", [
    (set(), "baseline"), ({"avx2"}, "baseline"), (HASWELL, "avx2"), (ALDER_LAKE, "avx2-vnni"), (SKYLAKE_SP, "avx512"),
    (CASCADE_LAKE, "avx512-vnni"), (ZEN4, "avx512-bf16"), (SAPPHIRE_RAPIDS, "amx"),
])
def test_isa_class_of_real_cpus(flags, expected):
    assert class_of(features_of(flags)).name == expected


def test_isa_classes_order_by_features_and_set_the_int8_scheme():
    avx2, avx2_vnni, avx512, amx = (ISA_CLASSES[name] for name in ("avx2", "avx2-vnni", "avx512", "amx"))
    assert amx.runs_as(avx2) and amx.runs_as(avx512) and not avx2.runs_as(avx2_vnni)
    assert not avx2_vnni.runs_as(avx512) and not avx512.runs_as(avx2_vnni)  # a partial order
    assert [machine.int8_weight_bits(ISA_CLASSES[name]) for name in ISA_CLASSES] == [7, 8, 7, 8, 8, 8]
    assert [ISA_CLASSES[name].native_bf16 for name in ISA_CLASSES] == [False, False, False, False, True, True]
    assert resolve_target_cpu("portable").name == "avx2" and resolve_target_cpu("amx").name == "amx"


def test_onednn_cap_caps_the_detected_class(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)  # the suite itself may run under a cap
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(machine, "_read_cpuinfo", lambda: ("test cpu", SAPPHIRE_RAPIDS))
    assert machine.machine_isa().name == "amx"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    assert machine.machine_isa().name == "avx2" and resolve_target_cpu("auto").name == "avx2"
    assert machine.cpu_info()["isa_class"] == "avx2" and machine.cpu_info()["onednn_max_cpu_isa"] == "AVX2"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")
    assert machine.machine_isa().name == "avx512-vnni"
    assert machine.emulation_env(ISA_CLASSES["avx2"]) == {"ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert machine.emulation_env(ISA_CLASSES["avx512-vnni"]) == {}
    monkeypatch.setattr(machine, "_read_cpuinfo", lambda: ("old cpu", HASWELL))
    assert machine.machine_isa().name == "avx2", "a cap above the CPU changes nothing"


# -- builds -------------------------------------------------------------------------------------------

# The shipped int8 recipes' passes and precision policy, on test_precision's small recipe.
ISA_PASSES = "".join(f"\n  - name: {name}" for name in ("fold_weight_norm", "fold_speaker", "equalize_channels", "host_source", "polyphase_upsample", "simplify")) + "\n"
ISA_POLICY = """precision_policy:
  keep_fp32: [dec.conv_post, dec.noise_convs]
  calibration_method: percentile
calibration:
  source: generated
  count: 3
  seconds: 0.6
"""


def _recipe(tmp_path: Path, checkpoint: Path, *, backend: str, precision: str = "int8", cpu: str = "portable", name: str = "voice", extra: str = "") -> Path:
    return write_recipe(tmp_path, checkpoint, backend=backend, precision=precision, name=name, cpu=cpu, extra=ISA_POLICY + extra, passes=ISA_PASSES)


def _build(recipe: Path, *overrides: str):
    from rvc_compile.build.pipeline import build
    from rvc_compile.recipe.schema import load_recipe

    return build(load_recipe(recipe, list(overrides)), log=lambda message: None)


# Voices unlike the demo voice: other versions and rates, channels with spread scales.
# v2 40k without spread is the shipped-recipe test's voice (tests/test_shipped_recipes.py).
VOICES = [
    pytest.param(("v2", "48k", 0.6), id="v2-48k-spread"),
    pytest.param(("v1", "32k", 0.6), id="v1-32k-spread"),
]


@pytest.fixture(scope="module")
def portable_artifacts(tmp_path_factory, checkpoint_factory):
    """Portable int8 artifacts of both backends for one spread-scale voice (read-only)."""
    root = tmp_path_factory.mktemp("portable")
    checkpoint = checkpoint_factory("v2", "48k", True, scale_spread=0.6)
    return {backend: _build(_recipe(root, checkpoint, backend=backend, name=f"portable-{backend}")) for backend in ("onnxruntime", "openvino")}


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_portable_int8_uses_7_bit_weights_and_is_checked_as_on_avx2(portable_artifacts, backend):
    result = portable_artifacts[backend]
    manifest = json.loads((result.path / "manifest.json").read_text())
    isa = manifest["isa"]
    assert isa["requested"] == "portable" and isa["target"] == "avx2" and isa["int8_weight_bits"] == 7
    assert manifest["precision"]["weight_bits"] == 7
    assert isa["built_on"] == machine.machine_isa().name
    if backend == "openvino" and isa["built_on"] != "avx2":
        assert isa["verified_on"] == "avx2" and "ONEDNN_MAX_CPU_ISA=AVX2" in isa["verified_by"]
        assert all("as on avx2" in check["stage"] for check in result.report["multi_length_checks"] if check["stage"].startswith("backend"))
    checks = [c for c in result.report["multi_length_checks"] if c["stage"].startswith("backend")]
    assert [c["frames"] for c in checks] == [8, 40, 120] and all(c["passed"] for c in checks)


def test_7_bit_weights_fit_vpmaddubsw_without_saturating(portable_artifacts):
    """Every int8 weight of the portable ONNX Runtime graph is within +-64: two u8 x s8 products sum to at
    most 2 * 255 * 64 = 32640 < 32767, so AVX2's 16-bit pair sums never saturate."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(portable_artifacts["onnxruntime"].path / "model.onnx")).graph
    weights = [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64


@pytest.mark.slow
@pytest.mark.parametrize("voice", VOICES)
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_shipped_int8_recipes_pass_as_on_avx2_on_voices_unlike_the_demo(voice, backend, checkpoint_factory, tmp_path):
    """The shipped int8 recipes, portable, inside the int8 budget at every checked length (the build's
    multi-length check is the gate) for v1/v2, 32k/40k/48k voices with and without channel-scale spread."""
    version, rate, spread = voice
    checkpoint = checkpoint_factory(version, rate, True, scale_spread=spread)
    recipe = Path(__file__).resolve().parent.parent / "recipes" / f"cpu-int8-{backend}.yaml"
    result = _build(recipe, f"source.checkpoint={checkpoint}", "target.cpu=portable", f"output_dir={tmp_path}", "latency.repeat=1",
                    "latency.warmup=0", "latency.seconds=[0.5]", "shapes.max_frames=400")
    checks = [c for c in result.report["multi_length_checks"] if c["stage"].startswith("backend")]
    assert [c["frames"] for c in checks] == [10, 200, 400] and all(c["passed"] and c["snr_db"] >= 27 for c in checks), checks
    assert result.report["isa"]["int8_weight_bits"] == 7


def test_a_target_cpu_this_machine_lacks_is_refused_before_any_work(tmp_path, checkpoint_factory):
    if not CAN_CAP:
        pytest.skip("below AVX2: no class to cap to")
    recipe = _recipe(tmp_path, checkpoint_factory(), backend="openvino", cpu="avx512-vnni")
    process = subprocess.run([sys.executable, "-m", "rvc_compile.cli", "build", str(recipe)], capture_output=True, text=True,
                             env={**__import__("os").environ, "ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert_user_error(process, "target.cpu: avx512-vnni needs avx512, vnni", "cannot be checked here")
    assert not (tmp_path / "artifacts").exists()


def test_bf16_is_refused_for_a_target_without_native_bf16(tmp_path, checkpoint_factory):
    recipe = _recipe(tmp_path, checkpoint_factory(), backend="openvino", precision="bf16")
    process = run_cli("build", recipe)  # portable: avx2
    assert_user_error(process, "target.precision: bf16 needs a CPU with native bf16", "target.cpu portable is avx2")


def test_precision_auto_takes_the_fastest_candidate_inside_the_budget(tmp_path, checkpoint_factory):
    checkpoint = checkpoint_factory()
    chosen = _build(_recipe(tmp_path, checkpoint, backend="onnxruntime", precision="auto", name="auto"))
    manifest = json.loads((chosen.path / "manifest.json").read_text())
    assert manifest["precision_choice"]["requested"] == "auto" and manifest["precision_choice"]["chosen"] == "int8"
    assert manifest["precision"]["precision"] == "int8" and manifest["accuracy_budget"]["min_snr_db"] == 35.0  # the fp16 budget
    # int8 cannot reach 90 dB: auto falls back to fp32 and says why.
    strict = _build(_recipe(tmp_path, checkpoint, backend="onnxruntime", precision="auto", name="strict", extra="accuracy:\n  min_snr_db: 90\n"))
    manifest = json.loads((strict.path / "manifest.json").read_text())
    assert manifest["precision_choice"]["chosen"] == "fp32" and manifest["precision"]["precision"] == "fp32"
    assert manifest["precision_choice"]["tried"][0]["precision"] == "int8" and "min_snr_db" in manifest["precision_choice"]["tried"][0]["result"]
    assert not (tmp_path / "artifacts" / "strict" / "1.0.0.tmp").exists()


def test_precision_auto_candidates_follow_the_target_class(tmp_path, checkpoint_factory):
    from rvc_compile.backends import get_backend
    from rvc_compile.build.pipeline import auto_precision_candidates
    from rvc_compile.recipe.schema import load_recipe

    checkpoint = checkpoint_factory()
    for cpu, expected in (("portable", ["int8", "fp32"]), ("avx512-bf16", ["int8", "bf16", "fp32"]), ("amx", ["bf16", "fp32"])):
        recipe = load_recipe(_recipe(tmp_path, checkpoint, backend="openvino", precision="auto", cpu=cpu))
        assert auto_precision_candidates(recipe, get_backend("openvino"))[0] == expected
    recipe = load_recipe(_recipe(tmp_path, checkpoint, backend="onnxruntime", precision="auto"), ["calibration.source=none", "calibration.count=16", "calibration.seconds=2.0"])
    candidates, choice = auto_precision_candidates(recipe, get_backend("onnxruntime"))
    assert candidates == ["fp32"] and "no calibration data" in choice["tried"][0]["result"]


# -- the runtime on another CPU class -----------------------------------------------------------------

def _retarget(artifact: Path, destination: Path, **isa) -> Path:
    """A copy of ``artifact`` whose manifest claims another ISA record (loaded with allow_tampered)."""
    shutil.copytree(artifact, destination)
    manifest = json.loads((destination / "manifest.json").read_text())
    manifest["isa"].update(isa)
    (destination / "manifest.json").write_text(json.dumps(manifest))
    return destination


def _load_in_child(artifact: Path, *, cap: str | None = None, mode: str = "check") -> subprocess.CompletedProcess:
    import os

    code = textwrap.dedent(f"""
        import warnings, json
        warnings.simplefilter("always")
        import rvc_compile.runtime as runtime
        from rvc_compile.errors import ArtifactError
        with warnings.catch_warnings(record=True) as caught:
            try:
                voice = runtime.load({str(artifact)!r}, allow_tampered=True, on_other_cpu={mode!r})
            except ArtifactError as exc:
                print("REFUSED", exc)
                raise SystemExit(0)
        print("LOADED", json.dumps({{"notes": voice.cpu_notes, "warnings": [str(w.message) for w in caught], "executed": voice.executed_precision}}))
    """)
    env = {**os.environ, **({"ONEDNN_MAX_CPU_ISA": cap} if cap else {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


def test_runtime_refuses_8_bit_int8_on_a_cpu_without_vnni(portable_artifacts, tmp_path):
    if not CAN_CAP:
        pytest.skip("below AVX2: no class to cap to")
    vnni = _retarget(portable_artifacts["openvino"].path, tmp_path / "vnni", target="avx512-vnni", verified_on="avx512-vnni", int8_weight_bits=8)
    process = _load_in_child(vnni, cap="AVX2", mode="trust")
    assert process.returncode == 0, process.stderr
    assert "REFUSED" in process.stdout and "has no VNNI" in process.stdout and "target.cpu: portable" in process.stdout


def test_runtime_checks_golden_cases_once_on_another_class_and_refuses_a_failure(portable_artifacts, tmp_path, isolated_build_cache):
    here = machine.machine_isa().name
    elsewhere = next(name for name in ISA_CLASSES if name != here)
    moved = _retarget(portable_artifacts["onnxruntime"].path, tmp_path / "moved", target=elsewhere, verified_on=elsewhere)
    from rvc_compile.cache.store import Store

    records = Store(isolated_build_cache).area("cpu-checks")  # a store area: cache ls/du/prune/clear see it
    before = set(records.glob("*.json")) if records.exists() else set()
    first = _load_in_child(moved)
    assert first.returncode == 0 and "LOADED" in first.stdout, first.stdout + first.stderr
    assert f"golden cases pass on this {here} CPU" in first.stdout
    created = set(records.glob("*.json")) - before
    assert len(created) == 1 and json.loads(created.pop().read_text())["passed"] is True
    warned = _load_in_child(moved, mode="warn")
    assert "without a check" in warned.stdout
    # A golden reference that no longer matches: the check fails and the artifact is refused.
    broken = _retarget(portable_artifacts["onnxruntime"].path, tmp_path / "broken", target=elsewhere, verified_on=elsewhere)
    golden = next((broken / "golden").glob("*.npz"))
    arrays = dict(np.load(golden))
    arrays["reference"] = arrays["reference"] * -1.0
    np.savez(golden, **arrays)
    refused = _load_in_child(broken)
    assert "REFUSED" in refused.stdout and "golden cases fail" in refused.stdout, refused.stdout + refused.stderr


def test_runtime_on_its_own_class_runs_no_check_and_reports_what_openvino_executes(portable_artifacts):
    artifact = portable_artifacts["openvino"].path
    process = _load_in_child(artifact, cap="AVX2" if CAN_CAP else None)
    assert process.returncode == 0 and "LOADED" in process.stdout, process.stderr
    loaded = json.loads(process.stdout.split("LOADED", 1)[1])
    if CAN_CAP:
        assert loaded["notes"] == [] and loaded["warnings"] == []
    assert loaded["executed"].get("int8", 0) > 0 and set(loaded["executed"]) <= {"int8", "fp32"}, loaded["executed"]


def test_a_bf16_artifact_runs_in_f32_on_a_cpu_without_native_bf16(tmp_path):
    from rvc_compile.backends.openvino import adapt_to_cpu

    section = {"name": "openvino", "compile_options": {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": 2}}
    adapted, notes = adapt_to_cpu(section, ISA_CLASSES["avx512-vnni"])
    assert adapted["compile_options"]["INFERENCE_PRECISION_HINT"] == "f32" and "without native bf16" in notes[0]
    assert section["compile_options"]["INFERENCE_PRECISION_HINT"] == "bf16", "the manifest's section is not changed"
    assert adapt_to_cpu(section, ISA_CLASSES["amx"]) == (section, [])


def test_load_rejects_an_unknown_on_other_cpu_mode(tiny_artifact):
    import rvc_compile.runtime as runtime

    with pytest.raises(ValueError, match="on_other_cpu must be one of check, warn, trust"):
        runtime.load(tiny_artifact, on_other_cpu="maybe")


def test_spread_channel_scales_keeps_the_function_and_spreads_the_ranges():
    import torch

    from rvc_compile.components.synthesizer.model import Synthesizer
    from rvc_compile.components.synthesizer.spec import from_config_list
    from rvc_compile.components.synthesizer.synthetic import checkpoint_config, random_state_dict, spread_channel_scales

    config = checkpoint_config("v2", "40k", "small")
    plain = random_state_dict(config, "v2", True, 0)
    spread = spread_channel_scales(plain, 0.6, 0)
    key = "dec.resblocks.0.convs1.0.weight"
    norms = spread[key].reshape(spread[key].shape[0], -1).norm(dim=1) / plain[key].reshape(plain[key].shape[0], -1).norm(dim=1)
    assert float(norms.max() / norms.min()) > 10, "channel scales spread over more than a decade"
    spec = from_config_list(config, version="v2", f0=True, source="test")
    generator = torch.Generator().manual_seed(1)
    inputs = [torch.randn(1, 30, 768, generator=generator), torch.full((1, 30), 180.0), torch.zeros(1, dtype=torch.long),
              torch.zeros(1, 16, 30), torch.zeros(1, 30 * spec.hop_length)]
    outputs = []
    for weights in (plain, spread):
        model = Synthesizer(spec)
        model.load_state_dict(weights)
        with torch.no_grad():
            outputs.append(model.eval()(*inputs))
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5)
