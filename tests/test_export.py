"""rvc-compile export: drop-in ONNX files for VC Client and RVC's OnnxRVC (docs/EXPORT.md).

Every exported file is fed exactly as its app feeds it (``tests/clients.py``, written from the apps'
source code: VC Client by name with the feats dtype taken from the first input's type and
``run(["audio"], feed)``; OnnxRVC by position through ``get_inputs()[i].name`` and ``run(None, ...)[0]``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import clients
from conftest import assert_user_error, run_cli, write_tiny_recipe
from rvc_compile.artifact.manifest import MANIFEST, verify_or_raise
from rvc_compile.errors import ArtifactError, ExportError, GateFailure, RecipeError
from rvc_compile.export import export_artifact, sidecar_path
from rvc_compile.export.profiles import PROFILES, VC_CLIENT_REQUIRED_KEYS, coarse_pitch


def quiet(message: str) -> None:
    pass


def build(directory: Path, checkpoint: Path, name: str, *, precision: str = "fp32", passes: str = "[{name: host_source}]",
          extra: tuple[str, ...] = (), f0: bool = True) -> Path:
    """A tiny artifact (8..32 frames, one 0.1 s golden case) at ``precision``; the build cache in ``directory``."""
    from rvc_compile.build.pipeline import build as run_build
    from rvc_compile.recipe.schema import load_recipe

    directory.mkdir(parents=True, exist_ok=True)
    overrides = [f"passes={passes}", f"target.precision={precision}", *extra]
    if precision == "int8":
        # As recipes/cpu-int8-onnxruntime.yaml: equalized channel ranges, the two most sensitive layers kept
        # fp32 (without equalize_channels a 48k no-f0 voice fell to 26.6 dB with 7-bit weights on AVX2).
        if passes == "[{name: host_source}]":
            overrides[0] = "passes=[{name: fold_weight_norm}, {name: equalize_channels}, {name: host_source}]"
        overrides += ["calibration.source=generated", "calibration.count=2", "calibration.seconds=0.3",
                      f"precision_policy.keep_fp32=[dec.conv_post{', dec.noise_convs' if f0 else ''}]", "precision_policy.calibration_method=percentile"]
    recipe = load_recipe(write_tiny_recipe(directory, checkpoint, name=name), overrides)
    return run_build(recipe, cache_dir=directory / "cache", log=quiet).path


def reseal(directory: Path, change) -> None:
    """Edit a copied artifact's manifest and seal it again (what a build of that kind would have written)."""
    from rvc_compile.artifact.manifest import _write_sealed_manifest

    manifest = json.loads((directory / MANIFEST).read_text())
    change(manifest)
    _write_sealed_manifest(directory, manifest)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def host_source_artifact(tmp_path_factory, checkpoint_factory) -> Path:
    """fp32, one speaker folded in, the NSF excitation an input: the front computes it (read-only)."""
    return build(tmp_path_factory.mktemp("export-hs"), checkpoint_factory(), "hs", passes="[{name: fold_speaker, speaker: 0}, {name: host_source}]")


@pytest.fixture(scope="module")
def no_f0_artifact(tmp_path_factory, checkpoint_factory) -> Path:
    return build(tmp_path_factory.mktemp("export-nof0"), checkpoint_factory(f0=False), "nof0", passes="[]")


# -- VC Client --------------------------------------------------------------------------------------

