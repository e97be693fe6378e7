"""Pipeline bundles (docs/CONVERT.md): one recipe builds the synthesizer, the content encoder and RMVPE
into one verified bundle; ``verify`` checks it whole, ``convert`` and ``runtime.load`` run it, and a
bundle whose parts do not fit or were changed is refused with one line naming the file.

Sources are tiny and random-weight: a small v1 voice (256-dim features), a tiny encoder with the v1
output (``tiny-v1``), a narrow RMVPE; every build shares one cache, so later builds reuse components.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_user_error, run_cli
from rvc_compile.artifact.manifest import MANIFEST
from rvc_compile.errors import ArtifactError

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT / "calibration" / "data" / "arctic_a0001.wav"

SYNTH = """name: tiny-voice
version: 1.0.0
source: {{checkpoint: {checkpoint}}}
target: {{backend: onnxruntime, device: cpu, precision: fp32, threads: 1}}
shapes: {{mode: dynamic, min_frames: 8, opt_frames: 100, max_frames: 400}}
capture: {{exporter: torchscript}}
passes: [{{name: host_source}}]
latency: {{seconds: [0.1], repeat: 1, warmup: 0}}
golden: {{seconds: [0.1], noise: "seed:3"}}
"""
ENCODER = """name: tiny-encoder
version: 1.0.0
source: {{component: content-encoder, checkpoint: {checkpoint}, features: {features}}}
target: {{backend: onnxruntime, device: cpu, precision: fp32, threads: 1}}
shapes: {{mode: dynamic, min_frames: 400, opt_frames: 16000, max_frames: 160000}}
latency: {{seconds: [0.1], repeat: 1, warmup: 0}}
golden: {{seconds: [0.5]}}
"""
RMVPE = """name: tiny-rmvpe
version: 1.0.0
source: {{component: rmvpe, checkpoint: {checkpoint}}}
target: {{backend: onnxruntime, device: cpu, precision: fp32, threads: 1}}
shapes: {{mode: dynamic, min_frames: 32, opt_frames: 300, max_frames: 2000}}
capture: {{exporter: torchscript}}
latency: {{seconds: [0.1], repeat: 1, warmup: 0}}
golden: {{seconds: [0.5]}}
"""
PIPELINE = """kind: pipeline
name: {name}
version: 1.0.0
synthesizer: {{recipe: synth.yaml}}
encoder: {{recipe: {encoder}}}
pitch: {{recipe: rmvpe.yaml}}
settings: {{f0_method: rmvpe, index_rate: 0.75, pitch_shift: 2}}
golden: {{seconds: 1.0, audio: [{speech}]}}
output_dir: out
"""


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A folder with the three sources, their build recipes and a shared build cache."""
    from rvc_compile.components.encoder.synthetic import write_encoder_folder
    from rvc_compile.components.pitch.synthetic import write_rmvpe
    from rvc_compile.components.synthesizer.synthetic import make_checkpoint

    root = tmp_path_factory.mktemp("bundle")
    make_checkpoint(root / "voice.pth", version="v1", sample_rate="40k", f0=True, size="small")
    write_encoder_folder(root / "encoder-v1", "tiny-v1")
    write_encoder_folder(root / "encoder-v2", "tiny")  # 32-dim: fits no voice
    write_rmvpe(root / "rmvpe.pt", width=2)
    (root / "synth.yaml").write_text(SYNTH.format(checkpoint=root / "voice.pth"))
    (root / "encoder.yaml").write_text(ENCODER.format(checkpoint=root / "encoder-v1", features="v1"))
    (root / "encoder-v2.yaml").write_text(ENCODER.format(checkpoint=root / "encoder-v2", features="v2"))
    (root / "rmvpe.yaml").write_text(RMVPE.format(checkpoint=root / "rmvpe.pt"))
    return root


def pipeline_recipe(root: Path, name: str, *, encoder: str = "encoder.yaml", extra: str = "") -> Path:
    path = root / f"{name}.yaml"
    path.write_text(PIPELINE.format(name=name, encoder=encoder, speech=SPEECH) + extra)
    return path


