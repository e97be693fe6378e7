"""The AOTInductor backend (backends/aoti.py): layers lowered with real fp32 islands, named as the ONNX
graph names them; what it refuses; and a real build on a small model, loaded with and without torch.

The CUDA path is the same code with device cuda (benchmarks/gpu_check.sh runs it on a GPU); here it is
covered by these CPU builds and by its refusal on a machine without a GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from rvc_compile.build.pipeline import build
from rvc_compile.errors import ArtifactError, RecipeError
from rvc_compile.recipe.schema import load_recipe

torch = pytest.importorskip("torch")
ROOT = Path(__file__).resolve().parent.parent


class Tiny(torch.nn.Module):
    """Two convolutions (the first called twice) and a linear head, as a voice's layers are."""

    def __init__(self):
        super().__init__()
        self.conv_a = torch.nn.Conv1d(4, 4, 3, padding=1)
        self.conv_b = torch.nn.Conv1d(4, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        h = torch.nn.functional.leaky_relu(self.conv_a(x), 0.1)
        h = self.conv_b(self.conv_a(h)) + h
        return self.head(h.transpose(1, 2))


def _program(model, x):
    with torch.no_grad():
        return torch.export.export(model.eval(), (x,))


def test_layer_names_are_the_onnx_graphs_names(tmp_path):
    import onnx

    from rvc_compile.backends.program import layer_names
    from rvc_compile.precision.layers import name_layers

    torch.manual_seed(0)
    model, x = Tiny(), torch.randn(1, 4, 16)
    torch.onnx.export(model.eval(), (x,), str(tmp_path / "tiny.onnx"), dynamo=True, verbose=False).save(str(tmp_path / "tiny.onnx"))
    onnx_names = name_layers(onnx.load(str(tmp_path / "tiny.onnx")))
    fx_names = list(layer_names(_program(model, x).module().graph).values())
    assert fx_names == ["conv_a", "conv_a#1", "conv_b", "head"]
    assert sorted(fx_names) == sorted(onnx_names)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_lower_runs_the_plan_layers_low_and_keeps_the_rest_fp32(precision):
    from rvc_compile.backends.program import DTYPES, layer_names, lower

    torch.manual_seed(0)
    model, x = Tiny(), torch.randn(1, 4, 16)
    with torch.no_grad():
        expected = model(x)
    module = _program(model, x).module()
    lowered = lower(module, ["conv_a", "conv_a#1", "head", "no_such_layer"], precision)
    assert lowered == ["conv_a", "conv_a#1", "head"]
    dtype = getattr(torch, DTYPES[precision])
    assert module.conv_a.weight.dtype == dtype and module.head.weight.dtype == dtype
    assert module.conv_b.weight.dtype == torch.float32  # the island: its weights, input and output stay fp32
    nodes = {name: node for node, name in layer_names(module.graph).items()}
    cast = torch.ops.aten._to_copy.default
    assert nodes["conv_a"].args[0].target == cast and nodes["conv_a"].args[0].kwargs == {"dtype": dtype}
    assert [user.target for user in nodes["conv_a#1"].users] == [cast]  # handed back in fp32 ...
    assert nodes["conv_b"].args[0].kwargs == {"dtype": torch.float32}  # ... which the island takes as it is
    with torch.no_grad():
        got = module(x)
    assert got.dtype == torch.float32
    error = float((got - expected).norm() / expected.norm())
    assert 0 < error < 2e-2, error  # rounded (so really lowered), and close


class Convs(torch.nn.Module):
    """Every argument a voice's 1-d convolutions use: stride, padding, dilation, groups, output padding."""

    def __init__(self):
        super().__init__()
        self.up = torch.nn.ConvTranspose1d(8, 4, 4, stride=2, padding=1, output_padding=0)
        self.dilated = torch.nn.Conv1d(4, 4, 3, padding=2, dilation=2, groups=2)
        self.down = torch.nn.Conv1d(4, 6, 5, stride=2, padding=2, bias=False)
        self.odd = torch.nn.ConvTranspose1d(6, 2, 3, stride=3, padding=1, output_padding=1, dilation=1)

    def forward(self, x):
        h = torch.nn.functional.leaky_relu(self.up(x), 0.1)
        h = self.dilated(h) + h
        return self.odd(self.down(h))


def test_channels_last_convolutions_are_exact_at_several_lengths():
    from rvc_compile.backends.program import channels_last

    torch.manual_seed(0)
    model = Convs().eval()
    frames = torch.export.Dim("frames", min=4, max=64)
    program = torch.export.export(model, (torch.randn(1, 8, 16),), dynamic_shapes=({2: frames},))
    module = program.module()
    assert channels_last(module) == 4
    assert not [node for node in module.graph.nodes if "conv1d" in str(node.target) or "conv_transpose1d" in str(node.target)]
    for length in (4, 17, 64):
        x = torch.randn(1, 8, length)
        with torch.no_grad():
            np.testing.assert_allclose(module(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_a_cpu_without_the_compiled_class_is_refused():
    from rvc_compile.backends.aoti import adapt_to_cpu
    from rvc_compile.machine import ISA_CLASSES

    section = {"device": "cpu", "codegen": {"isa_class": "avx512-bf16", "requires": ["avx2", "avx512", "bf16"]}}
    with pytest.raises(ArtifactError, match="compiled for avx512-bf16 CPUs and this avx2 CPU lacks avx512, bf16"):
        adapt_to_cpu(section, ISA_CLASSES["avx2"])
    assert adapt_to_cpu(section, ISA_CLASSES["amx"]) == (section, [])  # AMX is not in the generated code: oneDNN picks it at run time
    assert adapt_to_cpu({"device": "cuda"}, ISA_CLASSES["avx2"]) == ({"device": "cuda"}, [])


def test_code_is_generated_for_the_target_class_not_this_machine(monkeypatch):
    from rvc_compile.backends import aoti
    from rvc_compile import machine

    target = lambda cpu: types.SimpleNamespace(device="cpu", cpu=cpu)  # noqa: E731
    assert aoti.codegen(target("avx2")) == {"device": "cpu", "isa_class": "avx2", "march": "x86-64-v3", "simdlen": 256, "requires": ["avx2"]}
    for builder, simdlen in (("avx512-vnni", 512), ("amx", 256)):  # Inductor would add bf16 instructions to 512-bit code on a bf16 CPU
        monkeypatch.setattr(machine, "machine_isa", lambda builder=builder: machine.ISA_CLASSES[builder])
        assert aoti.codegen(target("avx512-vnni")) == {"device": "cpu", "isa_class": "avx512-vnni", "march": "x86-64-v4", "simdlen": simdlen,
                                                       "requires": ["avx2", "avx512"]}
    assert aoti.codegen(target("amx"))["requires"] == ["avx2", "avx512", "bf16"]


RECIPE = """
name: {name}
version: 1.0.0
source:
  checkpoint: {checkpoint}
target:
  backend: aoti
  device: cpu
  precision: {precision}
  cpu: avx2          # code for every AVX2 CPU, whatever this one has
  threads: 2
shapes:
  mode: dynamic
  min_frames: 8
  opt_frames: 60
  max_frames: 400
passes:
  - name: fold_weight_norm
  - name: fold_speaker
    speaker: 0
  - name: host_source
precision_policy:
  keep_fp32: [enc_p, flow, dec.conv_post]
accuracy:
  min_snr_db: 25.0
latency:
  seconds: [0.25]
  repeat: 1
  warmup: 0
golden:
  seconds: [0.3, 1.0]
  noise: seed:3
output_dir: {output}
"""


def write_aoti_recipe(directory: Path, checkpoint: Path, *, precision: str = "fp16", name: str = "voice-aoti") -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(RECIPE.format(name=name, checkpoint=checkpoint, precision=precision, output=directory / "artifacts"))
    return path


@pytest.mark.parametrize("overrides, match", [
    (["passes=[{name: host_source}, {name: simplify, tool: onnxslim}]"], "passes: simplify rewrite.*aoti backend does not compile"),
    (["passes=[{name: host_source}]", "source.bind_weights=true"], "source.bind_weights: .*aoti backend compiles each voice's own program"),
    (["target.precision=int8", "calibration.source=generated"], "target.precision: the aoti backend supports fp32, bf16, fp16, not 'int8'"),
])
def test_what_the_backend_cannot_honour_is_refused_before_any_work(tmp_path, checkpoint_factory, overrides, match):
    recipe = load_recipe(write_aoti_recipe(tmp_path, checkpoint_factory()), overrides)
    with pytest.raises(RecipeError, match=match):
        build(recipe, cache_dir=tmp_path / "cache", log=lambda message: None)
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "cache").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_recipe_error(tmp_path, checkpoint_factory):
    recipe = load_recipe(write_aoti_recipe(tmp_path, checkpoint_factory()), ["target.device=cuda"])
    with pytest.raises(RecipeError, match="target.device: cuda needs an NVIDIA GPU"):
        build(recipe, cache_dir=tmp_path / "cache", log=lambda message: None)


def test_tensorrt_is_refused_with_the_reason(tmp_path, checkpoint_factory):
    recipe = load_recipe(write_aoti_recipe(tmp_path, checkpoint_factory()), ["target.backend=tensorrt"])
    with pytest.raises(RecipeError, match="NVIDIA's own package index.*use the aoti backend"):
        build(recipe, cache_dir=tmp_path / "cache", log=lambda message: None)


@pytest.mark.slow
def test_fp16_build_on_cpu_verifies_and_loads_only_with_torch(tmp_path, checkpoint_factory):
    """fp16 runs on every CPU (slowly): the lowering and its islands, checked at every length by the
    build, then verified and loaded as a user would; without torch the runtime still imports."""
    recipe = load_recipe(write_aoti_recipe(tmp_path, checkpoint_factory()))
    artifact = build(recipe, cache_dir=tmp_path / "cache", log=lambda message: None).path
    manifest = json.loads((artifact / "manifest.json").read_text())
    section = manifest["backend"]
    assert section["name"] == "aoti" and (artifact / section["files"]["model"]).is_file()
    assert section["requires"] == {"torch": torch.__version__.split("+")[0]}
    assert section["codegen"] == {"device": "cpu", "isa_class": "avx2", "march": "x86-64-v3", "simdlen": 256, "requires": ["avx2"]}
    assert section["conv_layout"] == "channels_last_2d"
    plan = manifest["precision"]
    assert section["lowered"] == {"dtype": "float16", "layers": plan["low_precision_layers"], "not_found": []}
    assert plan["low_precision_layers"] > 0 and any(name.startswith("dec.conv_post") for name in plan["keep_fp32"])
    report = json.loads((artifact / "report.json").read_text())
    backend_checks = [check for check in report["multi_length_checks"] if check["stage"].startswith("backend aoti fp16")]
    assert len(backend_checks) == 3 and all(check["passed"] for check in backend_checks)

    verified = run_cli("verify", artifact, "--json", "--skip-latency")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    import rvc_compile.runtime

    voice = rvc_compile.runtime.load(artifact)
    case = np.load(artifact / "golden" / "golden-0.3s.npz")
    audio = voice.infer(case["features"][0], case["f0"][0], noise="zero")
    assert audio.dtype == np.float32 and np.isfinite(audio).all() and audio.size == case["features"].shape[1] * voice.spec.hop_length

    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None   # no torch installed
        import rvc_compile.runtime
        try:
            rvc_compile.runtime.load({str(artifact)!r})
        except rvc_compile.errors.ArtifactError as exc:
            print(exc)
    """)
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert process.returncode == 0, process.stderr
    assert "compiled with AOTInductor and its runtime needs torch" in process.stdout


@pytest.mark.slow
def test_gpu_check_runs_its_whole_path_on_a_cpu(tmp_path):
    """benchmarks/gpu_check.sh is run on GPU machines only; its path (capture, aoti build with the GPU
    recipe's islands, verification, interleaved timing, JSON) runs here on a CPU with a small voice."""
    out = tmp_path / "gpu_check.json"
    process = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--size", "small", "--seconds", "0.5",
         "--precisions", "fp16", "--repeat", "2", "--out", str(out)],
        capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable},
    )
    assert process.returncode == 0, process.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["islands"] == ["enc_p", "flow", "dec.noise_convs", "dec.conv_post"]
    assert set(result["packages"]) == {"aoti-fp16", "aoti-fp16-static25"}
    cases = {(row["seconds"], row["block"]): row for row in result["cases"]}
    assert set(cases) == {(0.5, False), (0.25, True)}
    for row in cases.values():
        assert all(ms > 0 for ms in row["ms"].values()) and "eager-fp16" in row["ms"]
        assert all(snr > 30 for label, snr in row["snr_db"].items() if label.startswith("aoti")), row["snr_db"]
    assert set(result["target"]) == {"what", "best_speedup", "met"}


@pytest.mark.slow
def test_real_time_block_recipe_builds_static_and_verifies(tmp_path, checkpoint_factory):
    """recipes/stream/cpu-bf16-aoti-block.yaml's static block shape (the shape CUDA graphs replay on a
    GPU), in fp16 for any AVX2 CPU: built, checked and verified."""
    recipe = load_recipe(ROOT / "recipes" / "stream" / "cpu-bf16-aoti-block.yaml", [
        f"source.checkpoint={checkpoint_factory()}", "target.precision=fp16", "target.cpu=avx2", f"output_dir={tmp_path / 'artifacts'}",
        "latency.repeat=1", "latency.warmup=0",
    ])
    artifact = build(recipe, cache_dir=tmp_path / "cache", log=lambda message: None).path
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["model"]["frames"]["static"] and manifest["backend"]["cuda_graphs"] is False  # CUDA graphs are for device cuda
    verified = run_cli("verify", artifact, "--json", "--skip-latency")
    assert verified.returncode == 0, verified.stdout + verified.stderr