def test_vc_client_file_runs_as_vc_client_runs_it(tmp_path, host_source_artifact):
    out = tmp_path / "voice.onnx"
    result = export_artifact(host_source_artifact, "vc-client", out, log=quiet)
    assert result.path == out and out.is_file() and result.passed

    session = clients._session(str(out))
    metadata = clients.vc_client_metadata(session)  # every key VC Client requires, else its legacy path
    assert metadata == {"application": "rvc-compile", "version": "2.1", "modelType": "onnxRVC", "samplingRate": 40000, "f0": True,
                        "embChannels": 768, "embedder": "hubert_base", "embOutputLayer": 12, "useFinalProj": False}
    assert [(i.name, i.type) for i in session.get_inputs()] == [
        ("feats", "tensor(float)"), ("p_len", "tensor(int64)"), ("pitch", "tensor(int64)"), ("pitchf", "tensor(float)"), ("sid", "tensor(int64)")]
    assert [o.name for o in session.get_outputs()] == ["audio"]
    data = clients.example(40, 768)
    first = clients.vc_client_infer(session, data["feats"], data["pitchf"])
    second = clients.vc_client_infer(session, data["feats"], data["pitchf"])
    assert first.shape == (40 * 400,) and np.isfinite(first).all() and np.abs(first).max() <= 1.0
    assert not np.array_equal(first, second)  # the noise is drawn in the graph, as in VC Client's own files
    assert clients.run_vc_client(str(out), frames=64)["samples"] == 64 * 400  # past the artifact's 32 frames: any length runs

    record = json.loads(sidecar_path(out).read_text())
    assert record["passed"] and record["profile"] == "vc-client" and record["noise"] == "graph" and record["precision"] == "fp32"
    assert record["sha256"] == sha256(out) == result.sha256
    assert record["source"]["manifest_sha256"] == sha256(host_source_artifact / MANIFEST)
    assert record["source"]["model_sha256"] == sha256(host_source_artifact / "model.onnx")
    assert record["source"]["graph_inputs"] == ["features", "f0", "prior_noise", "excitation"]
    against = [case["against"] for case in record["cases"]]
    assert against == ["fp32 reference (golden case)"] + ["artifact runtime"] * 3
    assert [case["frames"] for case in record["cases"][1:]] == [8, 16, 32]
    assert all(case["passed"] and case["snr_db"] > 100 for case in record["cases"])
    assert record["client_run"]["shape"] == [10 * 400] and record["metadata"] == metadata
    from rvc_compile.runtime import load

    component = load(host_source_artifact).component  # bench reads the voice back from the sidecar
    assert component.spec_from_dict(record["component"]["spec"], source="sidecar") == load(host_source_artifact).spec


def test_vc_client_no_f0_voice(tmp_path, no_f0_artifact):
    out = tmp_path / "nono.onnx"
    export_artifact(no_f0_artifact, "vc-client", out, log=quiet)
    session = clients._session(str(out))
    metadata = clients.vc_client_metadata(session)
    assert metadata["f0"] is False and metadata["modelType"] == "onnxRVCNono"
    assert [i.name for i in session.get_inputs()] == ["feats", "p_len", "sid"]  # OnnxRVCInferencerNono's feed
    summary = clients.run_vc_client(str(out), frames=24)
    assert summary["samples"] == 24 * 400 and summary["peak"] <= 1.0


# -- RVC OnnxRVC ------------------------------------------------------------------------------------

def test_rvc_onnx_file_runs_as_onnx_rvc_runs_it(tmp_path, host_source_artifact):
    out = tmp_path / "voice-rvc.onnx"
    export_artifact(host_source_artifact, "rvc-onnx", out, log=quiet)
    session = clients._session(str(out))
    assert "metadata" not in session.get_modelmeta().custom_metadata_map
    inputs = session.get_inputs()
    assert [(i.name, i.type) for i in inputs] == [
        ("phone", "tensor(float)"), ("phone_lengths", "tensor(int64)"), ("pitch", "tensor(int64)"), ("pitchf", "tensor(float)"),
        ("ds", "tensor(int64)"), ("rnd", "tensor(float)")]
    assert inputs[5].shape == [1, 192, "frames"]  # OnnxRVC draws randn(1, 192, T) whatever the voice (this one's prior is 16 wide)
    data = clients.example(30, 768)
    audio = clients.rvc_onnx_infer(session, data["feats"], data["pitchf"])
    assert audio.shape == (1, 1, 30 * 400) and np.isfinite(audio).all()
    again = clients.rvc_onnx_infer(session, data["feats"], data["pitchf"], seed=0)
    assert not np.array_equal(audio, again)  # same rnd, but the NSF source noise is drawn in the graph
    record = json.loads(sidecar_path(out).read_text())
    assert record["passed"] and record["metadata"] is None and record["output"] == {"name": "audio", "shape": [1, 1, "samples"], "clipped": False}