def build_cli(root: Path, recipe: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli("build", recipe, "--cache-dir", root / "cache", *args, cwd=root)


@pytest.fixture(scope="module")
def bundle(sources) -> Path:
    process = build_cli(sources, pipeline_recipe(sources, "tiny-pipeline"))
    assert process.returncode == 0, process.stderr
    path = Path(process.stdout.strip().splitlines()[-1])
    assert path == sources / "out" / "tiny-pipeline" / "1.0.0"
    return path


def _speech(seconds: float = 1.5) -> tuple[np.ndarray, int]:
    import soundfile

    audio, rate = soundfile.read(SPEECH, dtype="float32")
    return audio[: int(seconds * rate)], rate


# -- build and its record ------------------------------------------------------------------------

def test_bundle_names_its_components_by_hash_and_carries_the_settings(bundle):
    from rvc_compile.hashing import sha256_file

    manifest = json.loads((bundle / MANIFEST).read_text())
    assert manifest["kind"] == "pipeline" and manifest["sample_rate"] == 40000 and manifest["feature_dim"] == 256
    assert set(manifest["components"]) == {"synthesizer", "encoder", "pitch"}
    kinds = {role: entry["kind"] for role, entry in manifest["components"].items()}
    assert kinds == {"synthesizer": "synthesizer", "encoder": "content-encoder", "pitch": "rmvpe"}
    for role, entry in manifest["components"].items():
        assert sha256_file(bundle / entry["path"] / MANIFEST) == entry["manifest_sha256"]
        assert f"{entry['path']}/{MANIFEST}" in manifest["files"]  # the components' files are the bundle's files
    assert manifest["settings"]["pitch_shift"] == 2 and manifest["settings"]["f0_method"] == "rmvpe"
    assert manifest["index"] is None and manifest["precision"] == "fp32"
    assert manifest["accuracy_budget"] == {"max_log_mel_db": 0.5, "max_f0_cents": 10.0}
    case = manifest["golden"][0]
    assert case["source"] == SPEECH.name and case["seconds"] == 1.0
    assert case["metrics"]["log_mel_db"] < 0.01  # fp32 components: the same as the eager pipeline
    assert not list(bundle.parent.glob(".tmp-*")) and not (bundle / ".components").exists()


def test_verify_checks_components_and_the_pipeline_end_to_end(bundle):
    process = run_cli("verify", bundle, "--skip-latency", "--json")
    assert process.returncode == 0, process.stdout + process.stderr
    result = json.loads(process.stdout)
    assert result["passed"] and result["integrity"]["passed"]
    assert set(result["components"]) == {"synthesizer", "encoder", "pitch"}
    assert all(component["passed"] for component in result["components"].values())
    assert [case["name"] for case in result["pipeline"]["cases"]] == ["case0"]
    assert result["pipeline"]["cases"][0]["log_mel_db"] < 0.01
    text = run_cli("verify", bundle, "--skip-latency").stdout
    assert "--- component pitch" in text and "pipeline  PASS" in text and text.rstrip().endswith("PASS")


def test_runtime_loads_the_bundle_and_converts_without_torch(bundle, tmp_path):
    """A fresh interpreter in which torch cannot be imported: load, convert stereo 44.1 kHz speech, and
    the stored golden reference is reproduced."""
    script = f"""
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, NoTorch())
import numpy as np, soundfile
import rvc_compile.runtime as runtime
pipeline = runtime.load({str(bundle)!r})
assert type(pipeline).__name__ == "CompiledPipeline" and pipeline.sample_rate == 40000
golden = np.load({str(bundle / 'golden' / 'case0-input.npy')!r})
reference = np.load({str(bundle / 'golden' / 'case0-reference.npy')!r})
out = pipeline.convert(golden, 16000)
print(out.shape[0], reference.shape[0], float(np.abs(out - reference).max()))
audio, rate = soundfile.read({str(SPEECH)!r}, dtype="float32")
import soxr
stereo = np.stack([audio, 0.5 * audio], axis=1)
stereo = soxr.resample(stereo, rate, 44100).astype(np.float32)
out = pipeline.convert(stereo, 44100, pitch_shift=0, index_rate=0.5)
print(out.shape[0], float(np.abs(out).max()))
assert "torch" not in sys.modules
"""
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert process.returncode == 0, process.stderr
    first, second = process.stdout.split("\n")[:2]
    samples, expected, error = first.split()
    assert samples == expected and float(error) < 1e-3
    samples, peak = second.split()
    import soundfile

    duration = soundfile.info(SPEECH).duration
    assert abs(int(samples) / 40000 - duration) < 0.02 and 0 < float(peak) <= 0.99


# -- convert: a bundle, loose artifacts, the eager checkpoint ------------------------------------

def test_convert_cli_gives_the_same_audio_from_bundle_artifacts_and_checkpoint(bundle, sources, tmp_path):
    """VOICE as a bundle, as its component artifacts, and as the checkpoint with the encoder and RMVPE
    sources (eager fp32): with zero noise the three outputs agree (fp32 graphs)."""
    from rvc_compile.convert.audio import read_audio
    from rvc_compile.verify.metrics import compare

    audio, rate = _speech()
    import soundfile

    wav = tmp_path / "in.flac"
    soundfile.write(wav, audio, rate)
    components = bundle / "components"
    runs = {
        "bundle": [bundle],
        "artifacts": [components / "synthesizer", "--encoder", components / "encoder", "--rmvpe", components / "pitch"],
        "checkpoint": [sources / "voice.pth", "--encoder", sources / "encoder-v1", "--rmvpe", sources / "rmvpe.pt"],
    }
    outputs = {}
    for label, voice in runs.items():
        out = tmp_path / f"{label}.wav"
        process = run_cli("convert", *voice[:1], wav, "-o", out, "--noise", "zero", "--pitch", "2", *voice[1:])
        assert process.returncode == 0, (label, process.stderr)
        # RVC's length: the reflect-padded input's encoder frames (x 2) times the hop, less the padding
        assert process.stdout.strip() == f"wrote {out} (1.48 s at 40000 Hz)"
        assert "encoder" in process.stderr and "synthesizer" in process.stderr  # the per-stage timings
        outputs[label], out_rate = read_audio(out)
        assert out_rate == 40000
    for label in ("artifacts", "checkpoint"):
        metrics = compare(outputs[label], outputs["bundle"], 40000)
        assert metrics["log_mel_db"] < 0.05 and (metrics["f0_cents"] or 0.0) < 1.0, (label, metrics)
    # The bundle's stored pitch shift (2) is its default; --pitch overrides it.
    default = tmp_path / "default.wav"
    assert run_cli("convert", bundle, wav, "-o", default, "--noise", "zero").returncode == 0
    np.testing.assert_array_equal(read_audio(default)[0], outputs["bundle"])
    lower = tmp_path / "lower.wav"
    assert run_cli("convert", bundle, wav, "-o", lower, "--noise", "zero", "--pitch", "-5", "--f0-method", "harvest").returncode == 0
    assert not np.array_equal(read_audio(lower)[0], outputs["bundle"])


def test_convert_refuses_bad_voices_and_audio_in_one_line(bundle, sources, tmp_path):
    audio, rate = _speech(0.5)
    import soundfile

    wav = tmp_path / "in.wav"
    soundfile.write(wav, audio, rate)
    out = tmp_path / "out.wav"
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF not really a wave file")
    short = tmp_path / "short.wav"
    soundfile.write(short, audio[: rate // 100], rate)
    cases = [
        ((bundle, garbage, "-o", out), [str(garbage)]),
        ((bundle, short, "-o", out), [str(short), "shorter than one encoder window"]),
        ((bundle, tmp_path / "missing.wav", "-o", out), ["missing.wav"]),
        ((bundle, wav, "-o", tmp_path / "out.mp3"), ["out.mp3", ".wav, .flac or .npy"]),
        ((bundle, wav, "-o", out, "--encoder", sources / "encoder-v1"), ["carries its own encoder"]),
        ((sources / "voice.pth", wav, "-o", out), ["--encoder"]),
        ((sources / "voice.pth", wav, "-o", out, "--encoder", sources / "encoder-v2"), ["encoder-v2", "16-dim", "256"]),
        ((bundle / "components" / "encoder", wav, "-o", out, "--encoder", bundle / "components" / "encoder"), ["VOICE", "synthesizer artifact"]),
        ((bundle, wav, "-o", out, "--protect", "0.9"), ["protect"]),
        ((bundle / "components" / "synthesizer", wav, "-o", out, "--encoder", bundle / "components" / "encoder", "--f0-method", "rmvpe"), ["rmvpe"]),
    ]
    for args, fragments in cases:
        assert_user_error(run_cli("convert", *args), *fragments)
        assert not out.exists() and not (tmp_path / "out.mp3").exists()
    silent = tmp_path / "silent.wav"
    soundfile.write(silent, np.zeros(rate, dtype=np.float32), rate)
    process = run_cli("convert", bundle, silent, "-o", out)
    assert process.returncode == 0, process.stderr  # documented: silence in, silence out
    assert np.abs(soundfile.read(out)[0]).max() < 1e-3


# -- what is refused at build time ------------------------------------------------------------------

def test_an_encoder_of_the_wrong_dimension_is_refused_and_nothing_is_written(sources):
    recipe = pipeline_recipe(sources, "wrong-dim", encoder="encoder-v2.yaml")
    process = build_cli(sources, recipe)
    assert_user_error_last(process, "wrong-dim.yaml", "32-dim features but the voice takes 256")
    assert not (sources / "out" / "wrong-dim").exists() or not any((sources / "out" / "wrong-dim").iterdir())


def test_pipeline_recipe_errors_name_the_key(sources):
    cases = [
        ("synthesizer: {recipe: missing.yaml}\n", ["synthesizer.recipe", "missing.yaml"]),
        ("encoder: {recipe: synth.yaml}\n", ["synth.yaml", "builds a 'synthesizer' component", "content-encoder"]),
        ("settings: {f0_method: rmvpe, protect: 0.7}\n", ["settings.protect"]),
        ("index: nowhere.index\n", ["index", "nowhere.index"]),
        ("golden: {seconds: 0.1}\n", ["golden.seconds"]),
    ]
    for number, (extra, fragments) in enumerate(cases):
        base = PIPELINE.format(name=f"bad{number}", encoder="encoder.yaml", speech=SPEECH)
        keys = {line.split(":")[0] for line in extra.splitlines()}
        text = "".join(line + "\n" for line in base.splitlines() if line.split(":")[0] not in keys) + extra
        path = sources / f"bad{number}.yaml"
        path.write_text(text)
        assert_user_error(build_cli(sources, path), *fragments)
        assert not (sources / "out" / f"bad{number}").exists()


def assert_user_error_last(process: subprocess.CompletedProcess, *fragments: str) -> None:
    """A build that fails after some progress: exit 2, the one-line error last, no traceback."""
    assert process.returncode == 2, (process.returncode, process.stderr)
    assert "Traceback" not in process.stderr
    last = process.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), last
    for fragment in fragments:
        assert fragment in last, (fragment, last)


# -- retrieval index ---------------------------------------------------------------------------------

def _write_index(path: Path, dim: int, count: int = 64) -> Path:
    faiss = pytest.importorskip("faiss")
    vectors = np.random.default_rng(3).standard_normal((count, dim)).astype(np.float32)
    index = faiss.index_factory(dim, "IVF2,Flat")
    faiss.extract_index_ivf(index).nprobe = 1
    index.train(vectors)
    index.add(vectors)
    faiss.write_index(index, str(path))
    return path


def test_a_bundle_carries_the_index_and_refuses_one_of_the_wrong_dimension(sources, bundle, tmp_path):
    from rvc_compile.runtime import load

    wrong = _write_index(sources / "v2.index", 768)
    process = build_cli(sources, pipeline_recipe(sources, "indexed-wrong", extra=f"index: {wrong}\n"))
    assert_user_error_last(process, "v2.index", "768-dim", "256-dim")
    assert not (sources / "out" / "indexed-wrong" / "1.0.0").exists()

    index = _write_index(sources / "voice.index", 256)
    process = build_cli(sources, pipeline_recipe(sources, "indexed", extra=f"index: {index}\n"))
    assert process.returncode == 0, process.stderr
    assert "3 of 3 stages from the cache" in process.stderr  # the components come from the shared cache
    indexed = Path(process.stdout.strip().splitlines()[-1])
    manifest = json.loads((indexed / MANIFEST).read_text())
    assert manifest["index"]["file"] == "index/voice.index" and manifest["index"]["vectors"] == 64
    assert run_cli("verify", indexed, "--skip-latency").returncode == 0

    audio, rate = _speech(1.0)
    with_index, without = load(indexed), load(bundle)
    assert with_index.has_index and not without.has_index
    blended = with_index.convert(audio, rate)
    np.testing.assert_array_equal(with_index.convert(audio, rate, index_rate=0.0), without.convert(audio, rate))
    assert not np.array_equal(blended, without.convert(audio, rate))


# -- a changed bundle --------------------------------------------------------------------------------

def _copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "copy" / "1.0.0"))


