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

from rvc_compile.components.synthesizer.checkpoint import load_checkpoint
from rvc_compile.errors import CheckpointError
from rvc_compile.components.synthesizer.reference import ReferenceModel
from rvc_compile.components.synthesizer.synthetic import make_checkpoint

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
    from rvc_compile.components.synthesizer.synthetic import checkpoint_config

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
def test_a_pickle_that_runs_code_is_refused_and_never_runs(tmp_path, container, hostile):
    hostile.case("Hostile checkpoints", f"pickle whose __reduce__ calls os.system('touch MARKER') ({container})", expect="CheckpointError naming the file; MARKER never created")
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


def test_state_dict_from_another_model_is_refused(tmp_path, hostile):
    hostile.case("Hostile checkpoints", "ResNet-like state dict, bare and under 'model'", count=2, expect="CheckpointError 'not an RVC ...'")
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


def test_archive_declaring_huge_tensors_is_refused_before_reading(tmp_path, checkpoint_factory, hostile):
    hostile.case("Hostile checkpoints", "zip bomb: a member of 64 MiB of zeros deflated to KiB beside the real members", expect="CheckpointError 'zip bomb' before torch reads the archive")
    source = checkpoint_factory()
    bomb = tmp_path / "bomb.pth"
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(bomb, "w") as out:
        for info in original.infolist():
            out.writestr(info, original.read(info))
        # A member that inflates 1000x: 64 MiB of zeros compressed to a few KiB.
        out.writestr(zipfile.ZipInfo("archive/data/999"), b"\0" * (64 << 20), compress_type=zipfile.ZIP_DEFLATED)
    with pytest.raises(CheckpointError, match="zip bomb|limit"):
        load_checkpoint(bomb)


# -- hostile checkpoints: code, bombs, other model families (docs/RELIABILITY.md) ------------------

def _payload_calling(function, *args):
    """A pickle-able object whose unpickling calls ``function(*args)``."""

    class Call:
        def __reduce__(self):
            return (function, args)

    return Call()


def _code_vectors(marker: Path) -> dict[str, bytes]:
    """Pickles that would create ``marker`` if unpickled with a full unpickler, by every route we know."""
    import builtins
    import os
    import subprocess

    import numpy as np

    touch = f"touch {marker}"
    write = f"open({str(marker)!r}, 'w').close()"
    vectors = {
        "os.system via __reduce__": pickle.dumps({"weight": _payload_calling(os.system, touch)}, protocol=2),
        "builtins.exec via __reduce__": pickle.dumps({"config": [_payload_calling(builtins.exec, write)]}, protocol=4),
        "builtins.eval via __reduce__": pickle.dumps({"info": _payload_calling(builtins.eval, write)}, protocol=5),
        "subprocess.Popen via __reduce__": pickle.dumps([_payload_calling(subprocess.Popen, ["touch", str(marker)])], protocol=3),
        "protocol-0 GLOBAL os.system + REDUCE": b"cos\nsystem\n(S'" + touch.encode() + b"'\ntR.",
        "protocol-0 INST posix.system": b"(S'" + touch.encode() + b"'\nipos" + b"ix\nsystem\n.",
        "protocol-4 STACK_GLOBAL builtins.exec": (
            b"\x80\x04\x95" + (0).to_bytes(8, "little")
            + b"\x8c\x08builtins\x94\x8c\x04exec\x94\x93\x94" + b"\x8c" + bytes([len(write)]) + write.encode() + b"\x94\x85\x94R\x94."
        ),
        "object inside a numpy object array": pickle.dumps({"weight": np.array([_payload_calling(os.system, touch)], dtype=object)}, protocol=2),
        "nested deep inside the weights dict": pickle.dumps({"weight": {"a": [{"b": (_payload_calling(os.system, touch),)}]}, "config": []}),
    }
    return vectors