def test_noise_as_inputs_matches_the_artifact_runtime(tmp_path, host_source_artifact):
    """The documented switch: with the draws as inputs the file computes what the artifact computes."""
    from rvc_compile.runtime import load

    voice = load(host_source_artifact)
    arrays = voice.example_inputs(27, seed=5)
    expected = voice.run_case(arrays)
    for profile in ("vc-client", "rvc-onnx"):
        out = tmp_path / f"{profile}.onnx"
        export_artifact(host_source_artifact, profile, out, noise="inputs", log=quiet)
        session = clients._session(str(out))
        names = [i.name for i in session.get_inputs()]
        frames = 27
        values = {"feats": arrays["features"], "phone": arrays["features"], "p_len": np.array([frames]), "phone_lengths": np.array([frames]),
                  "pitch": coarse_pitch(arrays["f0"]), "pitchf": arrays["f0"], "sid": np.array([0]), "ds": np.array([0]),
                  "rnd": np.pad(arrays["prior_noise"], ((0, 0), (0, 192 - arrays["prior_noise"].shape[1]), (0, 0))), "prior_noise": arrays["prior_noise"],
                  "source_noise": arrays["source_noise"]}
        expected_names = ["feats", "p_len", "pitch", "pitchf", "sid", "prior_noise", "source_noise"] if profile == "vc-client" else \
            ["phone", "phone_lengths", "pitch", "pitchf", "ds", "rnd", "source_noise"]
        assert names == expected_names
        audio = np.asarray(session.run(None, {name: values[name] for name in names})[0]).reshape(-1)
        assert np.array_equal(audio, session.run(None, {name: values[name] for name in names})[0].reshape(-1))  # deterministic
        error = np.linalg.norm(audio - expected) / np.linalg.norm(expected)
        assert error < 1e-5, (profile, error)  # the front's float64 excitation = the runtime's host-side one


def test_coarse_pitch_is_the_clients_and_the_graphs():
    """The file ignores the client's ``pitch``: the graph derives it from pitchf with the same formula."""
    import torch

    from rvc_compile.components.synthesizer.model.encoder import coarse_pitch as graph_coarse_pitch

    f0 = np.concatenate([[0.0, 0.0, 30.0, 50.0, 100.0, 220.0, 440.0, 1100.0, 2000.0], np.linspace(40.0, 1200.0, 2001)]).astype(np.float32)[None]
    ours = coarse_pitch(f0)
    assert np.array_equal(ours, clients.coarse_pitch(f0.astype(np.float64)))
    assert list(ours[0, :9]) == [1, 1, 1, 1, 20, 60, 122, 255, 255]
    assert np.array_equal(ours, graph_coarse_pitch(torch.from_numpy(f0)).numpy())


# -- refusals, failures, writing ------------------------------------------------------------------

def test_refusals_name_the_artifact(tmp_path, tiny_artifact, no_f0_artifact):
    out = tmp_path / "never.onnx"
    with pytest.raises(ExportError, match=r"unknown export profile 'vc'") as info:
        export_artifact(tiny_artifact, "vc", out, log=quiet)
    assert str(tiny_artifact) in str(info.value)
    with pytest.raises(ExportError, match=r"without pitch .*pitch voices only") as info:
        export_artifact(no_f0_artifact, "rvc-onnx", out, log=quiet)
    assert str(no_f0_artifact) in str(info.value)

    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_artifact, tampered)
    with open(tampered / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ArtifactError, match="integrity check failed: model.onnx"):
        export_artifact(tampered, "vc-client", out, log=quiet)

    for name, change, message in [
        ("openvino", lambda m: m["backend"].update(name="openvino"), "an openvino artifact; export takes ONNX Runtime artifacts"),
        ("static", lambda m: m["model"]["frames"].update(static=True, min=16, max=16, opt=16), "a static-shape artifact"),
    ]:
        copy = tmp_path / name
        shutil.copytree(tiny_artifact, copy)
        reseal(copy, change)
        with pytest.raises(ExportError, match=message) as info:
            export_artifact(copy, "vc-client", out, log=quiet)
        assert str(copy) in str(info.value) and "\n" not in str(info.value)
    assert not out.exists() and not sidecar_path(out).exists()