def test_a_changed_component_file_fails_verify_and_load(bundle, tmp_path):
    from rvc_compile.runtime import load

    copy = _copy(bundle, tmp_path)
    model = next(p for p in (copy / "components" / "encoder").iterdir() if p.suffix == ".onnx")
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    process = run_cli("verify", copy, "--skip-latency")
    assert process.returncode == 1 and "integrity FAIL" in process.stdout
    assert model.name in process.stdout
    with pytest.raises(ArtifactError, match=model.name):
        load(copy)


def test_a_missing_or_swapped_component_is_named(bundle, tmp_path):
    from rvc_compile.artifact.manifest import _write_sealed_manifest, file_table
    from rvc_compile.runtime import load

    missing = _copy(bundle, tmp_path / "a")
    shutil.rmtree(missing / "components" / "pitch")
    with pytest.raises(ArtifactError, match="components/pitch"):
        load(missing)
    assert_user_error(run_cli("convert", missing, SPEECH, "-o", tmp_path / "o.wav"), str(missing))
    assert not (tmp_path / "o.wav").exists()

    # A component replaced by another valid artifact and the bundle's file list sealed again: the
    # bundle names its components by the hash of their manifests, so the swap is still caught.
    swapped = _copy(bundle, tmp_path / "b")
    shutil.rmtree(swapped / "components" / "encoder")
    shutil.copytree(swapped / "components" / "pitch", swapped / "components" / "encoder")
    manifest = json.loads((swapped / MANIFEST).read_text())
    manifest["files"] = file_table(swapped)
    _write_sealed_manifest(swapped, manifest)
    with pytest.raises(ArtifactError, match="component encoder .* not the artifact the bundle names"):
        load(swapped)
    assert_user_error(run_cli("verify", swapped, "--skip-latency"), "component encoder")


