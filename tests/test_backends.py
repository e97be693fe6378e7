"""The backend protocol (``backends/base.py``): every registered backend implements it, a module that does
not is refused by name, and the optional hooks (profile, peak kernel) work on a graph of two ops.

Also the FLOP counters of ``measure.flops`` on that graph and on a two-layer torch model, where the
count is known by hand.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from rvc_compile import backends
from rvc_compile.backends import base, get_backend, has_hook

CHANNELS, KERNEL, LENGTH, WIDTH = 4, 3, 10, 5  # x [1, 4, 10] -> Conv(4->4, k3, pad 1) -> MatMul [10, 5]


def _protocol_parameters(protocol: type, name: str) -> list[tuple[str, object]]:
    """(kind, name) of a protocol method's parameters after ``self``; positional ones by kind only."""
    parameters = list(inspect.signature(getattr(protocol, name)).parameters.values())[1:]
    return [(p.kind, p.name if p.kind is p.KEYWORD_ONLY else None) for p in parameters]


def _module_parameters(function: object) -> list[tuple[str, object]]:
    parameters = inspect.signature(function).parameters.values()
    return [(p.kind, p.name if p.kind is p.KEYWORD_ONLY else None) for p in parameters]


@pytest.mark.parametrize("name", list(backends.BACKENDS))
def test_every_registered_backend_implements_the_protocol(name):
    module = get_backend(name)
    assert module.NAME == name and base.problems(module) == []
    assert module.LIBRARIES and all(isinstance(library, str) for library in module.LIBRARIES)
    for function in base.FUNCTIONS:
        expected = _protocol_parameters(base.Backend, function)
        if function == "build" and getattr(module, "PROGRAM", False):  # it also takes the captured torch program
            expected += [(inspect.Parameter.KEYWORD_ONLY, keyword) for keyword in base.PROGRAM_BUILD_KEYWORDS]
        assert _module_parameters(getattr(module, function)) == expected, function
    for hook, protocol in (("profile", base.Profiler), ("peak_kernel", base.PeakKernels)):
        if has_hook(module, hook):
            assert _module_parameters(getattr(module, hook)) == _protocol_parameters(protocol, hook), hook
    if has_hook(module, "peak_kernel"):
        assert set(module.PEAK_KERNELS) <= {"fp32", "bf16", "int8"}


def test_backend_libraries_key_the_cache_by_what_each_stage_imports():
    assert get_backend("onnxruntime").LIBRARIES == ("onnx", "onnxruntime", "onnxconverter-common", "numpy")
    assert get_backend("openvino").LIBRARIES == ("onnx", "openvino", "nncf", "numpy")
    assert get_backend("aoti").LIBRARIES == ("torch", "numpy")


def _fake_backend(monkeypatch, **attributes) -> str:
    module = types.ModuleType("rvc_fake_backend")
    for key, value in attributes.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, "rvc_fake_backend", module)
    monkeypatch.setitem(backends.BACKENDS, attributes.get("NAME", "fake"), "rvc_fake_backend")
    return attributes.get("NAME", "fake")


def _complete(**overrides):
    def function(*args, **kwargs):
        return None

    attributes = {"NAME": "fake", "PRECISIONS": ("fp32",), "DEVICES": ("cpu",), "ISA_EMULATION": False, "LIBRARIES": ("numpy",), "COMPILE_CACHE": False}
    attributes.update({name: function for name in base.FUNCTIONS})
    attributes.update(overrides)
    return attributes


def test_a_module_missing_part_of_the_protocol_is_refused_by_name(monkeypatch):
    attributes = _complete()
    del attributes["load"], attributes["LIBRARIES"]
    name = _fake_backend(monkeypatch, **attributes)
    with pytest.raises(TypeError, match=r"rvc_fake_backend does not implement .*no LIBRARIES; no function load\(\)"):
        get_backend(name)


