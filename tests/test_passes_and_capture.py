"""Each pass and the capture stage on their own, against the fp32 PyTorch reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rvc_compile.backends.onnxruntime import Runner, session_options
from rvc_compile.capture.export import export_onnx, graph_inputs
from rvc_compile.verify.parity import multi_length_check
from rvc_compile.components.synthesizer.checkpoint import load_checkpoint
from rvc_compile.errors import BuildError, RecipeError
from rvc_compile.components.synthesizer.model import build_model, input_names
from rvc_compile.passes import PASSES, GraphState
from rvc_compile.components.synthesizer.synthetic import make_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return load_checkpoint(make_checkpoint(tmp_path_factory.mktemp("ck") / "m.pth", size="small", seed=5))


@pytest.fixture(scope="module")
def nono_checkpoint(tmp_path_factory):
    return load_checkpoint(make_checkpoint(tmp_path_factory.mktemp("ck") / "n.pth", size="small", f0=False, version="v1", sample_rate="48k", seed=6))


def reference_runner(checkpoint, speaker=0):
    model = build_model(checkpoint.spec, checkpoint.state_dict)

    def run(inputs):
        arrays = dict(inputs)
        arrays.setdefault("speaker", np.array([speaker], dtype=np.int64))
        with torch.inference_mode():
            return model(*[torch.from_numpy(arrays[n]) for n in input_names(checkpoint.spec)]).numpy()

    return run


def ort(path):
    return Runner(path, session_options(2, "all")).run


def state_for(checkpoint):
    return GraphState(spec=checkpoint.spec, model=build_model(checkpoint.spec, checkpoint.state_dict), input_names=input_names(checkpoint.spec))


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("which", ["f0", "nono"])
def test_captured_graph_matches_reference_at_lengths_it_was_not_traced_at(exporter, which, checkpoint, nono_checkpoint, tmp_path):
    ck = checkpoint if which == "f0" else nono_checkpoint
    state = state_for(ck)
    path = export_onnx(state.model, ck.spec, state.input_names, tmp_path / "g.onnx", exporter=exporter, min_frames=4, max_frames=500)
    results = multi_length_check("capture", ort(path), reference_runner(ck), ck.spec, state.input_names, [4, 17, 64, 499])
    assert [r["frames"] for r in results] == [4, 17, 64, 499]
    assert all(r["passed"] and r["relative_l2_error"] < 1e-4 for r in results)


def test_static_capture_has_fixed_shapes(checkpoint, tmp_path):
    import onnx

    state = state_for(checkpoint)
    path = export_onnx(state.model, checkpoint.spec, state.input_names, tmp_path / "s.onnx", exporter="dynamo", static_frames=25)
    graph = onnx.load(str(path)).graph
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 25, 768]
    multi_length_check("static", ort(path), reference_runner(checkpoint), checkpoint.spec, state.input_names, [25])


def test_multi_length_check_catches_a_graph_that_baked_in_its_length(checkpoint):
    """The classic broken export: correct at the traced length only."""
    reference = reference_runner(checkpoint)
    traced_frames = 20

    def baked(inputs):
        frames = inputs["features"].shape[1]
        if frames != traced_frames:
            raise RuntimeError(f"Reshape: cannot reshape {frames} frames into the traced {traced_frames}")
        return reference(inputs)

    names = input_names(checkpoint.spec)
    multi_length_check("capture", baked, reference, checkpoint.spec, names, [20])
    with pytest.raises(BuildError, match="fails at 21 frames"):
        multi_length_check("capture", baked, reference, checkpoint.spec, names, [20, 21])


def test_multi_length_check_catches_wrong_values_and_wrong_lengths(checkpoint):
    reference = reference_runner(checkpoint)
    names = input_names(checkpoint.spec)
    with pytest.raises(BuildError, match="relative L2 error"):
        multi_length_check("x", lambda i: reference(i) * 1.01, reference, checkpoint.spec, names, [10])
    with pytest.raises(BuildError, match="samples at 10 frames"):
        multi_length_check("x", lambda i: reference(i)[:, :-1], reference, checkpoint.spec, names, [10])


def test_fold_weight_norm_refuses_leftover_training_parameters(checkpoint, tmp_path):
    state = state_for(checkpoint)
    out = PASSES["fold_weight_norm"](PASSES["fold_weight_norm"].Params()).run(state, tmp_path)
    assert out.notes
    state = state_for(checkpoint)
    conv = torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv1d(2, 2, 1))
    state.model.add_module("extra", conv)
    with pytest.raises(BuildError, match="weight-norm"):
        PASSES["fold_weight_norm"](PASSES["fold_weight_norm"].Params()).run(state, tmp_path)


def test_fold_speaker_removes_the_input_and_keeps_that_speakers_output(checkpoint, tmp_path):
    spec = checkpoint.spec
    state = PASSES["fold_speaker"](PASSES["fold_speaker"].Params(speaker=2)).run(state_for(checkpoint), tmp_path)
    assert "speaker" not in state.input_names and state.fixed_inputs == {"speaker": 2}
    inputs = graph_inputs(spec, state.input_names, 30, seed=1)
    with torch.inference_mode():
        folded = state.model(*[torch.from_numpy(inputs[n]) for n in state.input_names]).numpy()
    np.testing.assert_allclose(folded, reference_runner(checkpoint, speaker=2)(inputs), rtol=0, atol=1e-6)
    assert np.abs(folded - reference_runner(checkpoint, speaker=1)(inputs)).max() > 1e-4
    path = export_onnx(state.model, spec, state.input_names, tmp_path / "f.onnx", exporter="torchscript", min_frames=4, max_frames=200)
    import onnx

    assert [i.name for i in onnx.load(str(path)).graph.input] == state.input_names


def test_fold_speaker_rejects_a_speaker_the_model_does_not_have(checkpoint, tmp_path):
    with pytest.raises(RecipeError, match="out of range"):
        PASSES["fold_speaker"](PASSES["fold_speaker"].Params(speaker=99)).run(state_for(checkpoint), tmp_path)


def test_simplify_shrinks_the_graph_and_keeps_its_output(checkpoint, tmp_path):
    import onnx

    state = state_for(checkpoint)
    state.onnx_path = export_onnx(state.model, checkpoint.spec, state.input_names, tmp_path / "t.onnx", exporter="torchscript", min_frames=4, max_frames=300)
    before = len(onnx.load(str(state.onnx_path)).graph.node)
    state = PASSES["simplify"](PASSES["simplify"].Params(tool="onnxslim")).run(state, tmp_path)
    after = len(onnx.load(str(state.onnx_path)).graph.node)
    assert after < before
    multi_length_check("simplify", ort(state.onnx_path), reference_runner(checkpoint), checkpoint.spec, state.input_names, [4, 50, 300])


def test_simplify_with_a_missing_tool_is_a_clear_error(checkpoint, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_onnxsim(name, *args, **kwargs):
        if name == "onnxsim":
            raise ImportError("no onnxsim")
        return real_import(name, *args, **kwargs)

    state = state_for(checkpoint)
    state.onnx_path = export_onnx(state.model, checkpoint.spec, state.input_names, tmp_path / "t.onnx", exporter="torchscript", min_frames=4, max_frames=100)
    monkeypatch.setattr(builtins, "__import__", no_onnxsim)
    with pytest.raises(BuildError, match="onnxsim is not installed"):
        PASSES["simplify"](PASSES["simplify"].Params(tool="onnxsim")).run(state, tmp_path)


def run_pass(name, state, tmp_path, **params):
    return PASSES[name](PASSES[name].Params(**params)).run(state, tmp_path)


def test_host_excitation_in_numpy_equals_the_graphs_float64_source():
    from rvc_compile.components.synthesizer.examples import example_f0
    from rvc_compile.components.synthesizer.model.source import sine_excitation as torch_excitation
    from rvc_compile.components.synthesizer.nsf import sine_excitation

    rng = np.random.default_rng(0)
    for frames, hop, rate in [(1, 400, 40000), (57, 480, 48000), (3000, 320, 32000)]:
        f0 = example_f0(frames, seed=frames)
        noise = rng.standard_normal(frames * hop).astype(np.float32)
        host = sine_excitation(f0, noise, hop_length=hop, sample_rate=rate)
        graph = torch_excitation(torch.from_numpy(f0)[None], hop, rate, torch.from_numpy(noise)[None])[0, :, 0].numpy()
        assert host.dtype == np.float32 and host.shape == (frames * hop,)
        np.testing.assert_allclose(host, graph, rtol=0, atol=1e-7)


def test_host_source_replaces_source_noise_and_keeps_the_output(checkpoint, tmp_path):
    state = run_pass("host_source", state_for(checkpoint), tmp_path)
    assert state.input_names == ["features", "f0", "speaker", "prior_noise", "excitation"]
    path = export_onnx(state.model, checkpoint.spec, state.input_names, tmp_path / "h.onnx", exporter="dynamo", min_frames=4, max_frames=400)
    import onnx

    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == state.input_names
    assert not any(node.op_type in ("CumSum", "Sin") for node in graph.node), "the sine source must not be in the graph"
    results = multi_length_check("host_source", ort(path), reference_runner(checkpoint), checkpoint.spec, state.input_names, [4, 33, 399])
    assert all(r["relative_l2_error"] < 1e-5 for r in results)


def test_host_source_is_a_no_op_without_pitch(nono_checkpoint, tmp_path):
    state = run_pass("host_source", state_for(nono_checkpoint), tmp_path)
    assert state.input_names == input_names(nono_checkpoint.spec) and "no NSF source" in state.notes[-1]


@pytest.mark.parametrize("version, rate", [("v1", "32k"), ("v1", "40k"), ("v1", "48k"), ("v2", "32k"), ("v2", "40k"), ("v2", "48k")])
def test_polyphase_rewrite_is_exact_for_every_official_upsampler(version, rate):
    from rvc_compile.components.synthesizer.model.polyphase import PolyphaseUpsample
    from rvc_compile.components.synthesizer.spec import official_config

    config = official_config(version, rate)
    torch.manual_seed(0)
    for stride, kernel in zip(config[12], config[14]):
        transposed = torch.nn.ConvTranspose1d(6, 4, kernel, stride, padding=(kernel - stride) // 2)
        rewritten = PolyphaseUpsample(transposed)
        assert sum(c.weight.numel() for c in rewritten.convs) == transposed.weight.numel(), "no zero taps stored"
        for frames in (1, 2, 19):
            x = torch.randn(1, 6, frames)
            with torch.no_grad():
                torch.testing.assert_close(rewritten(x), transposed(x), rtol=0, atol=1e-5)


def test_polyphase_refuses_an_upsampler_whose_length_is_not_t_times_stride():
    from rvc_compile.components.synthesizer.model.polyphase import PolyphaseUpsample

    with pytest.raises(ValueError, match="not T \\* stride"):
        PolyphaseUpsample(torch.nn.ConvTranspose1d(4, 4, 5, 2, padding=1))


def test_polyphase_pass_removes_transposed_convolutions_from_the_graph(checkpoint, tmp_path):
    import onnx

    state = run_pass("polyphase_upsample", state_for(checkpoint), tmp_path)
    assert "dec.ups.0" in state.notes[-1]
    assert not any(isinstance(m, torch.nn.ConvTranspose1d) for m in state.model.modules())
    path = export_onnx(state.model, checkpoint.spec, state.input_names, tmp_path / "p.onnx", exporter="dynamo", min_frames=4, max_frames=300)
    assert not any(node.op_type == "ConvTranspose" for node in onnx.load(str(path)).graph.node)
    multi_length_check("polyphase_upsample", ort(path), reference_runner(checkpoint), checkpoint.spec, state.input_names, [4, 41, 300])
    again = run_pass("polyphase_upsample", state, tmp_path)  # idempotent
    assert "nothing" in again.notes[-1]