def test_pack_and_unpack_carry_a_bundle(bundle, tmp_path):
    archive = tmp_path / "voice.rvcz"
    process = run_cli("pack", bundle, "-o", archive)
    assert process.returncode == 0, process.stderr
    process = run_cli("unpack", archive, "-o", tmp_path / "unpacked")
    assert process.returncode == 0, process.stderr
    unpacked = Path(process.stdout.strip().splitlines()[-1])
    assert unpacked == tmp_path / "unpacked" / "tiny-pipeline" / "1.0.0"
    process = run_cli("verify", unpacked, "--skip-latency")
    assert process.returncode == 0, process.stdout + process.stderr


def test_paths_in_a_components_overrides_are_relative_to_the_pipeline_recipe(sources, tmp_path, monkeypatch):
    from rvc_compile.recipe.pipeline import component_recipe, load_pipeline_recipe

    recipe = pipeline_recipe(sources, "relative")
    text = recipe.read_text().replace("synthesizer: {recipe: synth.yaml}", 'synthesizer: {recipe: synth.yaml, set: ["source.checkpoint=voice.pth"]}')
    recipe.write_text(text)
    monkeypatch.chdir(tmp_path)  # not the recipe's folder
    loaded = load_pipeline_recipe(recipe)
    assert component_recipe(loaded, "synthesizer").source.checkpoint == sources / "voice.pth"
    assert component_recipe(loaded, "pitch").source.component == "rmvpe"