def test_mistyped_constants_half_hooks_and_a_wrong_name_are_refused(monkeypatch):
    name = _fake_backend(monkeypatch, **_complete(PRECISIONS=["fp32"], peak_kernel=lambda size, threads, precision: None))
    with pytest.raises(TypeError, match=r"PRECISIONS is not a tuple; hook peak_kernel needs peak_kernel, PEAK_KERNELS"):
        get_backend(name)
    monkeypatch.setitem(backends.BACKENDS, "other", "rvc_fake_backend")
    monkeypatch.setattr(sys.modules["rvc_fake_backend"], "PRECISIONS", ("fp32",))
    monkeypatch.delattr(sys.modules["rvc_fake_backend"], "peak_kernel")
    with pytest.raises(TypeError, match="registered as 'other' but its NAME is 'fake'"):
        get_backend("other")


def test_a_conforming_module_without_hooks_loads_and_has_none(monkeypatch):
    module = get_backend(_fake_backend(monkeypatch, **_complete()))
    assert not has_hook(module, "profile") and not has_hook(module, "peak_kernel")
    with pytest.raises(ValueError, match="unknown backend hook"):
        has_hook(module, "compile")


def test_the_backends_stay_light():
    code = ("import sys; from rvc_compile import backends; [backends.get_backend(n) for n in backends.BACKENDS]; "
            "import rvc_compile.measure.floor, rvc_compile.measure.flops; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'onnx', 'onnxruntime', 'openvino', 'nncf'}))")
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip() == "[]"


# -- hooks on a graph of two ops -------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_op_graph(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray], np.ndarray]:
    """An "artifact" folder with model.onnx (Conv then MatMul), a feed and the output numpy computes."""
    from onnx import TensorProto, helper, numpy_helper, save

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((CHANNELS, CHANNELS, KERNEL)).astype(np.float32)
    matrix = rng.standard_normal((LENGTH, WIDTH)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "conv.weight"], ["h"], name="conv", pads=[1, 1]),
         helper.make_node("MatMul", ["h", "proj.weight"], ["y"], name="proj")],
        "two-ops",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, CHANNELS, LENGTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, CHANNELS, WIDTH])],
        [numpy_helper.from_array(weight, "conv.weight"), numpy_helper.from_array(matrix, "proj.weight")],
    )
    folder = tmp_path_factory.mktemp("two-op-artifact")
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(folder / "model.onnx"))
    x = rng.standard_normal((1, CHANNELS, LENGTH)).astype(np.float32)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1)))
    conv = np.stack([sum(weight[:, :, k] @ padded[0, :, k:k + LENGTH] for k in range(KERNEL))])
    return folder, {"x": x}, conv @ matrix


def _sections() -> dict[str, dict]:
    from rvc_compile.backends.onnxruntime import session_options
    from rvc_compile.backends.openvino import compile_options

    return {
        "onnxruntime": {"name": "onnxruntime", "files": {"model": "model.onnx"}, "session_options": session_options(1, "all")},
        "openvino": {"name": "openvino", "files": {"model": "model.onnx"}, "compile_options": compile_options("fp32", 1)},
    }


ONNX_BACKENDS = [name for name in backends.BACKENDS if not getattr(get_backend(name), "PROGRAM", False)]


@pytest.mark.parametrize("name", ONNX_BACKENDS)
def test_load_and_profile_hook_on_a_small_graph(name, two_op_graph):
    folder, feed, expected = two_op_graph
    module, section = get_backend(name), _sections()[name]
    runner = module.load(folder, section, threads=1)
    assert runner.input_names == ["x"]
    np.testing.assert_allclose(runner.run(feed), expected, rtol=1e-4, atol=1e-4)
    assert has_hook(module, "profile")
    measured = module.profile(folder, section, feed, threads=1, repeat=2)
    assert isinstance(measured, base.NodeProfile) and measured.total_s > 0 and measured.method
    assert measured.nodes and all(node.seconds >= 0 and node.names and node.op_type for node in measured.nodes)
    # Every timed node stands for one of our two ops (possibly fused or under a generated name with them listed).
    assert any(name in ("conv", "proj") for node in measured.nodes for name in node.names), measured.nodes


