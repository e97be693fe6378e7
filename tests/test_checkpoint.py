"""Loading every kind of RVC checkpoint users have, and refusing everything else."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from rvc_compile.checkpoint import load_checkpoint
from rvc_compile.errors import CheckpointError
from rvc_compile.reference import ReferenceModel
from rvc_compile.synthetic import make_checkpoint

COMBINATIONS = [(v, sr, f0) for v in ("v1", "v2") for sr in ("32k", "40k", "48k") for f0 in (True, False)]
HOPS = {"32k": 320, "40k": 400, "48k": 480}


@pytest.mark.parametrize("version,sample_rate,f0", COMBINATIONS)
def test_every_version_rate_and_pitch_combination_loads_and_runs(checkpoint_factory, version, sample_rate, f0):
    path = checkpoint_factory(version, sample_rate, f0)
    checkpoint = load_checkpoint(path)
    spec = checkpoint.spec
    assert (spec.version, spec.sample_rate_tag, spec.f0) == (version, sample_rate, f0)
    assert spec.feature_dim == (768 if version == "v2" else 256)
    assert spec.hop_length == HOPS[sample_rate]
    assert checkpoint.layout == "small-model" and checkpoint.stored_dtype == "float16"
    assert all(t.dtype == torch.float32 for t in checkpoint.state_dict.values())
    assert not any(k.startswith("enc_q.") or "weight_g" in k for k in checkpoint.state_dict)

    model = ReferenceModel(checkpoint)
    frames = 23
    features = np.random.default_rng(0).standard_normal((frames, spec.feature_dim)).astype(np.float32)
    f0_hz = np.full(frames, 140.0, np.float32) if f0 else None
    audio = model.infer(features, f0_hz, noise="zero")
    assert audio.shape == (frames * spec.hop_length,) and audio.dtype == np.float32
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0


@pytest.mark.parametrize("version,f0", [("v2", True), ("v1", False)])
def test_both_weight_norm_key_styles_give_the_same_weights(checkpoint_factory, version, f0):
    old = load_checkpoint(checkpoint_factory(version, "40k", f0, key_style="weight_g", seed=5))
    new = load_checkpoint(checkpoint_factory(version, "40k", f0, key_style="parametrizations", seed=5))
    assert old.weight_norm_style != new.weight_norm_style
    assert old.state_dict.keys() == new.state_dict.keys()
    for key in old.state_dict:
        torch.testing.assert_close(old.state_dict[key], new.state_dict[key], rtol=0, atol=0)


def _rvc_config_json(path: Path, config: list) -> Path:
    """A config json in RVC's own format (configs/v2/40k.json layout)."""
    keys = ["inter_channels", "hidden_channels", "filter_channels", "n_heads", "n_layers", "kernel_size", "p_dropout", "resblock",
            "resblock_kernel_sizes", "resblock_dilation_sizes", "upsample_rates", "upsample_initial_channel", "upsample_kernel_sizes"]
    model = dict(zip(keys, config[2:15]))
    model.update(use_spectral_norm=False, gin_channels=config[16], spk_embed_dim=config[15])
    data = {"max_wav_value": 32768.0, "sampling_rate": config[17], "filter_length": (config[0] - 1) * 2, "hop_length": 400,
            "win_length": (config[0] - 1) * 2, "n_mel_channels": 125, "mel_fmin": 0.0, "mel_fmax": None}
    path.write_text(json.dumps({"train": {"seed": 1234, "epochs": 20000}, "data": data, "model": model}))
    return path


def test_training_checkpoint_with_config_json_matches_the_small_model(tmp_path):
    from rvc_compile.synthetic import checkpoint_config

    training = make_checkpoint(tmp_path / "G_1000.pth", size="small", layout="training", key_style="parametrizations", seed=9)
    small = make_checkpoint(tmp_path / "voice.pth", size="small", seed=9)
    config = _rvc_config_json(tmp_path / "config.json", checkpoint_config("v2", "40k", "small"))
    loaded = load_checkpoint(training, config_path=config)
    assert loaded.layout == "training"
    assert "enc_q" not in " ".join(loaded.state_dict)
    reference = load_checkpoint(small)
    assert loaded.spec == reference.spec
    for key, value in reference.state_dict.items():
        # The small model stores fp16: the same weights, rounded.
        torch.testing.assert_close(loaded.state_dict[key], value, rtol=2e-3, atol=2e-3)


def test_training_checkpoint_of_official_size_infers_its_config(tmp_path):
    path = make_checkpoint(tmp_path / "G_2333.pth", version="v2", sample_rate="48k", layout="training", seed=1)
    checkpoint = load_checkpoint(path)
    assert checkpoint.spec.sample_rate_tag == "48k" and checkpoint.spec.f0
    assert list(checkpoint.spec.upsample_rates) == [12, 10, 2, 2]


