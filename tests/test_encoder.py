"""The content encoder (ContentVec / HuBERT-base, ``components.encoder``): its Transformers folder, the
model against transformers' own hidden states, and builds, verification and the runtime on a tiny
random-weight encoder (12 layers, 32 wide: v1's layer 9 and v2's layer 12 both exist)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from rvc_compile.components import get_component
from rvc_compile.errors import CalibrationError, CheckpointError, InputError, RecipeError

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "recipes" / "pipeline").glob("encoder-*.yaml"))


@pytest.fixture(scope="session")
def encoder_folder(tmp_path_factory):
    """``folder(**options)`` -> a cached tiny encoder folder (``synthetic.write_encoder_folder`` options)."""
    from rvc_compile.components.encoder.synthetic import write_encoder_folder

    root, cache = tmp_path_factory.mktemp("encoders"), {}

    def folder(**options) -> Path:
        key = tuple(sorted(options.items()))
        if key not in cache:
            name = "_".join(f"{k}-{v}".replace(".", "") for k, v in key) or "default"
            cache[key] = write_encoder_folder(root / name, "tiny", **options)
        return cache[key]

    return folder


def _copy(folder: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(folder, tmp_path / "copy"))


def _tensors(path: Path) -> dict:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, weights_only=True)


def _save(tensors: dict, path: Path) -> None:
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    else:
        torch.save(tensors, path)


# -- the source folder ---------------------------------------------------------------------------

@pytest.mark.parametrize("options", [
    {"safetensors": True, "prefix": ""},
    {"safetensors": False, "prefix": ""},
    {"safetensors": True, "prefix": "hubert."},
    {"safetensors": False, "prefix": "hubert.", "weight_norm": "parametrizations"},
], ids=["safetensors", "bin", "prefixed-safetensors", "prefixed-bin-parametrizations"])
def test_every_layout_and_weights_format_loads_to_the_same_model(encoder_folder, options):
    import torch

    from rvc_compile.components.encoder.folder import read_folder

    reference = read_folder(encoder_folder(), "v2")
    for version in ("v1", "v2"):
        read = read_folder(encoder_folder(**options), version)
        assert read.layout == ("hubert." if options["prefix"] else "plain")
        assert read.weight_norm == options.get("weight_norm", "weight_g")
        assert read.weights_file.name == ("model.safetensors" if options["safetensors"] else "pytorch_model.bin")
        assert read.spec.version == version and read.spec.feature_dim == (16 if version == "v1" else 32)
        # The inference model's tensors only: the layers up to the output layer, final_proj for v1.
        assert not any(name.startswith(f"hubert.encoder.layers.{read.spec.output_layer}.") for name in read.weights)
        assert ("final_proj.weight" in read.weights) == (version == "v1")
        for name, tensor in read.weights.items():
            if name in reference.weights:
                assert torch.equal(tensor, reference.weights[name]), name


def test_the_model_is_transformers_hubert_hidden_states(encoder_folder):
    """v2: HubertModel's hidden_states[12]; v1: hidden_states[9] through final_proj (what RVC takes from
    fairseq's extract_features(output_layer=9/12)), loaded by transformers itself from the same folder."""
    import torch
    from transformers import HubertModel

    from rvc_compile.components.encoder.folder import read_folder
    from rvc_compile.components.encoder.model import build_model

    folder = encoder_folder()
    stored = _tensors(folder / "model.safetensors")
    full = HubertModel.from_pretrained(folder).eval()
    for samples in (400, 16123):
        audio = torch.from_numpy(get_component("content-encoder").example_inputs(None, samples, seed=3)["audio"])
        with torch.inference_mode():
            hidden = full(audio, output_hidden_states=True).hidden_states
        for version, layer in (("v1", 9), ("v2", 12)):
            read = read_folder(folder, version)
            model = build_model(read.spec, read.weights)
            assert len(model.hubert.encoder.layers) == layer  # cut after the output layer
            with torch.inference_mode():
                features = model(audio)
            expected = hidden[layer]
            if version == "v1":
                expected = torch.nn.functional.linear(expected, stored["final_proj.weight"], stored["final_proj.bias"])
            assert features.shape == (1, (samples - 400) // 320 + 1, read.spec.feature_dim)
            assert features.shape[1] == read.spec.frames_of(samples)
            error = float((features - expected).norm() / expected.norm())
            assert error < 1e-5, (version, samples, error)
    assert float((hidden[9] - hidden[12]).norm() / hidden[12].norm()) > 0.3  # the layers differ: the check means something


def _break(kind: str, folder: Path) -> str:
    """Damage ``folder`` one way; return a fragment the error must contain."""
    config, weights = folder / "config.json", folder / "model.safetensors"
    if kind == "no config":
        config.unlink()
        return "no config.json"
    if kind == "bad json":
        config.write_text('{"model_type": "hubert",')
        return "config.json: not valid JSON"
    if kind == "not hubert":
        data = json.loads(config.read_text())
        data.update(model_type="wav2vec2", architectures=["Wav2Vec2Model"])
        config.write_text(json.dumps(data))
        return "config.json: not a HuBERT config"
    if kind == "stable layer norm":
        data = json.loads(config.read_text())
        data["do_stable_layer_norm"] = True
        config.write_text(json.dumps(data))
        return "do_stable_layer_norm"
    if kind == "too few layers":
        data = json.loads(config.read_text())
        data["num_hidden_layers"] = 10
        config.write_text(json.dumps(data))
        return "layer 12, but the config has 10 layers"
    if kind == "no weights":
        weights.unlink()
        return "no weights file"
    if kind == "unreadable safetensors":
        weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
        return "model.safetensors: not a readable safetensors file"
    if kind == "unreadable bin":
        weights.unlink()
        (folder / "pytorch_model.bin").write_bytes(b"PK\x03\x04 garbage")
        return "pytorch_model.bin: not a readable PyTorch weights file"
    tensors = _tensors(weights)
    if kind == "missing tensor":
        del tensors["encoder.layers.3.attention.k_proj.weight"]
        fragment = "missing tensors of the config's HuBERT: encoder.layers.3.attention.k_proj.weight"
    elif kind == "extra tensor":
        tensors["encoder.layers.12.attention.k_proj.weight"] = tensors["encoder.layers.0.attention.k_proj.weight"].clone()
        fragment = "tensors the config's HuBERT does not have: encoder.layers.12.attention.k_proj.weight"
    elif kind == "mis-shaped tensor":
        tensors["feature_projection.projection.weight"] = tensors["feature_projection.projection.weight"][:, :8]
        fragment = "tensor feature_projection.projection.weight has shape [32, 8], the config gives [32, 16]"
    elif kind == "no final_proj":
        del tensors["final_proj.weight"], tensors["final_proj.bias"]
        fragment = "v1 features are layer 9 through final_proj, but the file has no final_proj"
    else:
        raise AssertionError(kind)
    _save(tensors, weights)
    return fragment


BREAKS = ["no config", "bad json", "not hubert", "stable layer norm", "too few layers", "no weights", "unreadable safetensors",
          "unreadable bin", "missing tensor", "extra tensor", "mis-shaped tensor", "no final_proj"]


@pytest.mark.parametrize("kind", BREAKS)
def test_a_damaged_folder_is_one_line_naming_the_file(encoder_folder, tmp_path, kind):
    from rvc_compile.components.encoder.folder import read_folder

    folder = _copy(encoder_folder(), tmp_path)
    fragment = _break(kind, folder)
    with pytest.raises(CheckpointError) as caught:
        read_folder(folder, "v1" if kind == "no final_proj" else "v2")
    message = str(caught.value)
    assert "\n" not in message and fragment in message, message
    assert message.startswith(str(folder)), message


def test_a_missing_or_wrong_source_path_is_named(tmp_path):
    from rvc_compile.components.encoder.folder import read_folder

    with pytest.raises(CheckpointError, match=f"^{tmp_path / 'none'}: no such folder"):
        read_folder(tmp_path / "none", None)
    (tmp_path / "hubert_base.pt").write_bytes(b"fairseq")
    with pytest.raises(CheckpointError, match=r"hubert_base.pt: not a folder; a content encoder source is a Transformers folder"):
        read_folder(tmp_path / "hubert_base.pt", None)


def test_the_cli_reports_a_bad_source_in_one_line(encoder_folder, tmp_path):
    folder = _copy(encoder_folder(), tmp_path)
    _break("not hubert", folder)
    recipe = _recipe(tmp_path, folder)
    result = run_cli("build", recipe)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"error: {folder / 'config.json'}: not a HuBERT config (model_type 'wav2vec2', architectures ['Wav2Vec2Model']); a content encoder source is a ContentVec/HuBERT-base folder"


def test_the_spec_round_trips_and_a_damaged_one_is_refused(encoder_folder):
    from rvc_compile.components.encoder.folder import read_folder
    from rvc_compile.components.encoder.spec import EncoderSpec

    component = get_component("content-encoder")
    spec = read_folder(encoder_folder(), "v1").spec
    data = json.loads(json.dumps(spec.to_dict()))
    assert component.spec_from_dict(data, source="x") == spec and hash(spec) == hash(component.spec_from_dict(data, source="x"))
    assert (spec.hop, spec.receptive_field, spec.output_layer, spec.final_proj) == (320, 400, 9, True)
    assert [spec.frames_of(n) for n in (399, 400, 719, 720, 16000)] == [0, 1, 1, 2, 49]
    for damage, fragment in [({"version": "v3"}, "version 'v3'"), ({"feature_dim": 32}, "feature_dim 32 disagrees with version v1"),
                             ({"hubert": {**data["hubert"], "conv_stride": [5, 2]}}, "one entry per conv layer"),
                             ({"hubert": {**data["hubert"], "hidden_size": "32"}}, "hidden_size must be an integer")]:
        with pytest.raises(CheckpointError, match=fragment):
            EncoderSpec.from_dict({**data, **damage}, source="manifest")


# -- accuracy ------------------------------------------------------------------------------------

def test_compare_reports_cosine_and_relative_error_and_fails_a_length_mismatch(encoder_folder):
    from rvc_compile.components.base import budget_failures
    from rvc_compile.components.encoder.folder import read_folder

    component = get_component("content-encoder")
    spec = read_folder(encoder_folder(), "v2").spec
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((20, 32)).astype(np.float32)
    same = component.compare(spec, reference, reference.copy())
    assert same["min_cosine"] == pytest.approx(1.0) and same["relative_error"] == 0.0 and same["max_abs_error"] == 0.0
    noisy = reference + 0.1 * rng.standard_normal(reference.shape).astype(np.float32)
    metrics = component.compare(spec, reference, noisy)
    assert 0.98 < metrics["min_cosine"] <= metrics["mean_cosine"] < 1 and 0.05 < metrics["relative_error"] < 0.2
    assert budget_failures(component, metrics, {"min_cosine": 0.999, "max_relative_error": 0.5}) == [f"min_cosine {metrics['min_cosine']:.4g} < min_cosine 0.999"]
    short = component.compare(spec, reference, reference[:-1])
    assert short["length_mismatch"] == -32 and budget_failures(component, short, component.default_budget("fp32")) == ["output has -32 samples against the reference"]
    broken = reference.copy()
    broken[3, 4] = np.nan
    assert budget_failures(component, component.compare(spec, reference, broken), component.default_budget("int8")) == ["output has 1 NaN/Inf samples"]
    assert component.flops_per_second(spec, {})["total"] > component.flops_per_second(spec, {})["feature_extractor"] > 0


def test_base_sizes_count_flops_like_hubert_base():
    from rvc_compile.components.encoder.spec import EncoderSpec
    from rvc_compile.components.encoder.synthetic import encoder_config

    component = get_component("content-encoder")
    v2 = EncoderSpec.from_config(encoder_config("base"), "v2", source="base")
    v1 = EncoderSpec.from_config(encoder_config("base"), "v1", source="base")
    flops = component.flops_per_second(v2, {})
    # conv stack ~4.9 GFLOP/s; 12 layers of ~0.79 GFLOP/s each (attention at 10 s)
    assert 4.5e9 < flops["feature_extractor"] < 5.5e9 and 13e9 < flops["total"] < 17e9
    assert component.flops_per_second(v1, {})["total"] < flops["total"]
    assert component.profile_group(v2, "hubert.encoder.layers.11.attention.q_proj") == "encoder.layers.11"
    assert component.profile_group(v2, "hubert.feature_extractor.conv_layers.0.conv.weight") == "feature_extractor"
    assert component.profile_group(v2, "val_123") is None


# -- calibration ---------------------------------------------------------------------------------

class _Calibration:
    def __init__(self, **values):
        self.source, self.path, self.count, self.seconds, self.seed, self.speech = "generated", None, 4, 1.0, 0, []
        self.__dict__.update(values)


class _Shapes:
    min_frames, max_frames, opt_frames, mode, chunk_frames = 400, 48000, 16000, "dynamic", None


class _Recipe:
    def __init__(self, **values):
        self.calibration, self.shapes = _Calibration(**values), _Shapes()


def test_calibration_feeds_are_speech_of_spread_lengths_from_every_source(encoder_folder, tmp_path):
    import soundfile

    from rvc_compile.components.encoder.folder import read_folder

    component = get_component("content-encoder")
    spec = read_folder(encoder_folder(), "v2").spec
    log = []

    def feeds(**values):
        return component.calibration_feeds(spec, _Recipe(**values), ["audio"], static=None, speaker=0, cache_dir=None, log=log.append)

    generated, digest, description = feeds()
    lengths = [feed["audio"].shape[1] for feed in generated]  # spread: the graph's shortest input to calibration.seconds
    assert lengths[0] == 400 and lengths[-1] == 16000 and lengths == sorted(set(lengths)) and len(lengths) == 4
    assert all(feed["audio"].dtype == np.float32 and np.abs(feed["audio"]).max() > 0.01 for feed in generated)
    assert feeds()[1] == digest and feeds(seed=1)[1] != digest and "generated: 4 crops" in description
    static, _, _ = component.calibration_feeds(spec, _Recipe(), ["audio"], static=3200, speaker=0, cache_dir=None, log=log.append)
    assert {feed["audio"].shape for feed in static} == {(1, 3200)}

    logs = tmp_path / "logs" / "voice"
    (logs / "1_16k_wavs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(6):
        soundfile.write(logs / "1_16k_wavs" / f"0_{index}.wav", 0.1 * rng.standard_normal(24000 + 1000 * index), 16000, subtype="PCM_16")
    cases, _, description = feeds(source="rvc-logs", path=logs)
    assert len(cases) == 4 and cases[-1]["audio"].shape == (1, 16000) and "1_16k_wavs: 4 utterance(s)" in description

    npz = tmp_path / "npz"
    npz.mkdir()
    np.savez(npz / "a.npz", audio=0.1 * rng.standard_normal(48000).astype(np.float32), sample_rate=48000)
    cases, _, _ = feeds(source="npz", path=npz, count=1)
    assert cases[0]["audio"].shape == (1, 16000)
    np.savez(npz / "b.npz", features=np.zeros((10, 768), np.float32))
    with pytest.raises(CalibrationError, match=r"b.npz: no 'audio' array"):
        feeds(source="npz", path=npz)
    (tmp_path / "logs" / "empty").mkdir()
    with pytest.raises(CalibrationError, match=r"empty: no 1_16k_wavs folder"):
        feeds(source="rvc-logs", path=tmp_path / "logs" / "empty")


# -- build, verify, runtime ------------------------------------------------------------------------

def _recipe(directory: Path, folder: Path, *, name: str = "encoder", backend: str = "onnxruntime", precision: str = "fp32",
            features: str = "v2", extra: str = "") -> Path:
    text = textwrap.dedent(f"""
    name: {name}
    version: 1.0.0
    source:
      component: content-encoder
      checkpoint: {folder}
      features: {features}
    target:
      backend: {backend}
      precision: {precision}
      threads: 2
    shapes:
      min_frames: {1600 if precision == 'int8' else 400}
      opt_frames: 16000
      max_frames: 48077
      check_frames: [16123]
    latency:
      seconds: [0.5]
      repeat: 2
      warmup: 1
    golden:
      seconds: [0.3, 1.5]
    output_dir: {directory / 'artifacts'}
    """) + textwrap.dedent(extra)
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path


INT8 = """
precision_policy:
  keep_fp32: [hubert.feature_extractor]
calibration:
  source: generated
  count: 6
  seconds: 2.0
"""


def _check_runtime(artifact: Path, folder: Path, version: str, *, fp32: bool) -> None:
    import torch

    from rvc_compile import runtime
    from rvc_compile.components.encoder.folder import read_folder
    from rvc_compile.components.encoder.model import build_model

    encoder = runtime.load(artifact)
    assert type(encoder).__name__ == "CompiledEncoder" and encoder.kind == "content-encoder"
    read = read_folder(folder, version)
    assert (encoder.feature_dim, encoder.version, encoder.hop_length) == (read.spec.feature_dim, version, 320)
    model = build_model(read.spec, read.weights)
    rng = np.random.default_rng(5)
    lengths = [n for n in (400, 1000, 1601, 16000, 16123, 23457, 48077) if n >= encoder.min_samples]  # most not multiples of 320
    for samples in lengths:
        audio = get_component("content-encoder").example_inputs(read.spec, samples, seed=int(rng.integers(1000)))["audio"][0]
        features = encoder.encode(audio)
        with torch.inference_mode():
            expected = model(torch.from_numpy(audio)[None])[0].numpy()
        assert features.shape == expected.shape == ((samples - 400) // 320 + 1, read.spec.feature_dim)
        metrics = encoder.compare(expected, features)
        if fp32:
            assert metrics["relative_error"] < 1e-4, (samples, metrics)
        else:
            assert metrics["min_cosine"] > 0.9 and metrics["relative_error"] < 0.5, (samples, metrics)
    with pytest.raises(InputError, match=f"^{artifact}: the audio has NaN or Inf samples"):
        encoder.encode(np.full(16000, np.nan, np.float32))
    with pytest.raises(InputError, match=f"^{artifact}: {encoder.min_samples - 1} samples; the content encoder needs at least {encoder.min_samples}"):
        encoder.encode(np.zeros(encoder.min_samples - 1, np.float32))
    with pytest.raises(InputError, match="takes at most 48077"):
        encoder.encode(np.zeros(48078, np.float32))


def test_a_tiny_encoder_builds_verifies_and_encodes_with_the_cli(encoder_folder, tmp_path):
    """``rvc-compile build`` and ``verify`` of an ONNX Runtime fp32 encoder; the runtime's ``encode`` equals
    the torch model at lengths no check used (any sample count: the graph's axis is the samples)."""
    folder = encoder_folder()
    built = run_cli("build", _recipe(tmp_path, folder))
    assert built.returncode == 0, built.stderr
    artifact = tmp_path / "artifacts" / "encoder" / "1.0.0"
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["component"]["kind"] == "content-encoder" and manifest["component"]["spec"]["version"] == "v2"
    assert manifest["signature"]["inputs"] == [{"name": "audio", "dtype": "float32", "shape": [1, "frames"]}]
    assert manifest["signature"]["outputs"] == [{"name": "features", "dtype": "float32", "shape": [1, "feature_frames", 32]}]
    assert manifest["signature"]["axes"]["frames"] == {"unit": "samples", "per_second": 16000.0}
    assert {k: manifest["model"][k] for k in ("sample_rate", "hop_length", "receptive_field", "feature_dim", "output_layer", "final_proj", "version")} == \
        {"sample_rate": 16000, "hop_length": 320, "receptive_field": 400, "feature_dim": 32, "output_layer": 12, "final_proj": False, "version": "v2"}
    assert manifest["model"]["window"] is None and manifest["golden"][0]["frames"] == 4800
    verified = run_cli("verify", artifact)
    assert verified.returncode == 0 and "min cosine" in verified.stdout, verified.stdout + verified.stderr
    _check_runtime(artifact, folder, "v2", fp32=True)


@pytest.mark.slow
# OpenVINO int8 (v2): the shipped int8 recipe's test below.
@pytest.mark.parametrize("backend,precision,version", [("onnxruntime", "int8", "v1"), ("openvino", "fp32", "v1")])
def test_a_tiny_encoder_builds_with_each_backend_and_precision(encoder_folder, tmp_path, backend, precision, version):
    folder = encoder_folder(prefix="hubert.", safetensors=False)
    recipe = _recipe(tmp_path, folder, backend=backend, precision=precision, features=version, extra=INT8 if precision == "int8" else "")
    built = run_cli("build", recipe)
    assert built.returncode == 0, built.stderr
    artifact = tmp_path / "artifacts" / "encoder" / "1.0.0"
    report = json.loads((artifact / "report.json").read_text())
    if precision == "int8":
        kept = report["precision"]["keep_fp32"]
        assert "hubert.encoder.layers.0.attention.matmul" in kept and "hubert.feature_extractor.conv_layers.0.conv" in kept
    verified = run_cli("verify", artifact)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    _check_runtime(artifact, folder, version, fp32=precision == "fp32")


def test_an_encoder_recipe_needs_at_least_one_frame_of_samples(encoder_folder, tmp_path):
    from rvc_compile.build.pipeline import build
    from rvc_compile.recipe.schema import load_recipe

    recipe = load_recipe(_recipe(tmp_path, encoder_folder()), ["shapes.min_frames=100"])
    with pytest.raises(RecipeError, match=r"shapes.min_frames: 100 is below 400: a content encoder's frames are 16 kHz input samples"):
        build(recipe, cache_dir=tmp_path / "cache", log=lambda message: None)
    with pytest.raises(RecipeError, match="source.config: not used by content-encoder sources"):
        build(load_recipe(_recipe(tmp_path, encoder_folder()), [f"source.config={tmp_path}"]), cache_dir=tmp_path / "cache", log=lambda m: None)


def test_the_runtime_side_of_the_encoder_imports_no_torch():
    code = ("import sys, rvc_compile.runtime; from rvc_compile.components import get_component; c = get_component('content-encoder'); "
            "import rvc_compile.components.encoder.compiled, rvc_compile.components.encoder.inputs; "
            "c.example_inputs(None, 1000, 0); print('torch' in sys.modules, 'transformers' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False False"


# -- shipped recipes -------------------------------------------------------------------------------

def test_the_shipped_encoder_recipes_load():
    from rvc_compile.recipe.schema import load_recipe

    assert SHIPPED, "recipes/pipeline/encoder-*.yaml"
    for path in SHIPPED:
        recipe = load_recipe(path)
        assert recipe.source.component == "content-encoder" and recipe.shapes.min_frames >= 400
        if recipe.target.precision == "int8":
            assert recipe.precision_policy.keep_fp32 == ["hubert.feature_extractor"]


@pytest.mark.slow
@pytest.mark.parametrize("recipe", SHIPPED, ids=[path.stem for path in SHIPPED])
def test_a_shipped_encoder_recipe_builds_and_verifies(encoder_folder, tmp_path, recipe):
    built = run_cli(
        "build", recipe, "--set", f"source.checkpoint={encoder_folder()}", "--out", tmp_path, "--set", "shapes.max_frames=48077",
        "--set", "shapes.opt_frames=16000", "--set", "latency.repeat=1", "--set", "latency.warmup=0", "--set", "latency.seconds=[0.5]",
        "--set", "golden.seconds=[0.5]",
        *(["--set", "target.cpu=portable", "--set", "calibration.count=4", "--set", "calibration.seconds=1.0"] if "int8" in recipe.stem else []),
    )
    assert built.returncode == 0, built.stderr
    (artifact,) = [path.parent for path in tmp_path.rglob("manifest.json")]
    verified = run_cli("verify", artifact)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    if "int8" in recipe.stem:  # the attention's activation products stay fp32 by themselves
        kept = json.loads((artifact / "report.json").read_text())["precision"]["keep_fp32"]
        assert "hubert.encoder.layers.0.attention.matmul" in kept and "hubert.feature_extractor.conv_layers.0.conv" in kept
        _check_runtime(artifact, encoder_folder(), "v2", fp32=False)
