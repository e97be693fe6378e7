"""The command line as users run it: inspect, infer, and every bad input (exit 2, one line, nothing written)."""

from __future__ import annotations

import json
import pickle
import wave

import numpy as np
import pytest
import torch

from conftest import assert_user_error, run_cli


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    frames = 40
    arrays = {
        "features": rng.standard_normal((frames, 768)).astype(np.float32),
        "f0": np.full(frames, 180.0, np.float32),
        "features256": rng.standard_normal((frames, 256)).astype(np.float32),
        "f0_short": np.full(frames - 3, 180.0, np.float32),
        "f0_negative": np.full(frames, -5.0, np.float32),
        "features_nan": np.where(np.arange(frames)[:, None] == 3, np.nan, rng.standard_normal((frames, 768))).astype(np.float32),
        "features_int": np.zeros((frames, 768), np.int32),
        "features_empty": np.zeros((0, 768), np.float32),
        "features_1d": np.zeros(768, np.float32),
    }
    paths = {}
    for name, array in arrays.items():
        paths[name] = directory / f"{name}.npy"
        np.save(paths[name], array)
    paths["pickled"] = directory / "pickled.npy"
    np.save(paths["pickled"], np.array([{"a": 1}], dtype=object), allow_pickle=True)
    paths["garbage"] = directory / "garbage.npy"
    paths["garbage"].write_bytes(b"not numpy at all")
    return paths


def test_inspect_text_and_json(checkpoint_factory):
    path = checkpoint_factory("v1", "48k", False)
    text = run_cli("inspect", path)
    assert text.returncode == 0, text.stderr
    assert "v1" in text.stdout and "48000 Hz" in text.stdout and "GFLOP" in text.stdout
    data = json.loads(run_cli("inspect", path, "--json").stdout)
    assert data["version"] == "v1" and data["sample_rate"] == 48000 and data["f0"] is False
    assert data["feature_dim"] == 256 and data["hop_length"] == 480 and data["stored_dtype"] == "float16"
    assert data["parameters"]["total"] > 0 and data["gflop_per_second_of_audio"]["dec"] > 0
    assert len(data["sha256"]) == 64 and len(data["config"]) == 18


def test_inspect_official_v2_40k_cost():
    """The figures the brief gives for a v2 40k synthesizer: 27.5 M parameters, about 94 GFLOP/s of audio."""
    from rvc_compile.components.synthesizer.reference import flops_per_second
    from rvc_compile.components.synthesizer.spec import from_config_list, official_config
    from rvc_compile.components.synthesizer.model import build_model

    spec = from_config_list(official_config("v2", "40k"), version="v2", f0=True, source="official v2 40k")
    model = build_model(spec)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(27.5e6, rel=0.01)
    flops = flops_per_second(spec)
    assert flops["total"] == pytest.approx(94e9, rel=0.02) and flops["dec"] / flops["total"] > 0.95


@pytest.mark.parametrize("suffix", [".wav", ".npy"])
def test_infer_writes_audio(checkpoint_factory, inputs, tmp_path, suffix):
    out = tmp_path / f"out{suffix}"
    process = run_cli("infer", checkpoint_factory(), "--features", inputs["features"], "--f0", inputs["f0"], "--noise", "seed:3", "-o", out)
    assert process.returncode == 0, process.stderr
    if suffix == ".npy":
        audio = np.load(out)
        assert audio.shape == (40 * 400,) and audio.dtype == np.float32 and np.isfinite(audio).all()
    else:
        with wave.open(str(out)) as handle:
            assert handle.getframerate() == 40000 and handle.getnframes() == 40 * 400 and handle.getnchannels() == 1


def test_infer_noise_modes_are_reproducible(checkpoint_factory, inputs, tmp_path):
    outputs = {}
    for label, noise in (("zero-a", "zero"), ("zero-b", "zero"), ("seed1-a", "seed:1"), ("seed1-b", "seed:1"), ("seed2", "seed:2")):
        out = tmp_path / f"{label}.npy"
        assert run_cli("infer", checkpoint_factory(), "--features", inputs["features"], "--f0", inputs["f0"], "--noise", noise, "-o", out).returncode == 0
        outputs[label] = np.load(out)
    assert np.array_equal(outputs["zero-a"], outputs["zero-b"])
    assert np.array_equal(outputs["seed1-a"], outputs["seed1-b"])
    assert not np.array_equal(outputs["seed1-a"], outputs["seed2"])
    assert not np.array_equal(outputs["zero-a"], outputs["seed1-a"])


def test_infer_without_f0_for_a_model_without_pitch(checkpoint_factory, inputs, tmp_path):
    out = tmp_path / "out.npy"
    process = run_cli("infer", checkpoint_factory("v1", "32k", False), "--features", inputs["features256"], "-o", out)
    assert process.returncode == 0, process.stderr
    assert np.load(out).shape == (40 * 320,)


