"""``source.bind_weights``: one compiled architecture, each voice's weights bound into it (build.binding)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rvc_compile.build.binding import bind_constants, binding_map
from rvc_compile.errors import BuildError, RecipeError
from rvc_compile.recipe.schema import load_recipe

from conftest import write_tiny_recipe


def _graph(weights: dict[str, np.ndarray], constant: np.ndarray) -> onnx.ModelProto:
    """x @ W1 (W1 stored transposed, as exporters store a Linear) + b + c, with c an architecture constant."""
    nodes = [
        helper.make_node("MatMul", ["x", "w1t"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["y0"]),
        helper.make_node("Add", ["y0", "c"], ["y"]),
    ]
    initializers = [numpy_helper.from_array(np.ascontiguousarray(weights["lin.weight"].T), "w1t"),
                    numpy_helper.from_array(weights["lin.bias"], "b"), numpy_helper.from_array(constant, "c")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], initializers)
    return helper.make_model(graph)


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"lin.weight": rng.standard_normal((3, 4)).astype(np.float32), "lin.bias": rng.standard_normal(3).astype(np.float32)}


def test_binding_map_finds_each_weight_stored_as_is_or_transposed_and_binds_a_third_voice_exactly():
    constant = np.arange(3, dtype=np.float32)
    probes = (_weights(1), _weights(2))
    mapping = binding_map((_graph(probes[0], constant), _graph(probes[1], constant)), probes)
    assert mapping == {"initializer:w1t": {"tensor": "lin.weight", "perm": [1, 0]}, "initializer:b": {"tensor": "lin.bias", "perm": [0]}}

    voice = _weights(3)
    model = _graph(probes[0], constant)
    bind_constants(model, mapping, voice, where="voice.pth")
    assert onnx.printer.to_text(model.graph) == onnx.printer.to_text(_graph(voice, constant).graph)
    bound = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    np.testing.assert_array_equal(bound["w1t"], voice["lin.weight"].T)
    np.testing.assert_array_equal(bound["b"], voice["lin.bias"])
    np.testing.assert_array_equal(bound["c"], constant)  # the architecture's own constant is kept

    with pytest.raises(BuildError, match=r"voice.pth: weight lin.bias has shape \(5,\)"):
        bind_constants(_graph(probes[0], constant), mapping, {**voice, "lin.bias": np.zeros(5, np.float32)}, where="voice.pth")
    with pytest.raises(BuildError, match="voice.pth: has no weight lin.weight"):
        bind_constants(_graph(probes[0], constant), mapping, {"lin.bias": voice["lin.bias"]}, where="voice.pth")


def test_binding_map_refuses_a_constant_folded_from_several_weights_and_graphs_that_differ_in_structure():
    probes = (_weights(1), _weights(2))
    folded = [p["lin.bias"] * 2 + 1 for p in probes]  # what fold_speaker's constant folding makes: no one weight
    with pytest.raises(BuildError, match=r"source.bind_weights: the graph holds 1 constant\(s\) computed from several weights .*\(c\)"):
        binding_map((_graph(probes[0], folded[0]), _graph(probes[1], folded[1])), probes)
    other = _graph(probes[1], np.arange(3, dtype=np.float32))
    other.graph.node[2].op_type = "Sub"
    with pytest.raises(BuildError, match="different structure"):
        binding_map((_graph(probes[0], np.arange(3, dtype=np.float32)), other), probes)


def test_bind_weights_with_fold_speaker_is_refused_at_the_recipe(tmp_path, checkpoint_factory):
    recipe = write_tiny_recipe(tmp_path, checkpoint_factory())
    with pytest.raises(RecipeError, match="source.bind_weights.*fold_speaker"):
        load_recipe(recipe, ["source.bind_weights=true", "passes=[{name: fold_speaker}]"])


def test_a_bound_voice_equals_its_full_build_and_reuses_the_architecture_and_its_latency(tmp_path, checkpoint_factory):
    """Two voices of one architecture: the first compiles it (two probe captures, the binding map, the
    latency), the second only binds; its graph computes what the voice's own full build computes."""
    from rvc_compile.build.pipeline import build
    from rvc_compile.verify.gates import verify_artifact

    recipe = write_tiny_recipe(tmp_path, checkpoint_factory(seed=0), name="voice-a")
    passes = "passes=[{name: fold_weight_norm}, {name: host_source}]"
    bind = ["source.bind_weights=true", passes]
    cache = tmp_path / "cache"
    first = build(load_recipe(recipe, bind), cache_dir=cache, log=lambda message: None)
    voice_b = checkpoint_factory(seed=5)
    logs: list[str] = []
    second = build(load_recipe(recipe, [*bind, f"source.checkpoint={voice_b}", "name=voice-b"]), cache_dir=cache, log=logs.append)
    stages = {record["stage"]: record["hit"] for record in second.cache}
    assert stages["capture"] and stages["architecture"] and stages["architecture-latency"], second.cache
    assert not stages["bind"] and not stages["backend:onnxruntime"], second.cache
    assert second.report["latency"]["measured_on"]["voice"] == "voice-a"
    assert verify_artifact(second.path, skip_latency=True)["passed"]
    assert second.report["accuracy"]["passed"] and first.report["accuracy"]["passed"]

    full = build(load_recipe(recipe, [passes, f"source.checkpoint={voice_b}", "name=voice-b-full"]), cache_dir=cache, log=lambda message: None)
    from rvc_compile.artifact.golden import load_case
    from rvc_compile.artifact.manifest import read_manifest
    from rvc_compile.build.steps import _candidate_output

    case = load_case(full.path / "golden" / "golden-0.1s.npz")
    outputs = [_candidate_output(artifact, read_manifest(artifact), case) for artifact in (second.path, full.path)]
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=0, atol=1e-5)
    assert np.abs(outputs[0]).max() > 1e-3  # audio, not silence