def test_failed_verification_writes_nothing(tmp_path, tiny_artifact):
    copy = tmp_path / "strict"
    shutil.copytree(tiny_artifact, copy)
    reseal(copy, lambda m: m["accuracy_budget"].update(min_snr_db=1000.0))
    out = tmp_path / "out" / "voice.onnx"
    out.parent.mkdir()
    with pytest.raises(GateFailure, match="failed verification") as info:
        export_artifact(copy, "vc-client", out, log=quiet)
    assert info.value.exit_code == 1 and any("snr_db" in failure for failure in info.value.failures)
    assert list(out.parent.iterdir()) == []


def test_interrupted_write_leaves_neither_file(tmp_path, tiny_artifact, monkeypatch):
    import os

    import rvc_compile.export as export_module

    out = tmp_path / "voice.onnx"
    real_replace, calls = os.replace, []

    def failing_replace(source, target):
        calls.append(target)
        if len(calls) == 2:  # the model is in place, the sidecar fails
            raise OSError(28, "No space left on device", str(target))
        return real_replace(source, target)

    monkeypatch.setattr(export_module.os, "replace", failing_replace)
    with pytest.raises(OSError):
        export_artifact(tiny_artifact, "vc-client", out, log=quiet)
    assert list(tmp_path.iterdir()) == []


def test_cli_export(tmp_path, host_source_artifact, no_f0_artifact):
    out = tmp_path / "cli.onnx"
    process = run_cli("export", host_source_artifact, "--profile", "vc-client", "-o", out)
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip().splitlines()[-1] == str(out)
    assert json.loads(sidecar_path(out).read_text())["passed"]
    refused = run_cli("export", no_f0_artifact, "--profile", "rvc-onnx", "-o", tmp_path / "no.onnx")
    assert_user_error(refused, str(no_f0_artifact), "pitch voices only")


# -- the recipe's export section ----------------------------------------------------------------------

def test_recipe_export_section_is_checked(tmp_path, checkpoint_factory):
    from rvc_compile.recipe.schema import load_recipe

    recipe = write_tiny_recipe(tmp_path, checkpoint_factory())
    assert [entry.profile for entry in load_recipe(recipe, ["export=[{profile: vc-client}, {profile: rvc-onnx, noise: inputs}]"]).export] == ["vc-client", "rvc-onnx"]
    for overrides, message in [
        (["export=[{profile: vc}]"], "export.0.profile: expected one of 'vc-client', 'rvc-onnx'"),
        (["export=[{profile: vc-client}, {profile: vc-client}]"], "export.1.profile: vc-client is listed twice"),
        (["export=[{profile: vc-client}]", "target.backend=openvino"], "export.0: exports are made from ONNX Runtime artifacts"),
        (["export=[{profile: vc-client}]", "shapes.mode=static", "shapes.chunk_frames=16"], "export.0: the apps feed any length"),
        (["export=[{profile: vc-client, noise: zero}]"], "export.0.noise"),
    ]:
        with pytest.raises(RecipeError, match=message):
            load_recipe(recipe, overrides)


def test_build_emits_exports_inside_the_artifact(tmp_path, checkpoint_factory):
    artifact = build(tmp_path, checkpoint_factory(), "with-exports", extra=("export=[{profile: vc-client}, {profile: rvc-onnx}]",))
    manifest = verify_or_raise(artifact)  # every exported file hashed like the others
    assert {"exports/vc-client.onnx", "exports/vc-client.onnx.json", "exports/rvc-onnx.onnx", "exports/rvc-onnx.onnx.json"} <= set(manifest["files"])
    for profile in PROFILES:
        path = artifact / "exports" / f"{profile}.onnx"
        record = json.loads(sidecar_path(path).read_text())
        assert record["passed"] and record["sha256"] == manifest["files"][f"exports/{profile}.onnx"]["sha256"]
        assert record["source"]["artifact"] == "with-exports" and record["source"]["manifest_sha256"] is None
        run = clients.run_vc_client if profile == "vc-client" else clients.run_rvc_onnx
        assert run(str(path), frames=20)["samples"] == 20 * 400