@pytest.mark.parametrize("container", ["raw pickle", "torch zip (data.pkl)", "legacy torch (pre-1.6)"])
def test_every_code_execution_route_is_refused_and_never_runs(tmp_path, container, hostile):
    marker = tmp_path / "pwned"
    vectors = _code_vectors(marker)
    row = hostile.case("Hostile checkpoints", f"pickles that would run code, {container}: " + "; ".join(vectors), count=0,
                       expect="CheckpointError naming the file; MARKER never created")
    for name, data in vectors.items():
        path = tmp_path / f"{name.replace(' ', '_').replace('/', '_')}.pth"
        if container == "raw pickle":
            path.write_bytes(data)
        elif container == "torch zip (data.pkl)":
            # torch's own container with the hostile pickle as its data.pkl (torch.save would run __reduce__ itself).
            torch.save({"weight": {}}, path)
            with zipfile.ZipFile(path) as original:
                members = {info.filename: original.read(info) for info in original.infolist()}
            with zipfile.ZipFile(path, "w") as out:
                for member, content in members.items():
                    out.writestr(member, data if member.endswith("data.pkl") else content)
        else:
            legacy = io.BytesIO()
            torch.save({"weight": {}}, legacy, _use_new_zipfile_serialization=False)
            # The legacy format is a sequence of pickles: magic, protocol, sys info, then the payload.
            path.write_bytes(_replace_last_legacy_pickle(legacy.getvalue(), data))
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value), name
        assert not marker.exists(), f"{name}: unpickling ran code"
        row.count += 1
        row.observe(str(info.value).removeprefix(f"{path}: ").split(" (")[0][:50])


def _replace_last_legacy_pickle(data: bytes, payload: bytes) -> bytes:
    """Legacy torch files hold several pickles back to back; swap the payload (the 4th) for ``payload``."""
    stream = io.BytesIO(data)
    for _ in range(3):  # magic number, protocol version, sys info
        pickle.load(stream)
    return data[: stream.tell()] + payload + data[stream.tell():][len(_first_pickle(data[stream.tell():])):]


def _first_pickle(data: bytes) -> bytes:
    stream = io.BytesIO(data)

    class Reader(pickle.Unpickler):
        def find_class(self, module, name):  # never resolve anything: only find where the pickle ends
            return lambda *args, **kwargs: None

        def persistent_load(self, pid):
            return None

    Reader(stream).load()
    return data[: stream.tell()]


def _shared_reference_bomb(depth: int = 9, width: int = 10) -> list:
    """A list nested ``depth`` deep, each level ``width`` references to the one below: ~1 MB pickled,
    ``width ** depth`` leaves when walked or printed."""
    bomb: list = ["lol"]
    for _ in range(depth):
        bomb = [bomb] * width
    return bomb


def _lying_zip(path: Path, member: str, declared: int) -> None:
    """Rewrite the sizes an archive declares for ``member`` (local header and central directory)."""
    import struct

    data = bytearray(path.read_bytes())
    name = member.encode()
    for signature, name_length_at, sizes_at, name_at in ((b"PK\x03\x04", 26, 18, 30), (b"PK\x01\x02", 28, 20, 46)):
        position = data.find(signature)
        while position >= 0:
            length = struct.unpack_from("<H", data, position + name_length_at)[0]
            if bytes(data[position + name_at: position + name_at + length]) == name:
                struct.pack_into("<II", data, position + sizes_at, declared, declared)
            position = data.find(signature, position + 4)
    path.write_bytes(bytes(data))


def _tensor_claiming(path: Path, storage_bytes: int, shape: tuple[int, ...], record: bytes) -> Path:
    """A torch zip whose pickle declares a storage of ``storage_bytes`` and a tensor of ``shape`` over a
    ``record`` of other length: what a crafted file claims, not what it holds."""
    import collections

    class Storage:
        pass

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.UntypedStorage, "0", "cpu", storage_bytes) if isinstance(obj, Storage) else None

    tensor = _payload_calling(torch._utils._rebuild_tensor_v2, Storage(), 0, shape, (1,) * len(shape), False, collections.OrderedDict())
    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({"weight": {"enc_p.emb_phone.weight": tensor}, "config": []})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/data/0", record)
        archive.writestr("archive/version", "3\n")
    return path


