"""Calibration data: the three sources, determinism, the content-addressed cache, and every bad input."""

from __future__ import annotations

import hashlib
import json
import textwrap
import wave
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_user_error, run_cli
from rvc_compile.cache.store import Store
from rvc_compile.precision.calibration import ALIGN_TOLERANCE_FRAMES, _feature_model, content_sha256, load_calibration
from rvc_compile.errors import CalibrationError, RecipeError
from rvc_compile.recipe.schema import Calibration, load_recipe, recipe_json_schema
from rvc_compile.components.synthesizer.spec import from_config_list, official_config

WIDTH = {"v1": 256, "v2": 768}


def model_spec(version: str = "v2", f0: bool = True):
    return from_config_list(official_config(version, "40k"), version=version, f0=f0, source="test")


def make_rvc_logs(root: Path, *, version: str = "v2", names=("0_0", "0_1", "1_0", "1_1", "2_0"), pitch: bool = True) -> Path:
    """An experiment folder exactly as RVC's preprocessing and extraction write it (random contents).

    Lengths follow RVC's tools for N samples at 16 kHz: HuBERT gives (N - 400) // 320 + 1 frames at
    50/s into 3_feature*/NAME.npy; harvest/rmvpe give N // 160 + 1 frames at 100/s into
    2b-f0nsf/NAME.wav.npy (np.save of "NAME.wav" appends ".npy"), coarse pitch into 2a_f0/.
    """
    folder = root / "logs" / "my-voice"
    width = WIDTH[version]
    for sub in ("0_gt_wavs", "1_16k_wavs", f"3_feature{width}") + (("2a_f0", "2b-f0nsf") if pitch else ()):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index, name in enumerate(names):
        samples = int(16000 * (2.5 + 0.37 * index))
        for sub in ("0_gt_wavs", "1_16k_wavs"):
            with wave.open(str(folder / sub / f"{name}.wav"), "wb") as handle:
                handle.setnchannels(1), handle.setsampwidth(2), handle.setframerate(16000)
                handle.writeframes(b"\0\0" * 160)
        hubert_frames = (samples - 400) // 320 + 1
        np.save(folder / f"3_feature{width}" / f"{name}.wav".replace("wav", "npy"), rng.standard_normal((hubert_frames, width)).astype(np.float32), allow_pickle=False)
        if pitch:
            frames = samples // 160 + 1
            f0 = 120.0 + 40.0 * np.sin(np.arange(frames) / 30.0) + 10.0 * index  # float64, as pyworld returns
            f0[(np.arange(frames) // 25) % 4 == 3] = 0.0
            np.save(str(folder / "2b-f0nsf" / f"{name}.wav"), f0, allow_pickle=False)
            np.save(str(folder / "2a_f0" / f"{name}.wav"), np.clip(np.rint(f0 / 5), 1, 255).astype(int), allow_pickle=False)
    (folder / "filelist.txt").write_text("")
    return folder


def raw_pair(folder: Path, name: str, width: int = 768) -> tuple[np.ndarray, np.ndarray]:
    return np.load(folder / f"3_feature{width}" / f"{name}.npy"), np.load(folder / "2b-f0nsf" / f"{name}.wav.npy")


def make_npz_folder(root: Path, count: int = 3, *, width: int = 768, frames: int = 150, f0_extra: int = 2) -> Path:
    folder = root / "npz"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for index in range(count):
        n = frames + 10 * index
        np.savez(folder / f"case{index}.npz", features=rng.standard_normal((n, width)).astype(np.float32),
                 f0=np.full(n + f0_extra, 150.0 + index, np.float32))
    return folder


def expect_error(config: Calibration, spec, *fragments: str, **kwargs) -> str:
    with pytest.raises(CalibrationError) as caught:
        load_calibration(config, spec, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# -- rvc-logs ------------------------------------------------------------------------------------

def test_rvc_logs_follow_rvc_rates_alignment_and_selection(tmp_path):
    folder = make_rvc_logs(tmp_path)
    result = load_calibration(Calibration(source="rvc-logs", path=folder, count=3, seconds=10.0), model_spec())
    assert result.names == ["3_feature768/0_0.npy", "3_feature768/1_0.npy", "3_feature768/2_0.npy"]  # spread over the sorted names
    for name, case in zip(["0_0", "1_0", "2_0"], result.cases):
        raw, f0 = raw_pair(folder, name)
        doubled = np.repeat(raw, 2, axis=0)  # 50 -> 100 frames/s
        n = min(doubled.shape[0], f0.shape[0])
        assert 0 < f0.shape[0] - doubled.shape[0] <= ALIGN_TOLERANCE_FRAMES  # the real files disagree a little
        assert case["features"].dtype == np.float32 and case["f0"].dtype == np.float32
        np.testing.assert_array_equal(case["features"], doubled[:n])
        np.testing.assert_array_equal(case["f0"], f0[:n].astype(np.float32))
    description = result.describe()
    assert description["count"] == 3 and description["feature_dim"] == 768 and not description["cache_hit"]
    assert 0.6 < description["voiced_fraction"] < 0.9
    assert "rvc-logs" in result.source and "3 of 5 utterances" in result.source


def test_rvc_logs_cut_to_the_middle_of_long_utterances(tmp_path):
    folder = make_rvc_logs(tmp_path, names=("a",))
    case = load_calibration(Calibration(source="rvc-logs", path=folder, seconds=1.0), model_spec()).cases[0]
    raw, f0 = raw_pair(folder, "a")
    n = min(2 * raw.shape[0], f0.shape[0])
    start = (n - 100) // 2
    assert case["features"].shape == (100, 768) and case["f0"].shape == (100,)
    np.testing.assert_array_equal(case["features"], np.repeat(raw, 2, axis=0)[start : start + 100])
    np.testing.assert_array_equal(case["f0"], f0[start : start + 100].astype(np.float32))


def test_rvc_logs_v1_and_models_without_pitch(tmp_path):
    v1 = load_calibration(Calibration(source="rvc-logs", path=make_rvc_logs(tmp_path / "v1", version="v1")), model_spec("v1"))
    assert v1.cases[0]["features"].shape[1] == 256 and len(v1.cases) == 5
    folder = make_rvc_logs(tmp_path / "nof0", pitch=False)
    plain = load_calibration(Calibration(source="rvc-logs", path=folder), model_spec(f0=False))
    assert all(set(case) == {"features"} for case in plain.cases)
    assert "voiced_fraction" not in plain.describe()


def test_rvc_logs_take_only_utterances_with_pitch(tmp_path):
    folder = make_rvc_logs(tmp_path)
    (folder / "2b-f0nsf" / "0_1.wav.npy").unlink()
    result = load_calibration(Calibration(source="rvc-logs", path=folder), model_spec())
    assert "3_feature768/0_1.npy" not in result.names and len(result.cases) == 4


@pytest.mark.parametrize("folder_version,model_version", [("v2", "v1"), ("v1", "v2")])
def test_rvc_logs_feature_folder_of_the_other_version(tmp_path, folder_version, model_version):
    folder = make_rvc_logs(tmp_path, version=folder_version)
    have, need = WIDTH[folder_version], WIDTH[model_version]
    expect_error(Calibration(source="rvc-logs", path=folder), model_spec(model_version),
                 f"3_feature{have}", f"{have}-wide ({folder_version})", f"model is {model_version}", f"{need}-wide", f"3_feature{need}/")


def test_rvc_logs_bad_inputs(tmp_path):
    spec = model_spec()
    expect_error(Calibration(source="rvc-logs", path=tmp_path / "nowhere"), spec, "nowhere", "no such RVC experiment folder")
    (tmp_path / "plain").mkdir()
    expect_error(Calibration(source="rvc-logs", path=tmp_path / "plain"), spec, "no 3_feature768/ folder", "not an RVC experiment folder")

    folder = make_rvc_logs(tmp_path / "a", names=("x", "y"))
    config = Calibration(source="rvc-logs", path=folder)
    features, f0 = raw_pair(folder, "y")
    feature_file, f0_file = folder / "3_feature768" / "y.npy", folder / "2b-f0nsf" / "y.wav.npy"

    np.save(feature_file, features[:, :256])
    expect_error(config, spec, str(feature_file), "256 wide (v1)", "model is v2", "768-wide")
    np.save(feature_file, np.repeat(features, 2, axis=0))
    expect_error(config, spec, str(feature_file), "already upsampled to 100 frames/s")
    np.save(feature_file, features[: features.shape[0] * 2 // 3])  # another utterance's length
    expect_error(config, spec, str(feature_file), str(f0_file), "tolerance")
    bad = features.copy()
    bad[3, 7] = np.nan
    np.save(feature_file, bad)
    expect_error(config, spec, str(feature_file), "NaN or Inf")
    np.save(feature_file, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    expect_error(config, spec, str(feature_file), "pickled")
    np.save(feature_file, features)

    for broken, fragment in [(-f0, "negative"), (np.where(f0 > 0, np.inf, 0.0), "NaN or Inf")]:
        np.save(f0_file, broken)
        expect_error(config, spec, str(f0_file), fragment)
    np.save(f0_file, f0)
    assert len(load_calibration(config, spec).cases) == 2  # repaired

    for path in (folder / "2b-f0nsf").iterdir():
        path.unlink()
    expect_error(config, spec, "2b-f0nsf", "no pitch file", "empty")
    (folder / "2b-f0nsf").rmdir()
    expect_error(config, spec, "no 2b-f0nsf/ folder", "pitch model")
    for path in (folder / "3_feature768").iterdir():
        path.unlink()
    expect_error(config, spec, "3_feature768", "no .npy feature files", "empty")


# -- npz -----------------------------------------------------------------------------------------

def test_npz_folder(tmp_path):
    folder = make_npz_folder(tmp_path, count=3)
    result = load_calibration(Calibration(source="npz", path=folder, count=2), model_spec())
    assert result.names == ["case0.npz", "case2.npz"]
    with np.load(folder / "case2.npz") as data:
        np.testing.assert_array_equal(result.cases[1]["features"], data["features"])
        np.testing.assert_array_equal(result.cases[1]["f0"], data["f0"][: data["features"].shape[0]])
    no_f0 = tmp_path / "nof0"
    no_f0.mkdir()
    np.savez(no_f0 / "a.npz", features=np.zeros((20, 256), np.float32))
    assert set(load_calibration(Calibration(source="npz", path=no_f0), model_spec("v1", f0=False)).cases[0]) == {"features"}


def test_npz_bad_inputs(tmp_path):
    spec = model_spec()
    expect_error(Calibration(source="npz", path=tmp_path / "missing"), spec, "missing", "no such folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not calibration data")
    expect_error(Calibration(source="npz", path=empty), spec, str(empty), "no .npz files", "empty")

    folder = tmp_path / "bad"
    folder.mkdir()
    config = Calibration(source="npz", path=folder)
    path = folder / "case.npz"
    features = np.random.default_rng(0).standard_normal((200, 768)).astype(np.float32)
    f0 = np.full(200, 140.0, np.float32)
    cases = [
        (dict(features=features[::2], f0=f0), ["50 frames/s", "numpy.repeat(features, 2, axis=0)"]),
        (dict(features=features, f0=f0[::2]), ["f0 looks like 50 frames/s"]),
        (dict(features=features[:150], f0=f0), ["150 feature frames but 200 f0 frames", "tolerance"]),
        (dict(features=features[:, :256], f0=f0), ["256 wide (v1)", "model is v2"]),
        (dict(features=features, f0=-f0), ["negative"]),
        (dict(features=np.where(features > 2, np.inf, features), f0=f0), ["NaN or Inf"]),
        (dict(features=features), ["no 'f0' array", "found: features"]),
        (dict(features=features.astype(np.int32), f0=f0), ["floating point"]),
        (dict(features=np.zeros((0, 768), np.float32), f0=f0[:0]), ["no feature frames"]),
    ]
    for arrays, fragments in cases:
        np.savez(path, **arrays)
        expect_error(config, spec, str(path), *fragments)
    np.savez(path, features=features, f0=np.array([{"x": 1}], dtype=object))
    expect_error(config, spec, str(path), "pickled")
    path.write_bytes(b"this is not an archive")
    expect_error(config, spec, str(path), "not a .npy or .npz")
    path.write_bytes(b"PK\x03\x04 truncated zip")
    expect_error(config, spec, str(path), "not a readable")


# -- generated -----------------------------------------------------------------------------------

def test_generated_is_deterministic_per_seed(tmp_path):
    spec = model_spec()
    config = Calibration(source="generated", count=4, seconds=1.0, seed=3)
    first, second = load_calibration(config, spec), load_calibration(config, spec)
    assert first.sha256 == second.sha256 == content_sha256(second.cases)
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(first.cases, second.cases) for k in a)
    assert load_calibration(Calibration(source="generated", count=4, seconds=1.0, seed=4), spec).sha256 != first.sha256
    fewer = load_calibration(Calibration(source="generated", count=2, seconds=1.0, seed=3), spec)
    assert all(np.array_equal(a["f0"], b["f0"]) for a, b in zip(fewer.cases, first.cases))  # case i does not depend on count
    assert [case["features"].shape for case in first.cases] == [(100, 768)] * 4
    assert "tests and demos" in first.source


def test_generated_f0_sources(tmp_path):
    spec = model_spec()
    speech = load_calibration(Calibration(source="generated", f0_source="speech", count=4, seconds=2.0), spec)
    voiced = np.concatenate([case["f0"] for case in speech.cases])
    assert 0.5 < (voiced > 0).mean() < 0.97
    assert 100 < np.median(voiced[voiced > 0]) < 250  # the bundled clips: a low and a higher voice
    synthetic = load_calibration(Calibration(source="generated", f0_source="synthetic", count=6, seconds=3.0, f0_low_hz=100.0, f0_high_hz=200.0), spec)
    for case in synthetic.cases:
        f0 = case["f0"]
        assert 0.3 < (f0 > 0).mean() < 0.95  # phrases with pauses and unvoiced consonants
        assert f0[f0 > 0].min() >= 100 / 1.5 and f0.max() <= 200 * 1.5
        assert np.abs(np.diff(f0[:-1][(f0[:-1] > 0) & (f0[1:] > 0)].astype(np.float64) / f0[1:][(f0[:-1] > 0) & (f0[1:] > 0)])).max() < 0.1  # smooth within phrases
    mixed = load_calibration(Calibration(source="generated", count=4, seconds=1.0), spec)
    assert [name.split("-", 2)[2] for name in mixed.names] == ["speech-f0", "synthetic-f0"] * 2
    shifted = load_calibration(Calibration(source="generated", f0_source="speech", count=4, seconds=2.0, pitch_shift_semitones=12.0), spec)
    ratios = [s["f0"][s["f0"] > 0][0] / c["f0"][c["f0"] > 0][0] for s, c in zip(shifted.cases, speech.cases)]
    assert all(0.5 <= r <= 2.0 for r in ratios) and np.ptp(ratios) > 0.05
    for method in ("dio", "pm"):
        other = load_calibration(Calibration(source="generated", f0_source="speech", f0_method=method, count=2, seconds=1.0), spec)
        assert other.sha256 != speech.sha256 and (other.cases[0]["f0"] > 0).any()


def test_generated_features_keep_real_statistics(tmp_path):
    for version in ("v2", "v1"):
        spec = model_spec(version)
        model = _feature_model(spec.feature_dim)
        result = load_calibration(Calibration(source="generated", f0_source="synthetic", count=8, seconds=4.0), spec)
        for case in result.cases:
            np.testing.assert_array_equal(case["features"][0::2], case["features"][1::2])  # 50 frames/s doubled, as RVC
        frames = np.concatenate([case["features"][0::2] for case in result.cases]).astype(np.float64)
        assert 0.85 < np.median(frames.std(axis=0) / model.std) < 1.15
        assert np.abs(frames.mean(axis=0) - model.mean).mean() < 0.15 * model.std.mean()
        centered = [case["features"][0::2] - model.mean for case in result.cases]
        lag1 = sum(float((c[1:] * c[:-1]).sum()) for c in centered) / sum(float((c * c).sum()) for c in centered)
        assert abs(lag1 - model.correlation) < 0.05 and model.correlation > 0.7  # consecutive frames alike, as in speech
    spec = model_spec()
    chosen = load_calibration(Calibration(source="generated", f0_source="synthetic", features="recipe", feature_mean=0.5, feature_std=2.0, feature_correlation=0.0), spec)
    frames = np.concatenate([case["features"] for case in chosen.cases])
    assert abs(frames.mean() - 0.5) < 0.05 and abs(frames.std() - 2.0) < 0.05
    perturbed = load_calibration(Calibration(source="generated", f0_source="synthetic", features="real-frames", feature_perturbation=0.0, count=2), spec)
    real = np.concatenate(_feature_model(768).recordings)
    assert np.abs(real - perturbed.cases[0]["features"][0].astype(np.float64)).max(axis=1).min() < 1e-5  # the real frames themselves
    plain = load_calibration(Calibration(source="generated", count=2), model_spec(f0=False))
    assert all(set(case) == {"features"} for case in plain.cases)


def test_generated_refuses_a_clip_without_pitch(tmp_path):
    clip = tmp_path / "hum.wav"
    with wave.open(str(clip), "wb") as handle:
        handle.setnchannels(1), handle.setsampwidth(2), handle.setframerate(16000)
        handle.writeframes((np.full(16000, -1650, "<i2") + np.random.default_rng(0).integers(-60, 60, 16000).astype("<i2")).tobytes())
    expect_error(Calibration(source="generated", f0_source="speech", speech=[clip], f0_method="dio"), model_spec(), str(clip), "finds a pitch in only")
    expect_error(Calibration(source="generated", f0_source="speech", speech=[tmp_path / "gone.wav"]), model_spec(), "gone.wav", "no such speech clip")


# -- cache ---------------------------------------------------------------------------------------

def calibration_entries(cache: Path) -> list:
    return [info for info in Store(cache).ls() if info.stage == "calibration"]


def test_cache_hit_miss_and_corruption(tmp_path):
    spec, cache = model_spec(), tmp_path / "cache"
    folder = make_npz_folder(tmp_path, count=2)
    config = Calibration(source="npz", path=folder)
    built = load_calibration(config, spec, cache_dir=cache)
    # The set is an entry of the build cache: one file, in the entry the store lists.
    entries = calibration_entries(cache)
    assert not built.cache_hit and len(entries) == 1
    assert built.cache_path == Store(cache).entry_dir(entries[0].key) / "files" / "calibration.npz"
    read = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.glob("*.npz")}
    assert entries[0].meta["sha256"] == built.sha256 and entries[0].ingredients["inputs"] == read
    hit = load_calibration(config, spec, cache_dir=cache)
    assert hit.cache_hit and hit.sha256 == built.sha256 and hit.source == built.source and hit.names == built.names
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(built.cases, hit.cases) for k in a)

    entry = built.cache_path
    entry.write_bytes(entry.read_bytes()[:-100])  # truncated
    notes: list[str] = []
    rebuilt = load_calibration(config, spec, cache_dir=cache, log=notes.append)
    assert not rebuilt.cache_hit and rebuilt.sha256 == built.sha256 and "failed its check" in notes[0]
    assert load_calibration(config, spec, cache_dir=cache).cache_hit

    # A well-formed entry whose arrays no longer match its recorded hash is refused too.
    with np.load(entry) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["case00000.features"] = arrays["case00000.features"] + 1
    with open(entry, "wb") as handle:
        np.savez(handle, **arrays)
    again = load_calibration(config, spec, cache_dir=cache)
    assert not again.cache_hit and again.sha256 == built.sha256

    with np.load(folder / "case1.npz") as data:
        changed = {name: data[name] for name in data.files}
    changed["f0"][5] = 99.0
    np.savez(folder / "case1.npz", **changed)
    miss = load_calibration(config, spec, cache_dir=cache)
    assert not miss.cache_hit and miss.sha256 != built.sha256
    assert len(calibration_entries(cache)) == 2
    assert not list((cache / "tmp").iterdir())

    generated = Calibration(source="generated", count=2, seconds=0.5)
    assert not load_calibration(generated, spec, cache_dir=cache).cache_hit
    assert load_calibration(generated, spec, cache_dir=cache).cache_hit
    assert not load_calibration(generated, model_spec("v1"), cache_dir=cache).cache_hit  # the width is in the key


def test_an_entry_whose_files_verify_but_hold_no_usable_set_is_discarded_and_rebuilt(tmp_path):
    """The store re-hashes the files; the set's own check (content hash, width, pitch) runs after it."""
    spec, cache = model_spec(), tmp_path / "cache"
    config = Calibration(source="npz", path=make_npz_folder(tmp_path, count=2))
    built = load_calibration(config, spec, cache_dir=cache)
    store = Store(cache)
    key = calibration_entries(cache)[0].key
    store._remove_dir(store.entry_dir(key))
    bogus = tmp_path / "calibration.npz"
    np.savez(bogus, meta=np.array("{}"))
    store.put(key, {"calibration.npz": bogus}, stage="calibration").release()  # sealed, so the store's own check passes
    notes: list[str] = []
    rebuilt = load_calibration(config, spec, cache_dir=cache, log=notes.append)
    assert not rebuilt.cache_hit and rebuilt.sha256 == built.sha256
    assert len(notes) == 1 and key[:12] in notes[0] and "failed its check" in notes[0] and "not a whole calibration set" in notes[0]
    assert load_calibration(config, spec, cache_dir=cache).cache_hit


def test_bad_input_leaves_no_cache_entry(tmp_path):
    folder = make_npz_folder(tmp_path, width=256)
    expect_error(Calibration(source="npz", path=folder), model_spec(), "256 wide", cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.npz"))


def test_no_calibration_and_mismatched_set(tmp_path):
    expect_error(Calibration(), model_spec(), "calibration.source is 'none'", "quantizing needs calibration data")
    result = load_calibration(Calibration(source="generated", count=1, seconds=0.2), model_spec())
    with pytest.raises(CalibrationError, match="768 wide \\(v2\\) but the model is v1"):
        result.check_matches(model_spec("v1"))
    with pytest.raises(CalibrationError, match="has no pitch input"):
        result.check_matches(model_spec(f0=False))


# -- recipe keys ---------------------------------------------------------------------------------

def write_recipe(tmp_path: Path, checkpoint: Path | str, calibration: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(f"name: voice\nversion: 1.0.0\nsource:\n  checkpoint: {checkpoint}\ncalibration:\n" + textwrap.indent(textwrap.dedent(calibration), "  "))
    return path


def test_recipe_keys_and_checks(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, "v.pth", """\
        source: generated
        f0_source: speech
        speech: [clips/a.wav]
        f0_method: dio
        features: recipe
        feature_std: 0.5
        seed: 7
    """))
    calibration = recipe.calibration
    assert calibration.speech == [tmp_path / "clips" / "a.wav"] and calibration.seed == 7 and calibration.feature_std == 0.5
    properties = recipe_json_schema()["properties"]["calibration"]["properties"]
    assert properties["f0_source"]["enum"] == ["speech", "synthetic", "mixed"] and properties["seed"]["default"] == 0
    bad = [
        ("source: npz\npath: data\nseed: 3\n", ["recipe.yaml:8:", "calibration.seed", "only used by source 'generated'"]),
        ("source: generated\nf0_source: synthetic\nspeech: [a.wav]\n", ["calibration.speech", "not used with f0_source 'synthetic'"]),
        ("source: generated\nfeature_mean: 1.0\n", ["calibration.feature_mean", "features 'real-statistics'"]),
        ("source: generated\nf0_low_hz: 300\nf0_high_hz: 200\n", ["calibration.f0_low_hz", "f0_low_hz < f0_high_hz"]),
        ("source: generated\npath: somewhere\n", ["calibration.path", "not used by source 'generated'"]),
        ("source: generated\nfeatures: recipe\nfeature_std: 0\n", ["calibration.feature_std", "positive"]),
        ("source: generated\nfeature_correlation: 1.0\n", ["calibration.feature_correlation", "below 1"]),
        ("source: generated\nf0_source: humming\n", ["calibration.f0_source", "expected one of"]),
        ("source: rvc-logs\n", ["calibration.path", "needs a path"]),
        ("source: generated\ncount: 0\n", ["calibration.count", "at least 1"]),
        ("source: generated\nseconds: .nan\n", ["calibration.seconds", "finite"]),
    ]
    for text, fragments in bad:
        with pytest.raises(RecipeError) as caught:
            load_recipe(write_recipe(tmp_path, "v.pth", text))
        for fragment in fragments:
            assert fragment in str(caught.value), (fragment, str(caught.value))


# -- command line --------------------------------------------------------------------------------

def test_cli_inspect(tmp_path, checkpoint_factory):
    checkpoint = checkpoint_factory("v2", "40k", True)
    recipe = write_recipe(tmp_path, checkpoint, "source: generated\nf0_source: synthetic\ncount: 3\nseconds: 1.0\n")
    process = run_cli("calibration", "inspect", recipe, "--json", "--cache-dir", tmp_path / "cache")
    assert process.returncode == 0, process.stderr
    description = json.loads(process.stdout)
    assert description["count"] == 3 and description["total_seconds"] == 3.0 and description["feature_dim"] == 768
    assert description["sha256"] == load_calibration(load_recipe(recipe).calibration, model_spec()).sha256  # same set in and out of the CLI
    text = run_cli("calibration", "inspect", recipe, "--cache-dir", tmp_path / "cache")
    assert text.returncode == 0 and "(from cache)" in text.stdout and "tests and demos" in text.stdout

    folder = make_npz_folder(tmp_path, width=256)
    mismatched = write_recipe(tmp_path, checkpoint, f"source: npz\npath: {folder}\n")
    assert_user_error(run_cli("calibration", "inspect", mismatched), str(folder), "256 wide (v1)", "model is v2")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_user_error(run_cli("calibration", "inspect", mismatched, "--set", f"calibration.path={empty}"), str(empty), "empty")
    assert_user_error(run_cli("calibration", "inspect", write_recipe(tmp_path, checkpoint, "source: none\n")), "calibration.source is 'none'")
