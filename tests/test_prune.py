"""Structured pruning: channel surgery, the pruned checkpoint format, the prune pass, distillation, the CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rvc_compile.backends.onnxruntime import Runner, session_options
from rvc_compile.capture.export import export_onnx
from rvc_compile.verify.parity import multi_length_check
from rvc_compile.components.synthesizer.checkpoint import PRUNED_FORMAT, load_checkpoint, save_pruned_checkpoint
from rvc_compile.compress.distill import DistillConfig, HeldOut, SpectralLosses, distill
from rvc_compile.errors import CheckpointError, RecipeError
from rvc_compile.components.synthesizer.examples import example_case
from rvc_compile.verify.metrics import log_mel_distance_db, mrstft_distance
from rvc_compile.components.synthesizer.model import build_model, expected_shapes, input_names
from rvc_compile.passes import PASSES, GraphState
from rvc_compile.compress.prune import _members, kept_width, prune_model
from rvc_compile.compress.prune_recipe import load_prune_recipe, prune_recipe_json_schema
from rvc_compile.components.synthesizer.spec import prunable_widths, with_channels
from rvc_compile.components.synthesizer.synthetic import make_checkpoint

from conftest import assert_user_error, run_cli

ALL_GROUPS = {"decoder": 0.5, "encoder": 0.5, "flow": 0.5}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine: a second OpenMP thread only adds synchronisation stalls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return load_checkpoint(make_checkpoint(tmp_path_factory.mktemp("ck") / "small.pth", size="small", seed=11))


def _inputs(spec, frames, seed=0, speaker=0):
    case = example_case(spec.feature_dim, frames, seed)
    generator = torch.Generator().manual_seed(seed)
    inputs = [torch.from_numpy(case["features"])[None]]
    if spec.f0:
        inputs.append(torch.from_numpy(case["f0"])[None])
    inputs += [torch.tensor([speaker]), torch.randn((1, spec.inter_channels, frames), generator=generator)]
    if spec.f0:
        inputs.append(torch.randn((1, frames * spec.hop_length), generator=generator))
    return inputs


def _run(spec, state_dict, inputs):
    with torch.inference_mode():
        return build_model(spec, state_dict)(*inputs)[0].numpy()


# -- the channel map and the surgery ---------------------------------------------------------------

@pytest.mark.parametrize("version,sample_rate,f0", [("v2", "40k", True), ("v1", "48k", False)])
def test_prunable_widths_name_real_layers_at_their_config_width(version, sample_rate, f0, checkpoint_factory):
    spec = load_checkpoint(checkpoint_factory(version, sample_rate, f0)).spec
    modules = dict(build_model(spec).named_modules())
    widths = prunable_widths(spec)
    assert sum(k.startswith("dec.") for k in widths) == len(spec.upsample_rates) * len(spec.resblock_kernel_sizes) * 3
    for key, width in widths.items():
        gated = 2 if ".in_layers." in key else 1  # a WaveNet layer gives tanh and sigmoid halves
        assert modules[key].out_channels == gated * width, key


def test_surgery_gives_the_narrower_shapes_the_spec_implies(small):
    result = prune_model(small.spec, small.state_dict, ratios=ALL_GROUPS, round_to=1, measure=False)
    spec, state = result.spec, result.state_dict
    assert {k: tuple(v.shape) for k, v in state.items()} == expected_shapes(spec)
    for key, width in prunable_widths(small.spec).items():
        assert spec.width(key) == kept_width(width, 0.5) == width // 2
    # One of each kind: a decoder conv pair, an encoder FFN, a flow WaveNet layer and its share of the cond conv.
    assert state["dec.resblocks.0.convs1.2.weight"].shape == (16, 32, 3)
    assert state["dec.resblocks.0.convs2.2.weight"].shape == (32, 16, 3)
    assert state["enc_p.encoder.ffn_layers.1.conv_1.weight"].shape == (32, 32, 3)
    assert state["enc_p.encoder.ffn_layers.1.conv_2.weight"].shape == (32, 32, 3)
    assert state["flow.flows.2.enc.in_layers.1.weight"].shape == (32, 32, 5)
    assert state["flow.flows.2.enc.res_skip_layers.1.weight"].shape == (64, 16, 1)
    assert state["flow.flows.2.enc.cond_layer.weight"].shape == (2 * 3 * 16, 16, 1)
    # Everything outside the blocks keeps its shape: the residual streams are not pruned.
    for key in ("dec.ups.1.weight", "dec.conv_post.weight", "flow.flows.0.pre.weight", "enc_p.proj.weight"):
        assert state[key].shape == small.state_dict[key].shape
    assert build_model(spec, state)(*_inputs(spec, 20)).shape == (1, 20 * spec.hop_length)


def test_nothing_pruned_gives_the_identical_model(small):
    result = prune_model(small.spec, small.state_dict, ratios={"decoder": 0.0, "encoder": 0.0, "flow": 0.0}, measure=False)
    assert result.spec == small.spec and result.spec.channels == ()
    assert all(torch.equal(result.state_dict[k], v) for k, v in small.state_dict.items())
    inputs = _inputs(small.spec, 37)
    np.testing.assert_array_equal(_run(result.spec, result.state_dict, inputs), _run(small.spec, small.state_dict, inputs))


@pytest.mark.parametrize("importance", ["l2", "activation"])
def test_surgery_is_exact_when_the_removed_channels_contribute_nothing(small, importance):
    """Silence the dropped channels in the original (zero their consumer columns): the pruned model must
    then compute exactly the same output, which checks every index the surgery kept, flow cond rows included."""
    cases = [example_case(small.spec.feature_dim, 60, seed=i) for i in range(2)]
    result = prune_model(small.spec, small.state_dict, ratios=ALL_GROUPS, importance=importance, cases=cases, round_to=1, measure=False)
    silenced = {k: v.clone() for k, v in small.state_dict.items()}
    for key, kept in result.kept.items():
        consumer = _members(small.spec, key)[1]
        dropped = sorted(set(range(small.spec.width(key))) - set(kept))
        silenced[consumer][:, dropped] = 0.0
    inputs = _inputs(small.spec, 45, seed=3)
    expected = _run(small.spec, silenced, inputs)
    actual = _run(result.spec, result.state_dict, inputs)
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-6)


def test_importance_keeps_the_channels_that_matter(small):
    state = {k: v.clone() for k, v in small.state_dict.items()}
    # Shrink half of one layer's channels: weight importance must drop exactly those.
    state["dec.resblocks.1.convs1.0.weight"][:16] *= 1e-3
    state["dec.resblocks.1.convs1.0.bias"][:16] *= 1e-3
    state["dec.resblocks.1.convs2.0.weight"][:, :16] *= 1e-3
    for importance in ("l1", "l2"):
        result = prune_model(small.spec, state, ratios={"decoder": 0.5}, importance=importance, round_to=1, measure=False)
        assert result.kept["dec.resblocks.1.convs1.0"] == list(range(16, 32))
    # Activation importance: channels whose consumer column is zero add nothing, whatever their activation.
    state = {k: v.clone() for k, v in small.state_dict.items()}
    state["enc_p.encoder.ffn_layers.0.conv_2.weight"][:, 1::2] = 0.0
    cases = [example_case(small.spec.feature_dim, 50, seed=0)]
    result = prune_model(small.spec, state, ratios={"encoder": 0.5}, importance="activation", cases=cases, round_to=1, measure=False)
    assert result.kept["enc_p.encoder.ffn_layers.0.conv_1"] == list(range(0, 64, 2))


def test_pruning_removes_flops_and_parameters(small):
    result = prune_model(small.spec, small.state_dict, ratios={"decoder": 0.5}, round_to=1)
    record = result.record
    flops, params = record["gflop_per_second_of_audio"], record["parameters"]
    assert flops["after"]["dec"] < 0.6 * flops["before"]["dec"]
    assert flops["after"]["enc_p"] == flops["before"]["enc_p"] and flops["after"]["flow"] == flops["before"]["flow"]
    assert params["after"]["dec"] < params["before"]["dec"] and params["after"]["total"] < params["before"]["total"]
    resblock_params = [sum(v.numel() for k, v in state.items() if k.startswith("dec.resblocks.")) for state in (small.state_dict, result.state_dict)]
    assert 0.5 <= resblock_params[1] / resblock_params[0] < 0.52  # conv2 biases keep their width
    assert 0.3 < record["flops_removed_fraction"] < 0.5
    assert record["channels"]["decoder"]["after"] * 2 == record["channels"]["decoder"]["before"]


def test_kept_widths_round_to_simd_friendly_multiples():
    assert kept_width(256, 0.5, 8) == 128
    assert kept_width(256, 0.3, 8) == 176  # 179.2 -> nearest multiple of 8
    assert kept_width(6, 0.5, 8) == 3  # narrower than the multiple: plain rounding
    assert kept_width(4, 0.9, 1) == 1  # never zero


def test_bad_ratios_and_unprunable_decoders_are_user_errors(small, checkpoint_factory):
    with pytest.raises(RecipeError, match="decoder: ratio 1.0"):
        prune_model(small.spec, small.state_dict, ratios={"decoder": 1.0})
    with pytest.raises(RecipeError, match="activation.*calibration"):
        prune_model(small.spec, small.state_dict, ratios={"decoder": 0.5}, importance="activation", cases=[])


# -- the pass, export, graph options ---------------------------------------------------------------

def test_pruned_model_exports_and_matches_its_eager_output_at_several_lengths(small, tmp_path):
    """The prune pass between graph options, then polyphase: the ONNX graph reproduces the eager pruned model."""
    state = GraphState(spec=small.spec, model=build_model(small.spec, small.state_dict), input_names=input_names(small.spec))
    state = PASSES["fold_speaker"](PASSES["fold_speaker"].Params(speaker=2)).run(state, tmp_path)
    state = PASSES["prune"](PASSES["prune"].Params(decoder=0.5, encoder=0.25, flow=0.5, round_to=4)).run(state, tmp_path)
    assert state.model.fixed_speaker == 2 and "speaker" not in state.input_names
    assert state.records["prune"]["flops_removed_fraction"] > 0.3 and "GFLOP" in state.notes[-1]
    eager = build_model(state.spec, copy.deepcopy(state.model.state_dict()))
    for name in ("host_source", "polyphase_upsample"):
        state = PASSES[name](PASSES[name].Params()).run(state, tmp_path)
    assert "excitation" in state.input_names

    def reference(inputs):
        with torch.inference_mode():
            args = {**inputs, "speaker": np.array([2], dtype=np.int64)}
            return eager(*[torch.from_numpy(args[n]) for n in eager.input_names]).numpy()

    path = export_onnx(state.model, state.spec, state.input_names, tmp_path / "pruned.onnx", min_frames=4, max_frames=400)
    runner = Runner(path, session_options(2, "all"))
    results = multi_length_check("pruned", runner.run, reference, state.spec, state.input_names, [4, 23, 64, 399], speaker=2)
    assert all(r["passed"] for r in results)


def test_prune_pass_must_come_before_polyphase(small, tmp_path):
    from rvc_compile.errors import BuildError

    state = GraphState(spec=small.spec, model=build_model(small.spec, small.state_dict), input_names=input_names(small.spec))
    state = PASSES["polyphase_upsample"](PASSES["polyphase_upsample"].Params()).run(state, tmp_path)
    with pytest.raises(BuildError, match="before polyphase_upsample"):
        PASSES["prune"](PASSES["prune"].Params()).run(state, tmp_path)


# -- the pruned checkpoint format ------------------------------------------------------------------

def test_pruned_checkpoint_round_trip(small, tmp_path):
    result = prune_model(small.spec, small.state_dict, ratios={"decoder": 0.5, "flow": 0.25}, round_to=1)
    for dtype in ("fp32", "fp16"):
        path = save_pruned_checkpoint(tmp_path / f"p-{dtype}.pth", result.spec, result.state_dict, info="test", pruning=result.record, dtype=dtype)
        loaded = load_checkpoint(path)
        assert loaded.layout == "pruned" and loaded.spec == result.spec and loaded.info == "test"
        assert loaded.pruning["flops_removed_fraction"] == result.record["flops_removed_fraction"]
        assert loaded.stored_dtype == ("float32" if dtype == "fp32" else "float16")
        for key, value in result.state_dict.items():
            tolerance = 0 if dtype == "fp32" else 1e-3
            torch.testing.assert_close(loaded.state_dict[key], value, rtol=tolerance, atol=tolerance)
    assert loaded.spec.to_dict()["channels"] == result.spec.channel_map
    assert type(loaded.spec).from_dict(loaded.spec.to_dict()) == loaded.spec
    # Loaded through the same path as every checkpoint: inspect and infer work on it.
    described = run_cli("inspect", path, "--json")
    assert described.returncode == 0, described.stderr
    assert json.loads(described.stdout)["layout"] == "pruned"


def _payload(path):
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("corrupt,message", [
    (lambda p: p["channels"].update({"dec.resblocks.0.convs9.0": 4}), "not a prunable layer"),
    (lambda p: p["channels"].update({"dec.resblocks.0.convs1.0": 999}), "must be an integer in 1..32"),
    (lambda p: p["channels"].update({"dec.resblocks.0.convs1.0": 0}), "must be an integer in 1..32"),
    (lambda p: p["channels"].update({"dec.resblocks.0.convs1.0": "16"}), "must be an integer"),
    (lambda p: p.update(channels=[1, 2]), "channel map must be a mapping"),
    (lambda p: p["channels"].update({"dec.resblocks.0.convs1.0": 12}), "config and channel map imply"),
    (lambda p: p["channels"].pop("dec.resblocks.0.convs1.0"), "config and channel map imply"),
    (lambda p: p.pop("channels"), "no 'channels' entry"),
    (lambda p: p.update(format_version=99), "newer than this rvc-compile reads"),
    (lambda p: p.update(format="something-else"), "unknown checkpoint format"),
])
def test_corrupted_pruned_checkpoints_are_refused_in_one_line(small, tmp_path, corrupt, message):
    result = prune_model(small.spec, small.state_dict, ratios={"decoder": 0.5}, round_to=1, measure=False)
    path = save_pruned_checkpoint(tmp_path / "p.pth", result.spec, result.state_dict)
    payload = _payload(path)
    corrupt(payload)
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_with_channels_drops_full_width_entries(small):
    key = "dec.resblocks.0.convs1.0"
    assert with_channels(small.spec, {key: 32}, source="x") == small.spec
    assert with_channels(small.spec, {key: 8}, source="x").channels == ((key, 8),)


# -- distillation ----------------------------------------------------------------------------------

def test_torch_losses_equal_the_numpy_metrics():
    rng = np.random.default_rng(0)
    reference = (0.1 * rng.standard_normal(12000)).astype(np.float32)
    candidate = reference + (0.02 * rng.standard_normal(12000)).astype(np.float32)
    losses = SpectralLosses(40000, "cpu")
    ref, cand = torch.from_numpy(reference)[None], torch.from_numpy(candidate)[None]
    assert float(losses.log_mel_l1_db(ref, cand)) == pytest.approx(log_mel_distance_db(reference, candidate, 40000), rel=1e-4)
    assert float(losses.mrstft(ref, cand)) == pytest.approx(mrstft_distance(reference, candidate), rel=1e-4)


@pytest.fixture(scope="module")
def pruned_small(small):
    return prune_model(small.spec, small.state_dict, ratios={"decoder": 0.5}, round_to=1, measure=False)


def _cases(spec, count, seconds, seed):
    return [example_case(spec.feature_dim, int(seconds * 100), seed=seed + i) for i in range(count)]


def test_a_short_fine_tune_lowers_the_loss_and_the_held_out_distance(small, pruned_small, tmp_path):
    cases = _cases(small.spec, 4, 2.0, 0)
    held_out = HeldOut(small.spec, small.state_dict, _cases(small.spec, 2, 1.0, 500))
    before = held_out.measure(pruned_small.spec, pruned_small.state_dict)["log_mel_db"]
    config = DistillConfig(steps=30, learning_rate=1e-3, segment_frames=24, batch=2, log_every=5, save_every=100, threads=1)
    lines = []
    result = distill(small.spec, small.state_dict, pruned_small.spec, pruned_small.state_dict, cases, config, tmp_path, log=lines.append)
    first, last = result.record["loss_first"], result.record["loss_last"]
    assert last["loss"] < 0.6 * first["loss"], result.record["history"]
    after = held_out.measure(pruned_small.spec, result.state_dict)["log_mel_db"]
    assert after < 0.7 * before, (before, after)
    assert result.completed and len(result.record["trained"]) == 4 * 2
    # Only the pruned blocks train: everything around them stays the original's.
    assert all(prefix.startswith("dec.resblocks.") for prefix in result.record["trained"])
    assert all(torch.equal(result.state_dict[k], v) for k, v in pruned_small.state_dict.items() if not k.startswith("dec.resblocks."))
    assert any("steps/s" in line and "ETA" in line for line in lines)


def test_resuming_gives_the_same_result_as_an_uninterrupted_run(small, pruned_small, tmp_path):
    cases = _cases(small.spec, 2, 1.0, 0)
    config = DistillConfig(steps=6, learning_rate=5e-4, segment_frames=16, batch=1, log_every=1, save_every=2, feature_weight=0.5, threads=1)
    args = (small.spec, small.state_dict, pruned_small.spec, pruned_small.state_dict, cases)
    whole = distill(*args, config, tmp_path / "whole", log=lambda _: None)
    part = distill(*args, config, tmp_path / "split", log=lambda _: None, stop_after=3)
    assert not part.completed and part.record["steps"] == 3
    lines = []
    rest = distill(*args, config, tmp_path / "split", log=lines.append)
    assert rest.completed and "resuming at step 3/6" in lines[0]
    assert rest.record["history"] == whole.record["history"]
    for key, value in whole.state_dict.items():
        assert torch.equal(rest.state_dict[key], value), key
    # Another run's settings do not silently reuse the state.
    with pytest.raises(RecipeError, match="belongs to another run"):
        distill(*args, DistillConfig(**{**config.__dict__, "learning_rate": 1e-3}), tmp_path / "split", log=lambda _: None)


# -- the prune recipe and the CLI ------------------------------------------------------------------

def _recipe(tmp_path, checkpoint, **sections):
    import yaml

    recipe = {
        "name": "small-pruned",
        "source": {"checkpoint": str(checkpoint)},
        "pruning": {"decoder": 0.5, "round_to": 1},
        "calibration": {"count": 2, "seconds": 1.0, "held_out": 1, "held_out_seconds": 0.5},
        "distillation": {"steps": 6, "learning_rate": 1e-3, "segment_frames": 20, "log_every": 2, "save_every": 3, "threads": 1},
        "output": {"checkpoint": "out/small-pruned.pth"},
    }
    for key, value in sections.items():
        recipe[key] = {**recipe.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "prune.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_cli_prune_writes_a_checkpoint_that_loads_and_a_report(small, tmp_path):
    recipe = _recipe(tmp_path, small.path)
    process = run_cli("prune", recipe, "--set", "pruning.importance=activation")
    assert process.returncode == 0, process.stderr
    out = tmp_path / "out" / "small-pruned.pth"
    assert process.stdout.strip().splitlines()[-1] == str(out)
    assert "distill step 6/6" in process.stderr
    loaded = load_checkpoint(out)
    assert loaded.layout == "pruned" and loaded.pruning["importance"] == "activation"
    assert loaded.distillation["steps"] == 6 and loaded.pruning["source"]["sha256"] == small.sha256
    report = json.loads((tmp_path / "out" / "small-pruned.report.json").read_text())
    assert report["cost"]["flops_removed_fraction"] > 0.3
    assert report["accuracy"]["after_pruning"]["log_mel_db"] > 0 and report["accuracy"]["after_fine_tuning"] is not None
    assert report["output"]["sha256"] == loaded.sha256
    markdown = (tmp_path / "out" / "small-pruned.report.md").read_text()
    assert "pruned + fine-tuned (6 steps" in markdown and "GFLOP per s of audio" in markdown
    assert (tmp_path / "out" / "small-pruned.distill" / "distill-state.pt").exists()
    assert not [p for p in (tmp_path / "out").iterdir() if ".tmp" in p.name]


def test_cli_prune_bad_source_is_a_one_line_error_and_writes_nothing(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    process = run_cli("prune", _recipe(tmp_path, bad))
    assert_user_error(process, "bad.pth")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("sections,fragment", [
    ({"pruning": {"decoder": 1.5}}, "pruning.decoder: ratio 1.5 must be in [0, 1)"),
    ({"pruning": {"decoderr": 0.5}}, "pruning.decoderr: unknown key; did you mean 'decoder'?"),
    ({"pruning": {"importance": "random"}}, "pruning.importance: expected one of 'l1', 'l2', 'activation'"),
    ({"distillation": {"steps": "many"}}, "distillation.steps: expected an integer"),
    ({"distillation": {"segment_frames": 500}}, "calibration.seconds: 1.0 s is shorter than distillation.segment_frames"),
    ({"output": {"checkpoint": "out/x.onnx"}}, "output.checkpoint: must end in .pth"),
])
def test_prune_recipe_errors_name_the_key_and_line(small, tmp_path, sections, fragment):
    path = _recipe(tmp_path, small.path, **sections)
    with pytest.raises(RecipeError) as info:
        load_prune_recipe(path)
    message = str(info.value)
    assert fragment in message and message.startswith(f"{path}:")
    assert message.split(":")[1].isdigit()  # the line number


def test_prune_recipe_paths_are_relative_to_the_recipe_and_the_schema_lists_every_section(small, tmp_path):
    recipe = load_prune_recipe(_recipe(tmp_path, small.path))
    assert recipe.output.checkpoint == tmp_path / "out" / "small-pruned.pth"
    assert recipe.work_dir == tmp_path / "out" / "small-pruned.distill"
    schema = prune_recipe_json_schema()
    assert set(schema["required"]) == {"name", "source", "output"}
    assert {"pruning", "distillation", "calibration"} <= set(schema["properties"])
    import yaml

    from test_recipe import _validate

    shipped_path = Path(__file__).resolve().parent.parent / "recipes" / "prune" / "prune-demo.yaml"
    assert load_prune_recipe(shipped_path).pruning.decoder == 0.5
    assert _validate(yaml.safe_load(shipped_path.read_text()), schema) is None
    assert _validate({**yaml.safe_load(shipped_path.read_text()), "pruning": {"decoder": 0.5, "ratio": 1}}, schema) is not None


@pytest.mark.slow
def test_a_pruned_checkpoint_builds_and_verifies_like_any_other(small, tmp_path):
    from rvc_compile.build.pipeline import build
    from rvc_compile.recipe.schema import load_recipe
    from rvc_compile.verify.gates import verify_artifact

    from test_build import write_recipe

    result = prune_model(small.spec, small.state_dict, ratios={"decoder": 0.5, "flow": 0.5}, round_to=1)
    path = save_pruned_checkpoint(tmp_path / "pruned.pth", result.spec, result.state_dict, pruning=result.record)
    built = build(load_recipe(write_recipe(tmp_path, path)), log=lambda _: None)
    manifest = json.loads((built.path / "manifest.json").read_text())
    assert manifest["source"]["channels"] == result.spec.channel_map
    assert built.report["source"]["gflop_per_second_of_audio"] == pytest.approx(result.record["gflop_per_second_of_audio"]["after"]["total"], abs=1e-3)
    assert verify_artifact(built.path, skip_latency=True)["passed"]


def test_least_squares_reconstruction_brings_the_pruned_model_closer_before_any_training(small):
    cases = _cases(small.spec, 2, 2.0, 0)
    held_out = HeldOut(small.spec, small.state_dict, _cases(small.spec, 2, 1.0, 500))
    sliced = prune_model(small.spec, small.state_dict, ratios={"decoder": 0.5}, round_to=1, measure=False)
    refit = prune_model(small.spec, small.state_dict, ratios={"decoder": 0.5}, round_to=1, measure=False, cases=cases, reconstruct="least_squares")
    assert refit.kept == sliced.kept and refit.record["reconstruct"] == "least_squares"
    changed = [k for k in refit.state_dict if not torch.equal(refit.state_dict[k], sliced.state_dict[k])]
    assert changed and all(".convs2." in k for k in changed)  # only the consumers are refitted
    before = held_out.measure(sliced.spec, sliced.state_dict)["log_mel_db"]
    after = held_out.measure(refit.spec, refit.state_dict)["log_mel_db"]
    assert after < 0.8 * before, (before, after)
    with pytest.raises(RecipeError, match="needs calibration cases"):
        prune_model(small.spec, small.state_dict, ratios={"decoder": 0.5}, round_to=1, measure=False, reconstruct="least_squares")
