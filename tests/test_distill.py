"""The distillation trainer: the voice's own data, the teacher-output cache, step speed-ups that keep the
maths, native-only mixed precision, and training on an RVC training folder through `rvc-compile prune`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rvc_compile.cache.store import Store
from rvc_compile.components.synthesizer.examples import example_case
from rvc_compile.compress import distill as distill_module
from rvc_compile.compress.distill import TEACHER_STAGE, DistillConfig, distill, resolve_device
from rvc_compile.compress.prune import prune_model
from rvc_compile.errors import CalibrationError, RecipeError
from rvc_compile.machine import IsaClass
from rvc_compile.precision.calibration import load_calibration_split
from rvc_compile.recipe.schema import Calibration

from conftest import assert_user_error, run_cli
from test_calibration import make_npz_folder, make_rvc_logs
from test_prune import one_thread, small  # noqa: F401  (fixtures: one torch thread, the small voice)


@pytest.fixture(scope="module")
def pruned(small):
    return prune_model(small.spec, small.state_dict, ratios={"decoder": 0.5}, round_to=1, measure=False)


def _cases(spec, count=2, frames=100, seed=0):
    return [example_case(spec.feature_dim, frames, seed=seed + i) for i in range(count)]


def _config(**changes):
    settings = dict(steps=6, learning_rate=1e-3, segment_frames=16, batch=2, log_every=1, save_every=100, threads=1)
    return DistillConfig(**{**settings, **changes})


def _teacher_entries(cache: Path) -> list[Path]:
    store = Store(cache)
    return [store.entry_dir(info.key) for info in store.ls() if info.stage == TEACHER_STAGE]


def test_the_teacher_cache_gives_the_identical_loss_curve_and_is_reused(small, pruned, tmp_path, monkeypatch):
    monkeypatch.setattr(distill_module, "TEACHER_CHUNK_STEPS", 4)  # 6 steps: two chunks, the second partial
    cases = _cases(small.spec)
    args = (small.spec, small.state_dict, pruned.spec, pruned.state_dict, cases)
    live = distill(*args, _config(teacher_cache=False), tmp_path / "live", log=lambda _: None, cache_dir=tmp_path / "cache")
    assert live.record["speed"]["teacher_cache"]["store"] is None and not (tmp_path / "cache").exists()
    first = distill(*args, _config(), tmp_path / "first", log=lambda _: None, cache_dir=tmp_path / "cache")
    assert first.record["speed"]["teacher_cache"]["chunks_computed"] == 2 and len(_teacher_entries(tmp_path / "cache")) == 2
    lines = []
    again = distill(*args, _config(), tmp_path / "again", log=lines.append, cache_dir=tmp_path / "cache")
    cache_record = again.record["speed"]["teacher_cache"]
    assert cache_record["chunks_read"] == 2 and cache_record["chunks_computed"] == 0 and cache_record["teacher_s"] == 0
    assert not any("teacher's outputs for steps" in line for line in lines)
    for result in (first, again):
        assert result.record["history"] == live.record["history"]
        for key, value in live.state_dict.items():
            assert torch.equal(result.state_dict[key], value), key
    # A sweep over pruning ratios has the same teacher and data: it reads the same entries.
    other = prune_model(small.spec, small.state_dict, ratios={"decoder": 0.25}, round_to=1, measure=False)
    swept = distill(small.spec, small.state_dict, other.spec, other.state_dict, cases, _config(), tmp_path / "sweep", log=lambda _: None, cache_dir=tmp_path / "cache")
    assert swept.record["speed"]["teacher_cache"]["chunks_read"] == 2


def test_a_fixed_crop_set_runs_the_teacher_once_per_crop_with_the_identical_loss_curve(small, pruned, tmp_path):
    cases = _cases(small.spec)
    args = (small.spec, small.state_dict, pruned.spec, pruned.state_dict, cases)
    config = _config(steps=6, batch=2, crops=5)  # 12 items over 5 crops: three shuffled epochs
    live = distill(*args, dataclasses.replace(config, teacher_cache=False), tmp_path / "live", log=lambda _: None)
    assert live.record["speed"]["teacher_cache"]["chunks_computed"] == 6  # the teacher ran for every step's two crops
    cached = distill(*args, config, tmp_path / "cached", log=lambda _: None, cache_dir=tmp_path / "cache")
    assert cached.record["speed"]["teacher_cache"]["chunks_computed"] == 1  # all five crops in one entry, once
    assert cached.record["history"] == live.record["history"]
    assert cached.record["history"] != distill(*args, _config(steps=6, batch=2), tmp_path / "fresh", log=lambda _: None).record["history"]
    from rvc_compile.compress.distill import TeacherTargets

    items = TeacherTargets.__new__(TeacherTargets)
    items.pool, items.config = 5, config
    epochs = [sorted(sum((items.items_of(step) for step in range(first, first + 5)), [])) for first in (0, 5)]
    assert epochs == [[0, 0, 1, 1, 2, 2, 3, 3, 4, 4]] * 2  # batch 2 x 5 steps: every crop twice per 10 positions
    with pytest.raises(RecipeError, match="distillation.crops"):
        _config(crops=-1).check()


def test_teacher_cache_keys_follow_the_teacher_the_data_and_the_batch_shape(small, pruned, tmp_path):
    cases = _cases(small.spec)
    args = (small.spec, small.state_dict, pruned.spec, pruned.state_dict)
    cache = tmp_path / "cache"
    distill(*args, cases, _config(steps=2), tmp_path / "a", log=lambda _: None, cache_dir=cache)
    distill(*args, _cases(small.spec, seed=7), _config(steps=2), tmp_path / "b", log=lambda _: None, cache_dir=cache)
    distill(*args, cases, _config(steps=2, segment_frames=20), tmp_path / "c", log=lambda _: None, cache_dir=cache)
    other_teacher = {k: v * 1.01 if k == "dec.conv_post.weight" else v for k, v in small.state_dict.items()}
    distill(small.spec, other_teacher, pruned.spec, pruned.state_dict, cases, _config(steps=2), tmp_path / "d", log=lambda _: None, cache_dir=cache)
    assert len(_teacher_entries(cache)) == 4


def test_a_damaged_teacher_cache_entry_is_discarded_and_recomputed(small, pruned, tmp_path):
    cases = _cases(small.spec)
    args = (small.spec, small.state_dict, pruned.spec, pruned.state_dict, cases)
    cache = tmp_path / "cache"
    first = distill(*args, _config(), tmp_path / "a", log=lambda _: None, cache_dir=cache)
    (entry,) = _teacher_entries(cache)
    target = entry / "files" / "targets.npz"
    target.write_bytes(target.read_bytes()[:-100])
    lines = []
    again = distill(*args, _config(), tmp_path / "b", log=lines.append, cache_dir=cache)
    assert again.record["speed"]["teacher_cache"]["chunks_computed"] == 1
    assert again.record["history"] == first.record["history"]
    assert any("discarded" in line or "deleted" in line for line in lines) or len(_teacher_entries(cache)) == 1


def test_another_teachers_entry_under_this_key_is_refused_by_its_content(small, pruned, tmp_path):
    from rvc_compile.compress.distill import TeacherTargets

    cases = _cases(small.spec)
    cache = tmp_path / "cache"
    distill(small.spec, small.state_dict, pruned.spec, pruned.state_dict, cases, _config(), tmp_path / "a", log=lambda _: None, cache_dir=cache)
    (entry,) = _teacher_entries(cache)
    arrays = dict(np.load(entry / "files" / "targets.npz"))
    assert str(arrays["teacher"]) != "0" * 64
    targets = TeacherTargets.__new__(TeacherTargets)
    targets.teacher_sha, targets.config, targets.item_config, targets.spec, targets.keep_z = "0" * 64, _config(), _config(), small.spec, False
    targets.pool, targets.item_count = 0, 6
    arrays.pop("teacher")
    assert targets._check(arrays, 0) is None  # whole ...
    arrays["item0.audio"] = arrays["item0.audio"][:, :10]
    assert "item 0" in targets._check(arrays, 0)  # ... or not


def test_the_student_reuses_the_teachers_decoder_input_only_where_it_is_exact(small, pruned, tmp_path):
    cases = _cases(small.spec)
    args = (small.spec, small.state_dict, pruned.spec, pruned.state_dict, cases)
    reused = distill(*args, _config(teacher_cache=False), tmp_path / "a", log=lambda _: None)
    full = distill(*args, _config(teacher_cache=False, reuse_prefix=False), tmp_path / "b", log=lambda _: None)
    assert reused.record["speed"]["reuse_prefix"] and not full.record["speed"]["reuse_prefix"]
    assert reused.record["history"] == full.record["history"]
    # Pruning the flow (or training the encoder) changes the decoder's input: no reuse.
    flow_pruned = prune_model(small.spec, small.state_dict, ratios={"decoder": 0.5, "flow": 0.5}, round_to=1, measure=False)
    result = distill(small.spec, small.state_dict, flow_pruned.spec, flow_pruned.state_dict, cases, _config(steps=1), tmp_path / "c", log=lambda _: None)
    assert not result.record["speed"]["reuse_prefix"]
    result = distill(*args, _config(steps=1, train="pruned_modules"), tmp_path / "d", log=lambda _: None)
    assert result.record["speed"]["reuse_prefix"]  # pruned_modules trains dec only here: enc_p and flow lost nothing


def test_the_record_times_each_part_of_a_step(small, pruned, tmp_path):
    result = distill(small.spec, small.state_dict, pruned.spec, pruned.state_dict, _cases(small.spec), _config(steps=3), tmp_path, log=lambda _: None)
    speed = result.record["speed"]
    assert set(speed["ms_per_step"]) == {"targets", "student_forward", "discriminator", "loss", "backward", "optimizer"}
    assert all(value >= 0 for value in speed["ms_per_step"].values()) and speed["steps_per_s"] > 0
    assert speed["peak_memory_mb"] > 0 and speed["fused_optimizer"]


def _isa(name, features):
    return IsaClass(name, frozenset(features), "AVX2")


def test_mixed_precision_on_a_cpu_is_refused_unless_native(monkeypatch):
    import rvc_compile.machine as machine

    monkeypatch.setattr(machine, "machine_isa", lambda: _isa("avx2", {"avx2"}))
    with pytest.raises(RecipeError, match="bf16 on this CPU .* emulated.*12x slower"):
        resolve_device(DistillConfig(device="cpu", precision="bf16"))
    with pytest.raises(RecipeError, match="fp16 training on a CPU"):
        resolve_device(DistillConfig(device="cpu", precision="fp16"))
    assert resolve_device(DistillConfig(device="cpu", precision="auto"))[1] is None  # auto stays fp32 on a CPU
    monkeypatch.setattr(machine, "machine_isa", lambda: _isa("avx512-bf16", {"avx2", "avx512", "vnni", "bf16"}))
    assert resolve_device(DistillConfig(device="cpu", precision="bf16"))[1] == torch.bfloat16


# -- the voice's own data ----------------------------------------------------------------------------

def test_held_out_files_never_train(tmp_path, small):
    folder = make_rvc_logs(tmp_path)  # five utterances
    config = Calibration(source="rvc-logs", path=folder, count=16, seconds=1.0)
    train, held = load_calibration_split(config, small.spec, 2, 0.5)
    assert len(train.names) == 3 and len(held.names) == 2 and not set(train.names) & set(held.names)
    assert "2 more held out for evaluation" in train.source and "held out for evaluation" in held.source
    assert all(case["features"].shape[0] <= 50 for case in held.cases)
    npz = make_npz_folder(tmp_path / "npz", count=3)
    train, held = load_calibration_split(Calibration(source="npz", path=npz), small.spec, 1, 1.0)
    assert len(train.names) == 2 and len(held.names) == 1 and not set(train.names) & set(held.names)
    with pytest.raises(CalibrationError, match="3 .npz files; holding 3 out .* leaves none to train on"):
        load_calibration_split(Calibration(source="npz", path=npz), small.spec, 3, 1.0)
    generated = Calibration(source="generated", f0_source="synthetic", count=2, seconds=0.5)
    train, held = load_calibration_split(generated, small.spec, 1, 0.3)
    assert len(train.cases) == 2 and len(held.cases) == 1 and train.sha256 != held.sha256


def _prune_recipe(tmp_path, checkpoint, calibration, **distillation):
    import yaml

    recipe = {
        "name": "voice-pruned",
        "source": {"checkpoint": str(checkpoint)},
        "pruning": {"decoder": 0.5, "round_to": 1},
        "calibration": calibration,
        "distillation": {"steps": 4, "learning_rate": 1e-3, "segment_frames": 20, "log_every": 2, "save_every": 2, "threads": 1, **distillation},
        "output": {"checkpoint": "out/voice-pruned.pth"},
    }
    path = tmp_path / "prune.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_prune_distils_on_the_voices_training_folder(small, tmp_path):
    folder = make_rvc_logs(tmp_path)
    recipe = _prune_recipe(tmp_path, small.path, {"source": "rvc-logs", "path": str(folder), "count": 8, "seconds": 1.0, "held_out": 2, "held_out_seconds": 0.5})
    cache = tmp_path / "cache"
    process = run_cli("prune", recipe, "--cache-dir", str(cache))
    assert process.returncode == 0, process.stderr
    assert "training on rvc-logs" in process.stderr and "3 of 3 utterances (2 more held out" in process.stderr
    report = json.loads((tmp_path / "out" / "voice-pruned.report.json").read_text())
    held = report["accuracy"]["held_out"]
    assert held["source"] == "rvc-logs" and held["cases"] == 2 and "held out for evaluation" in held["set"]
    assert report["distillation"]["training_cases"] == 3
    assert report["distillation"]["speed"]["teacher_cache"]["chunks_computed"] == 1
    # Run again after deleting the output: calibration and the teacher's outputs come from the cache.
    for path in (tmp_path / "out").iterdir():
        if path.is_file():
            path.unlink()
    process = run_cli("prune", recipe, "--cache-dir", str(cache), "--set", "distillation.resume=false")
    assert process.returncode == 0, process.stderr
    report = json.loads((tmp_path / "out" / "voice-pruned.report.json").read_text())
    assert report["distillation"]["speed"]["teacher_cache"]["chunks_read"] == 1


def test_a_bad_training_folder_is_one_line_naming_the_file_and_writes_nothing(small, tmp_path):
    folder = make_rvc_logs(tmp_path)
    f0_file = folder / "2b-f0nsf" / "1_0.wav.npy"
    np.save(f0_file.with_suffix(""), np.zeros(40), allow_pickle=False)  # another utterance's length
    recipe = _prune_recipe(tmp_path, small.path, {"source": "rvc-logs", "path": str(folder), "held_out": 1, "seconds": 1.0})
    process = run_cli("prune", recipe, "--cache-dir", str(tmp_path / "cache"))
    assert_user_error(process, "1_0")
    assert not (tmp_path / "out").exists()
    empty = tmp_path / "empty"
    (empty / "3_feature768").mkdir(parents=True)
    process = run_cli("prune", _prune_recipe(tmp_path, small.path, {"source": "rvc-logs", "path": str(empty)}), "--cache-dir", str(tmp_path / "cache"))
    assert_user_error(process, "3_feature768")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("calibration,fragment", [
    ({"source": "none"}, "calibration.source: pruning and distillation need inputs"),
    ({"source": "rvc-logs"}, "calibration.path: source 'rvc-logs' needs a path"),
    ({"source": "npz", "path": "x", "f0_method": "pm"}, "calibration.f0_method: only used by source 'generated'"),
    ({"held_out": 0}, "calibration.held_out: must be at least 1"),
])
def test_prune_calibration_keys_are_checked_like_a_builds(small, tmp_path, calibration, fragment):
    from rvc_compile.compress.prune_recipe import load_prune_recipe

    with pytest.raises(RecipeError, match=fragment):
        load_prune_recipe(_prune_recipe(tmp_path, small.path, calibration))


def test_train_bench_times_every_variant_and_checks_the_loss_curves(small):
    from rvc_compile.measure.training import VARIANTS, markdown, train_bench

    pruned = prune_model(small.spec, small.state_dict, ratios={"decoder": 0.5}, round_to=1, measure=False)
    result = train_bench(small.spec, small.state_dict, pruned.spec, pruned.state_dict, _cases(small.spec), _config(steps=4), rounds=2, log=lambda _: None)
    assert list(result["variants"]) == list(VARIANTS)
    assert all(variant["steps"] == 4 and variant["steps_per_s"] > 0 for variant in result["variants"].values())
    assert result["variants"]["today"]["speedup_over_today"] == 1.0
    assert all(result["identical_loss_curves"].values()), result["identical_loss_curves"]
    warm = result["variants"]["+teacher cache, warm"]["teacher_cache"]
    assert warm["chunks_computed"] == 0 and warm["chunks_read"] >= 1
    text = markdown(result, {"cpu": "test", "flags": ["avx2"]})
    assert "| +teacher cache, warm |" in text and "identical" in text


def test_cli_train_bench(small):
    process = run_cli("train-bench", small.path, "--steps", "2", "--rounds", "1", "--segment-frames", "16", "--threads", "1", "--json")
    assert process.returncode == 0, process.stderr
    result = json.loads(process.stdout)
    assert result["steps"] == 2 and "today" in result["variants"] and result["machine"]["threads"] == 1
    process = run_cli("train-bench", small.path, "--steps", "1", "--rounds", "2")
    assert process.returncode == 2 and "cannot be split" in process.stderr


# -- the adversarial option ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def discriminator_file(tmp_path_factory):
    from rvc_compile.compress.discriminator import MultiPeriodDiscriminator, save_discriminator

    torch.manual_seed(3)
    return save_discriminator(MultiPeriodDiscriminator("v2"), tmp_path_factory.mktemp("d") / "D_2333333.pth")


def test_adversarial_distillation_trains_the_discriminator_and_resumes_exactly(small, pruned, discriminator_file, tmp_path):
    cases = _cases(small.spec)
    # The discriminator is full size whatever the voice (71 M parameters): few, short steps.
    config = _config(steps=2, batch=1, segment_frames=12, discriminator=discriminator_file, adversarial_weight=0.1, save_every=1)
    args = (small.spec, small.state_dict, pruned.spec, pruned.state_dict, cases)
    whole = distill(*args, config, tmp_path / "whole", log=lambda _: None, cache_dir=tmp_path / "cache")
    history = whole.record["history"]
    assert all("adversarial" in h and "discriminator" in h for h in history)
    assert whole.record["discriminator"] == {"file": "D_2333333.pth", "version": "v2"}
    assert whole.record["speed"]["ms_per_step"]["discriminator"] > 0
    plain = distill(*args, _config(steps=2, batch=1, segment_frames=12), tmp_path / "plain", log=lambda _: None)
    assert not torch.equal(plain.state_dict["dec.resblocks.0.convs1.0.weight"], whole.state_dict["dec.resblocks.0.convs1.0.weight"])
    distill(*args, config, tmp_path / "split", log=lambda _: None, stop_after=1, cache_dir=tmp_path / "cache")
    rest = distill(*args, config, tmp_path / "split", log=lambda _: None, cache_dir=tmp_path / "cache")
    assert rest.record["history"] == history
    for key, value in whole.state_dict.items():
        assert torch.equal(rest.state_dict[key], value), key


def test_legacy_and_parametrized_weight_norm_keys_both_load(discriminator_file, tmp_path):
    from rvc_compile.compress.discriminator import load_discriminator, save_discriminator

    legacy = load_discriminator(discriminator_file, "v2")
    assert any(".weight_g" in k for k in torch.load(discriminator_file, weights_only=True)["model"])
    modern = load_discriminator(save_discriminator(legacy, tmp_path / "D_1.pth", legacy_keys=False), "v2")
    for key, value in legacy.state_dict().items():
        assert torch.equal(modern.state_dict()[key], value)


def test_a_discriminator_of_another_architecture_is_refused_naming_the_file(small, pruned, discriminator_file, tmp_path):
    from rvc_compile.compress.discriminator import MultiPeriodDiscriminator, load_discriminator, save_discriminator
    from rvc_compile.errors import CheckpointError

    v1 = save_discriminator(MultiPeriodDiscriminator("v1"), tmp_path / "D_v1.pth")
    with pytest.raises(CheckpointError, match=r"D_v1.pth: 7 sub-discriminators \(a v1 voice's discriminator\), but a v2 voice's has 9"):
        load_discriminator(v1, "v2")
    state = torch.load(discriminator_file, weights_only=True)
    key = next(k for k in state["model"] if k.endswith("conv_post.weight_v"))
    state["model"][key] = state["model"][key][:, :10]
    torch.save(state, tmp_path / "D_bad.pth")
    with pytest.raises(CheckpointError, match="D_bad.pth: discriminators.0.conv_post"):
        load_discriminator(tmp_path / "D_bad.pth", "v2")
    with pytest.raises(CheckpointError, match="small.pth: not an RVC discriminator"):
        load_discriminator(small.path, "v2")
    with pytest.raises(CheckpointError, match="missing.pth: no such discriminator file"):
        load_discriminator(tmp_path / "missing.pth", "v2")
    # Through the CLI: one line, nothing written.
    recipe = _prune_recipe(tmp_path, small.path, {"source": "generated", "f0_source": "synthetic", "count": 2, "seconds": 0.5, "held_out": 1, "held_out_seconds": 0.3},
                           discriminator=str(v1))
    process = run_cli("prune", recipe, "--cache-dir", str(tmp_path / "cache"))
    assert_user_error(process, "D_v1.pth", "7 sub-discriminators")
    assert not (tmp_path / "out").exists()