def test_training_checkpoint_of_unofficial_size_without_config_is_a_clear_error(tmp_path):
    path = make_checkpoint(tmp_path / "G_1.pth", size="small", layout="training")
    with pytest.raises(CheckpointError, match="--config"):
        load_checkpoint(path)


# -- bad input ------------------------------------------------------------------------------------

def _save(path: Path, payload) -> Path:
    torch.save(payload, path)
    return path


def _small_payload(checkpoint_factory) -> dict:
    return torch.load(checkpoint_factory(), weights_only=True)


class _RunsCode:
    """Unpickling this would run ``touch MARKER``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("container", ["torch-zip", "raw-pickle"])
def test_a_pickle_that_runs_code_is_refused_and_never_runs(tmp_path, container):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"weight": {}, "config": [], "hack": _RunsCode(marker)}
    if container == "torch-zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(CheckpointError, match="evil.pth"):
        load_checkpoint(path)
    assert not marker.exists()


def test_not_a_checkpoint_empty_and_truncated_files(tmp_path, checkpoint_factory):
    text = tmp_path / "notes.pth"
    text.write_text("hello, this is not a checkpoint\n")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    source = checkpoint_factory().read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(source[: len(source) // 2])
    for path, pattern in ((text, "not a PyTorch checkpoint"), (empty, "empty"), (truncated, "corrupt|truncated")):
        with pytest.raises(CheckpointError, match=pattern) as info:
            load_checkpoint(path)
        assert str(path) in str(info.value)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pth")


def test_state_dict_from_another_model_is_refused(tmp_path):
    resnet_like = {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 512)}
    with pytest.raises(CheckpointError, match="not an RVC"):
        load_checkpoint(_save(tmp_path / "resnet.pth", resnet_like))
    with pytest.raises(CheckpointError, match="not an RVC"):
        load_checkpoint(_save(tmp_path / "other.pth", {"model": resnet_like, "iteration": 3}))


def test_shapes_that_disagree_with_the_config_are_refused(tmp_path, checkpoint_factory):
    payload = _small_payload(checkpoint_factory)
    payload["config"][4] = payload["config"][4] * 2  # filter_channels
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(_save(tmp_path / "bad_config.pth", payload))


def test_missing_and_unexpected_weights_are_named(tmp_path, checkpoint_factory):
    payload = _small_payload(checkpoint_factory)
    key = next(k for k in payload["weight"] if k.startswith("dec.ups") and k.endswith("weight_g"))
    del payload["weight"][key]
    with pytest.raises(CheckpointError, match="weight-norm pair for dec.ups.* incomplete"):
        load_checkpoint(_save(tmp_path / "half_pair.pth", payload))
    payload = _small_payload(checkpoint_factory)
    del payload["weight"]["dec.conv_post.weight"]
    with pytest.raises(CheckpointError, match="missing weight dec.conv_post.weight"):
        load_checkpoint(_save(tmp_path / "missing.pth", payload))
    payload = _small_payload(checkpoint_factory)
    payload["weight"]["dec.extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match="dec.extra.weight"):
        load_checkpoint(_save(tmp_path / "extra.pth", payload))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, checkpoint_factory, value):
    payload = _small_payload(checkpoint_factory)
    key = next(k for k in payload["weight"] if k.startswith("flow."))
    payload["weight"][key].view(-1)[0] = value
    with pytest.raises(CheckpointError, match="NaN or Inf"):
        load_checkpoint(_save(tmp_path / "nan.pth", payload))


def test_declared_version_or_pitch_that_contradicts_the_weights(tmp_path, checkpoint_factory):
    payload = _small_payload(checkpoint_factory)
    payload["version"] = "v1"
    with pytest.raises(CheckpointError, match="declared version v1"):
        load_checkpoint(_save(tmp_path / "version.pth", payload))
    payload = _small_payload(checkpoint_factory)
    payload["f0"] = 0
    with pytest.raises(CheckpointError, match="declared f0=0"):
        load_checkpoint(_save(tmp_path / "f0.pth", payload))


def test_missing_version_means_v1(tmp_path, checkpoint_factory):
    payload = torch.load(checkpoint_factory("v1", "40k", True), weights_only=True)
    del payload["version"]
    assert load_checkpoint(_save(tmp_path / "old.pth", payload)).spec.version == "v1"


def test_archive_declaring_huge_tensors_is_refused_before_reading(tmp_path, checkpoint_factory):
    source = checkpoint_factory()
    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(bomb, "w") as out:
        for info in original.infolist():
            out.writestr(info, original.read(info))
        # A member that inflates 1000x: 64 MiB of zeros compressed to a few KiB.
        out.writestr(zipfile.ZipInfo("archive/data/999"), b"\0" * (64 << 20), compress_type=zipfile.ZIP_DEFLATED)
    with pytest.raises(CheckpointError, match="zip bomb|limit"):
        load_checkpoint(bomb)