MEMORY_PROBE = r"""
import json, resource, sys, time
from rvc_compile.components.synthesizer.checkpoint import load_checkpoint
from rvc_compile.errors import CheckpointError
load_checkpoint(sys.argv[1])  # warm up: imports, allocator, a real load's peak
for path in sys.argv[2:]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        load_checkpoint(path)
        result = "loaded"
    except CheckpointError as exc:
        result = "CheckpointError: " + str(exc)
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(json.dumps({"path": path, "result": result, "peak_growth_mb": grown, "seconds": time.perf_counter() - start}), flush=True)
"""


def test_bombs_and_huge_claims_are_refused_without_spending_memory_or_time(tmp_path, checkpoint_factory, hostile):
    """Each crafted file is loaded in a fresh process after a real checkpoint; its peak RSS may not grow by
    more than 64 MB over that load, and each case must finish in seconds (a bomb would take minutes)."""
    import json
    import subprocess
    import sys

    good = checkpoint_factory()
    payload = _small_payload(checkpoint_factory)
    bomb = _shared_reference_bomb()
    cases: dict[str, tuple[Path, str]] = {}

    def case(name: str, path: Path, expected: str) -> None:
        cases[name] = (path, expected)

    deflated = tmp_path / "deflate_bomb.pth"
    with zipfile.ZipFile(good) as original, zipfile.ZipFile(deflated, "w") as out:
        for info in original.infolist():
            out.writestr(info, original.read(info))
        out.writestr(zipfile.ZipInfo("archive/data/999"), b"\0" * (128 << 20), compress_type=zipfile.ZIP_DEFLATED)
    case("zip bomb: 128 MiB of zeros deflated into one extra member", deflated, "zip bomb")
    over = tmp_path / "declares_5GiB.pth"
    with zipfile.ZipFile(over, "w") as archive:
        for index in range(2):
            archive.writestr(f"archive/data/{index}", b"\0" * 16)
    _lying_zip(over, "archive/data/0", 3 << 30)
    _lying_zip(over, "archive/data/1", 3 << 30)
    case("zip headers declaring 6 GiB of members in a 400-byte file", over, "limit")
    lying = _tensor_claiming(tmp_path / "lying_sizes.pth", 3 << 30, (3 << 28,), b"\0" * 16)
    _lying_zip(lying, "archive/data/0", 3 << 30)
    case("zip headers and pickle both claiming a 3 GiB tensor that is 16 bytes", lying, "crafted archive")
    case("pickle claiming a 64 GiB storage over a 16-byte record", _tensor_claiming(tmp_path / "huge_storage.pth", 1 << 36, (1 << 34,), b"\0" * 16), "corrupt")
    case("pickle claiming a 2^36-element tensor over a 16-byte storage", _tensor_claiming(tmp_path / "huge_view.pth", 16, (1 << 36,), b"\0" * 16), "corrupt")
    for field in ("info", "f0", "version", "sr", "config"):
        path = tmp_path / f"bomb_{field}.pth"
        torch.save({**payload, field: bomb}, path)
        case(f"shared-reference pickle bomb (~1 MB, 10^9 values when walked or hashed) as '{field}'", path, "the pickle expands to")
    path = tmp_path / "bomb_config_entry.pth"
    config = list(payload["config"])
    config[10] = bomb
    torch.save({**payload, "config": config}, path)
    case("shared-reference pickle bomb as config entry resblock_kernel_sizes", path, "the pickle expands to")
    path = tmp_path / "bomb_key.pth"
    key: tuple = ("lol",)
    for _ in range(9):
        key = (key,) * 10
    torch.save({key: 1}, path)
    case("shared-reference pickle bomb as a top-level dict key (hashed by the unpickler itself)", path, "the pickle expands to")
    path = tmp_path / "huge_config.pth"
    config = list(payload["config"])
    config[6] = 10**9  # n_layers: building the layer list alone would take hours
    torch.save({**payload, "config": config}, path)
    case("config claiming 10^9 encoder layers", path, "out of range")

    path = tmp_path / "cycle.pth"
    cyclic: list = []
    cyclic.append(cyclic)
    path.write_bytes(pickle.dumps({"weight": {}, "config": cyclic}))
    case("pickle holding a reference cycle (a list inside itself)", path, "reference cycle")
    path = tmp_path / "deep.pth"
    # {"config": [[[...]]]}, written opcode by opcode (pickle.dumps itself would hit the recursion limit):
    # EMPTY_DICT, the key, 5000 x EMPTY_LIST, 4999 x APPEND (each into the list below), SETITEM, STOP.
    path.write_bytes(b"\x80\x02}X\x06\x00\x00\x00config" + b"]" * 5000 + b"a" * 4999 + b"s.")
    case("pickle nesting lists 5000 deep", path, "nested 500")

    rows = {name: hostile.case("Hostile checkpoints", name, expect=f"CheckpointError '{expected}', peak RSS +<64 MB, <20 s")
            for name, (path, expected) in cases.items()}
    process = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(good), *(str(path) for path, _ in cases.values())],
                             capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr[-2000:]
    results = [json.loads(line) for line in process.stdout.splitlines()]
    assert len(results) == len(cases)
    for (name, (path, expected)), result in zip(cases.items(), results):
        assert expected in result["result"] and str(path) in result["result"], (name, result)
        assert result["peak_growth_mb"] < 64, (name, result)
        assert result["seconds"] < 20, (name, result)
        rows[name].note(f"peak RSS +{result['peak_growth_mb']:.0f} MB, {result['seconds']:.2f} s")