BAD_INFER = [
    # (description, checkpoint kind, arguments, fragments expected in the one-line error)
    ("feature width disagrees with v2", {}, ["--features", "features256", "--f0", "f0"], ["features256.npy", "256 wide", "768"]),
    ("f0 length differs", {}, ["--features", "features", "--f0", "f0_short"], ["f0_short.npy", "37 frames", "40"]),
    ("negative f0", {}, ["--features", "features", "--f0", "f0_negative"], ["f0_negative.npy", "negative"]),
    ("NaN features", {}, ["--features", "features_nan", "--f0", "f0"], ["features_nan.npy", "NaN"]),
    ("integer features", {}, ["--features", "features_int", "--f0", "f0"], ["features_int.npy", "floating point"]),
    ("empty features", {}, ["--features", "features_empty", "--f0", "f0"], ["features_empty.npy", "0 feature frames"]),
    ("1-D features", {}, ["--features", "features_1d", "--f0", "f0"], ["features_1d.npy", "shape"]),
    ("pickled object array", {}, ["--features", "pickled", "--f0", "f0"], ["pickled.npy"]),
    ("not a .npy file", {}, ["--features", "garbage", "--f0", "f0"], ["garbage.npy", "not a readable"]),
    ("f0 missing for a pitch model", {}, ["--features", "features"], ["needs f0"]),
    ("speaker out of range", {}, ["--features", "features", "--f0", "f0", "--speaker", "500"], ["speaker 500 out of range"]),
    ("bad noise", {}, ["--features", "features", "--f0", "f0", "--noise", "random"], ["--noise", "random"]),
]


@pytest.mark.parametrize("description,kind,arguments,fragments", BAD_INFER, ids=[case[0] for case in BAD_INFER])
def test_bad_infer_inputs_exit_2_with_one_line_and_write_nothing(checkpoint_factory, inputs, tmp_path, description, kind, arguments, fragments, hostile):
    hostile.case("Runtime input validation", f"`rvc-compile infer CHECKPOINT`: {description}", expect="exit 2, one stderr line naming the file, nothing written")
    arguments = [str(inputs[a]) if a in inputs else a for a in arguments]
    out = tmp_path / "out.wav"
    process = run_cli("infer", checkpoint_factory(**kind), *arguments, "-o", out)
    assert_user_error(process, *fragments)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def _bad_checkpoints(directory, good):
    files = {}
    files["text.pth"] = b"just text\n"
    files["empty.pth"] = b""
    data = good.read_bytes()
    files["truncated.pth"] = data[: len(data) // 3]
    for name, content in files.items():
        (directory / name).write_bytes(content)
    marker = directory / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    torch.save({"weight": Evil()}, directory / "evil.pth")
    (directory / "evil_raw.pth").write_bytes(pickle.dumps({"weight": Evil()}))
    torch.save({"conv.weight": torch.zeros(3, 3)}, directory / "resnet.pth")
    payload = torch.load(good, weights_only=True)
    payload["config"][3] = 34  # hidden_channels: divisible by n_heads, but not what the weights hold
    torch.save(payload, directory / "mismatch.pth")
    return marker


@pytest.mark.parametrize("command", ["inspect", "infer"])
def test_bad_checkpoints_exit_2_with_one_line_naming_the_file(checkpoint_factory, inputs, tmp_path, command, hostile):
    hostile.case("Hostile checkpoints", f"`rvc-compile {command}` on text, empty, truncated, code-running (zip and raw pickle), ResNet, config-mismatched and missing files",
                 count=8, expect="exit 2, one stderr line naming the file; the code never runs")
    bad = tmp_path / "bad"
    bad.mkdir()
    marker = _bad_checkpoints(bad, checkpoint_factory())
    expectations = {
        "text.pth": "not a PyTorch checkpoint", "empty.pth": "empty", "truncated.pth": "corrupt", "evil.pth": "refused",
        "evil_raw.pth": "refused", "resnet.pth": "not an RVC", "mismatch.pth": "shape", "missing.pth": "no such checkpoint",
    }
    for name, fragment in expectations.items():
        out = tmp_path / "out.npy"
        if command == "inspect":
            process = run_cli("inspect", bad / name)
        else:
            process = run_cli("infer", bad / name, "--features", inputs["features"], "--f0", inputs["f0"], "-o", out)
        assert_user_error(process, name, fragment)
        assert not out.exists()
    assert not marker.exists(), "unpickling ran code"


def test_unknown_output_suffix_is_refused_before_running(checkpoint_factory, inputs, tmp_path):
    out = tmp_path / "out.mp3"
    assert_user_error(run_cli("infer", checkpoint_factory(), "--features", inputs["features"], "--f0", inputs["f0"], "-o", out), "out.mp3", ".wav or .npy")
    assert not out.exists()


def test_make_checkpoint_writes_the_official_small_model_format(tmp_path):
    out = tmp_path / "voice.pth"
    assert run_cli("make-checkpoint", out, "--version", "v1", "--sample-rate", "32k", "--no-f0", "--size", "small").returncode == 0
    payload = torch.load(out, weights_only=True)
    assert set(payload) == {"weight", "config", "info", "sr", "f0", "version"}
    assert payload["sr"] == "32k" and payload["f0"] == 0 and payload["version"] == "v1" and len(payload["config"]) == 18
    assert all(t.dtype == torch.float16 for t in payload["weight"].values())
    assert not any(k.startswith("enc_q") for k in payload["weight"])