@pytest.mark.parametrize("path", sorted((ROOT / "recipes" / "pipeline").glob("pipeline-*.yaml")), ids=lambda path: path.stem)
def test_the_shipped_pipeline_recipes_name_shipped_component_recipes(path, sources):
    """Each loads, and each component recipe it names loads with its overrides and is of its role's kind
    (the component recipes themselves are built by tests/test_encoder.py, test_pitch.py, test_shipped_recipes.py)."""
    from rvc_compile.recipe.pipeline import component_recipe, load_pipeline_recipe

    recipe = load_pipeline_recipe(path, [f'synthesizer.set=["source.checkpoint={sources / "voice.pth"}"]'])
    assert set(recipe.components()) == {"synthesizer", "encoder", "pitch"} and recipe.settings.f0_method == "rmvpe"
    precisions = set()
    for role in recipe.components():
        loaded = component_recipe(recipe, role)
        assert loaded.recipe_path.resolve().is_relative_to(ROOT / "recipes")
        precisions.add((loaded.target.backend, loaded.target.precision))
    assert len(precisions) == 1  # one backend and precision throughout
    assert component_recipe(recipe, "encoder").source.checkpoint == ROOT / "models" / "contentvec"
    assert component_recipe(recipe, "synthesizer").source.checkpoint == sources / "voice.pth"


def test_inspect_describes_the_bundle_and_the_component_sources(bundle, sources):
    process = run_cli("inspect", bundle)
    assert process.returncode == 0, process.stderr
    assert "a conversion pipeline" in process.stdout and "pitch         rmvpe  tiny-rmvpe  onnxruntime fp32" in process.stdout
    process = run_cli("inspect", bundle / "components" / "encoder", "--json")
    assert json.loads(process.stdout)["component"] == "content-encoder"
    process = run_cli("inspect", sources / "rmvpe.pt", "--json")
    described = json.loads(process.stdout)
    assert described["kind"] == "rmvpe" and described["spec"]["channels"] == 2 and described["gflop_per_second_of_audio"]["total"] > 0
    process = run_cli("inspect", sources / "encoder-v1")
    assert process.returncode == 0 and "features        v2 32-dim (layer 12), v1 256-dim (layer 9 + final_proj)" in process.stdout
    bad = sources / "not-a-model.pt"
    bad.write_bytes(b"neither a voice nor rmvpe")
    assert_user_error(run_cli("inspect", bad), str(bad))