def _other_families(tmp_path: Path, payload: dict) -> dict[str, tuple[Path, str]]:
    """Files users mistake for an RVC voice model, each with the fragment its error must contain."""
    import numpy as np

    files: dict[str, tuple[Path, str]] = {}

    def file_name(name: str) -> str:
        return "".join(ch if ch.isalnum() else "_" for ch in name.split(" (")[0]) + ".pth"

    def save(name: str, data, fragment: str) -> None:
        files[name] = (_save(tmp_path / file_name(name), data), fragment)

    def raw(name: str, data: bytes, fragment: str) -> None:
        path = tmp_path / file_name(name)
        path.write_bytes(data)
        files[name] = (path, fragment)

    save("RVC discriminator D_2333.pth (training)", {"model": {f"discriminators.{i}.convs.0.weight_v": torch.zeros(4, 1, 5) for i in range(3)},
                                                    "iteration": 2333, "optimizer": {}, "learning_rate": 1e-4}, "discriminator")
    save("HuBERT / ContentVec (fairseq)", {"model": {"feature_extractor.conv_layers.0.0.weight": torch.zeros(512, 1, 10)}, "cfg": {"model": {}}, "args": None},
         "not an RVC synthesizer")
    save("RMVPE pitch model", {"unet.encoder.bn.weight": torch.zeros(1), "fc.0.gru.weight_ih_l0": torch.zeros(3, 3)}, "not an RVC checkpoint")
    save("Stable Diffusion (state_dict)", {"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(3)}}, "not an RVC checkpoint")
    save("so-vits-svc generator", {"model": {"enc_p.f0_emb.weight": torch.zeros(256, 192), "emb_g.weight": torch.zeros(1, 256),
                                             "dec.conv_pre.weight": torch.zeros(512, 192, 7)}, "iteration": 1}, "not an RVC synthesizer")
    save("VITS / GPT-SoVITS text-to-speech", {"weight": {"enc_p.emb.weight": torch.zeros(178, 192)}, "config": []}, "not an RVC synthesizer")
    save("Applio model with the RefineGAN vocoder", {**payload, "vocoder": "RefineGAN"}, "vocoder 'RefineGAN'")
    save("Applio model with the MRF HiFi-GAN vocoder", {**payload, "vocoder": "MRF HiFi-GAN"}, "vocoder 'MRF HiFi-GAN'")
    raw("safetensors file", b"\x10\x00\x00\x00\x00\x00\x00\x00" + b'{"__metadata__":{}}', "not a PyTorch checkpoint")
    raw("ONNX graph renamed .pth", b"\x08\x07\x12\x07pytorch\x1a\x052.0.0", "not a PyTorch checkpoint")
    raw("faiss .index file renamed .pth", b"IxF2" + b"\0" * 64, "not a PyTorch checkpoint")
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((4, 768), np.float32))
    raw("numpy .npy features", buffer.getvalue(), "not a PyTorch checkpoint")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("voice/readme.txt", "a zip of a voice model folder")
    raw("zip of a model folder", buffer.getvalue(), "corrupt")
    save("a bare tensor", torch.zeros(3), "top level is Tensor")
    save("a list of state dicts", [payload["weight"]], "top level is list")
    return files


def test_checkpoints_of_other_model_families_get_a_clear_error(tmp_path, checkpoint_factory, hostile):
    files = _other_families(tmp_path, _small_payload(checkpoint_factory))
    for name, (path, fragment) in files.items():
        row = hostile.case("Hostile checkpoints", f"another model family: {name}", expect=f"CheckpointError containing '{fragment}'")
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        message = str(info.value)
        assert fragment in message and str(path) in message and "\n" not in message, (name, message)
        row.note(f"'{message.removeprefix(str(path) + ': ')[:90]}'")


def test_other_model_families_exit_2_with_one_line_on_the_command_line(tmp_path, checkpoint_factory, hostile):
    from conftest import assert_user_error, run_cli

    files = _other_families(tmp_path, _small_payload(checkpoint_factory))
    chosen = ["RVC discriminator D_2333.pth (training)", "Applio model with the RefineGAN vocoder", "safetensors file"]
    hostile.case("Hostile checkpoints", "another model family via `rvc-compile inspect`: " + ", ".join(chosen), count=len(chosen),
                 expect="exit 2, one stderr line naming the file, no traceback")
    for name in chosen:
        path, fragment = files[name]
        assert_user_error(run_cli("inspect", path), path.name, fragment)


def test_malformed_rvc_like_payloads_are_one_line_errors(tmp_path, checkpoint_factory, hostile):
    """Structures the loader walks, each malformed in a way no format check names."""
    payload = _small_payload(checkpoint_factory)
    weights = payload["weight"]
    key_g = next(k for k in weights if k.endswith("weight_g"))
    mutations = {
        "sparse weight tensor": {"weight": {**weights, "enc_p.emb_phone.weight": weights["enc_p.emb_phone.weight"].float().to_sparse()}},
        "meta-device weight (no data)": {"weight": {**weights, "enc_p.emb_phone.weight": torch.zeros(32, 768, device="meta")}},
        "1-D feature embedding": {"weight": {**weights, "enc_p.emb_phone.weight": torch.zeros(3)}},
        "empty speaker embedding": {"weight": {**weights, "emb_g.weight": torch.zeros(0, 16)}},
        "scalar weight-norm magnitude": {"weight": {**weights, key_g: torch.zeros(())}},
        "integer weight names": {"weight": {1: torch.zeros(1)}},
        "config entry of 10^30": {"config": [*payload["config"][:3], 10**30, *payload["config"][4:]]},
        "config entry that is a dict": {"config": [*payload["config"][:9], {"a": 1}, *payload["config"][10:]]},
        "'sr' of 44100 Hz beside a 40 kHz config": {"sr": 44100},
        "'version' that is a dict": {"version": {"v": 2}},
        "'f0' of 7": {"f0": 7},
        "weights that are a list": {"weight": [1, 2]},
        "training layout with non-numeric upsample index": {"weight": None, "config": None, "model": {**{k: v for k, v in weights.items()}, "dec.ups.x.weight": torch.zeros(1, 1, 1)}},
    }
    row = hostile.case("Hostile checkpoints", "RVC-shaped payloads malformed inside: " + "; ".join(mutations), count=0,
                       expect="CheckpointError, one line naming the file (no TypeError/IndexError traceback)")
    for name, change in mutations.items():
        data = {**payload, **change}
        if data.get("weight") is None:
            data = {key: value for key, value in data.items() if value is not None and key not in ("config",)}
            data.pop("weight", None)
        path = _save(tmp_path / "malformed.pth", data)
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value), name
        row.count += 1