# -- the matrix: v1/v2, f0/no-f0, fp32/fp16/int8 --------------------------------------------------------

MATRIX = [
    ("v2", "40k", True, "fp32"), ("v2", "40k", True, "fp16"), ("v2", "40k", True, "int8"),
    ("v1", "40k", True, "fp32"), ("v1", "40k", True, "fp16"), ("v1", "40k", True, "int8"),
    ("v2", "48k", True, "int8"), ("v1", "32k", False, "fp32"), ("v2", "48k", False, "int8"),
]


@pytest.fixture(scope="module")
def matrix_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export-matrix")  # one build cache: captures shared between precisions


@pytest.mark.slow
@pytest.mark.parametrize("version,rate,f0,precision", MATRIX, ids=[f"{v}-{r}-{'f0' if f else 'nof0'}-{p}" for v, r, f, p in MATRIX])
def test_export_matrix(matrix_root, checkpoint_factory, version, rate, f0, precision):
    name = f"{version}-{rate}-{'f0' if f0 else 'nof0'}-{precision}"
    artifact = build(matrix_root, checkpoint_factory(version=version, sample_rate=rate, f0=f0), name, precision=precision, f0=f0)
    channels, hop = (256 if version == "v1" else 768), {"32k": 320, "40k": 400, "48k": 480}[rate]
    profiles = ["vc-client"] + (["rvc-onnx"] if f0 else [])
    for profile in profiles:
        out = matrix_root / f"{name}.{profile}.onnx"
        result = export_artifact(artifact, profile, out, log=quiet)
        assert result.passed and result.precision == precision
        golden = result.cases[0]
        assert golden["against"].startswith("fp32 reference") and golden["passed"]
        session = clients._session(str(out))
        if profile == "vc-client":
            metadata = clients.vc_client_metadata(session)
            assert all(key in metadata for key in VC_CLIENT_REQUIRED_KEYS)
            assert metadata["embChannels"] == channels and metadata["useFinalProj"] == (channels == 256)
            assert metadata["embOutputLayer"] == (9 if channels == 256 else 12) and metadata["f0"] is f0
            assert metadata["samplingRate"] == int(rate[:2]) * 1000
            assert session.get_inputs()[0].type == ("tensor(float16)" if precision == "fp16" else "tensor(float)")
            summary = clients.run_vc_client(str(out), frames=24)
        else:
            assert session.get_inputs()[0].type == "tensor(float)"  # OnnxRVC feeds float32 phone, whatever the artifact
            summary = clients.run_rvc_onnx(str(out), frames=24)
        assert summary["samples"] == 24 * hop


def test_bench_runs_exported_files_as_their_apps_do(tmp_path, host_source_artifact):
    """`bench vc-client:FILE rvc-onnx:FILE ARTIFACT`: one interleaved run, the files fed as their apps feed them."""
    from rvc_compile.errors import InputError
    from rvc_compile.measure.bench import BenchSettings, run_bench

    files = {profile: tmp_path / f"voice.{profile}.onnx" for profile in ("vc-client", "rvc-onnx")}
    for profile, path in files.items():
        export_artifact(host_source_artifact, profile, path, log=quiet)
    sources = [f"{profile}:{path}" for profile, path in files.items()] + [str(host_source_artifact)]
    result = run_bench(sources, BenchSettings(seconds=(0.2,), repeat=2, warmup=1, threads=1, floor=False))
    rows = {row["source"]: row for row in result["results"]}
    assert {"vc-client:voice.vc-client", "rvc-onnx:voice.rvc-onnx"} <= set(rows)
    assert all(row["status"] == "ok" and row["p50_ms"] > 0 for row in rows.values()), rows
    by_label = {source["label"]: source for source in result["sources"]}
    assert by_label["vc-client:voice.vc-client"]["export"]["profile"] == "vc-client"
    with pytest.raises(InputError, match="needs a file `rvc-compile export` wrote"):
        run_bench([f"vc-client:{host_source_artifact / 'model.onnx'}"], BenchSettings(seconds=(0.2,), repeat=1, warmup=0, threads=1, floor=False))