@pytest.mark.parametrize("name", ONNX_BACKENDS)  # aoti's convolutions are torch's: the floor times torch.matmul for it
def test_peak_kernel_hook_runs_a_small_product(name):
    module = get_backend(name)
    assert has_hook(module, "peak_kernel")
    for precision in module.PEAK_KERNELS:
        try:
            run = module.peak_kernel(32, 1, precision)
        except Exception as exc:  # a kernel this CPU lacks (bf16) is the floor's recorded error, not a failure here
            assert precision == "bf16", f"{name} {precision}: {exc}"
            continue
        run()
    with pytest.raises(ValueError, match="no peak kernel"):
        module.peak_kernel(32, 1, "fp64")


def test_floor_asks_every_backend_for_its_kernels():
    from rvc_compile.measure.floor import implementations

    names = {precision: [name for name, _ in implementations(precision)] for precision in ("fp32", "bf16", "int8")}
    assert names["fp32"] == ["torch.matmul fp32", "openvino MatMul f32"]
    assert names["bf16"] == ["torch.matmul bf16", "openvino MatMul bf16"]
    assert names["int8"] == ["torch._int_mm s8s8", "onnxruntime MatMulInteger u8s8", "openvino FakeQuantize+MatMul u8s8"]


def test_reference_runner_runs_a_plain_graph(two_op_graph):
    from rvc_compile.backends.onnxruntime import reference_runner

    folder, feed, expected = two_op_graph
    np.testing.assert_allclose(reference_runner(folder / "model.onnx", 1)(feed), expected, rtol=1e-4, atol=1e-4)


# -- the FLOP counters -----------------------------------------------------------------------------

def test_graph_flops_count_each_op_from_its_shapes(two_op_graph):
    from rvc_compile.measure.flops import graph_flops

    folder, _, _ = two_op_graph
    conv = 2 * CHANNELS * LENGTH * CHANNELS * KERNEL  # 2 x outputs x (Cin x K)
    matmul = 2 * CHANNELS * WIDTH * LENGTH  # 2 x outputs x inner
    assert graph_flops(folder / "model.onnx", {"x": [1, CHANNELS, LENGTH]}) == conv + matmul
    assert graph_flops(folder / "model.onnx", {"x": [1, CHANNELS, LENGTH], "unused": [3]}) == conv + matmul


def test_torch_flops_count_per_module_and_layer_flops_agree():
    import torch

    from rvc_compile.measure.flops import leaf_modules, torch_flops
    from rvc_compile.precision.sensitivity import layer_flops

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(CHANNELS, CHANNELS, KERNEL, padding=1)
            self.block = torch.nn.Sequential(torch.nn.Linear(LENGTH, WIDTH))

        def forward(self, x):
            h = self.conv(x)
            return self.block(h) @ torch.ones(WIDTH, 2)  # a product outside any submodule

    conv, linear, product = 2 * CHANNELS * LENGTH * CHANNELS * KERNEL, 2 * CHANNELS * WIDTH * LENGTH, 2 * CHANNELS * 2 * WIDTH
    model = Net().eval()
    total, by_module = torch_flops(model, [torch.zeros(1, CHANNELS, LENGTH)])
    assert total == conv + linear + product
    assert by_module == {"conv": conv, "block": linear, "block.0": linear}
    assert leaf_modules(by_module) == {"conv": conv, "block.0": linear}
    feed = {"x": np.zeros((1, CHANNELS, LENGTH), np.float32)}
    assert layer_flops(model, ["x"], feed, seconds=0.5) == {"conv": conv / 0.5, "block.0": linear / 0.5}
