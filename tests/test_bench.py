"""``rvc-compile bench``: sources, the interleaved engine, its JSON and table, streaming, the floor, profiles.

Small models throughout; no test asserts a timing beyond "positive" (the machine is shared and noisy).
"""

from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_user_error, run_cli
from rvc_compile.measure.bench import BenchSettings, format_table, run_bench, write_json
from rvc_compile.measure.sources import export_naive_onnx, parse_source, parse_sources
from rvc_compile.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
ARTIFACT_MIN_FRAMES = 30  # > a 0.25 s chunk (25 frames): streaming must report the artifact n/a


@pytest.fixture(scope="module")
def checkpoint(checkpoint_factory) -> Path:
    return checkpoint_factory(seed=5)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory, checkpoint) -> Path:
    from rvc_compile.build.pipeline import build
    from rvc_compile.recipe.schema import load_recipe

    directory = tmp_path_factory.mktemp("bench-artifact")
    recipe = directory / "bench-voice.yaml"
    recipe.write_text(textwrap.dedent(f"""
        name: bench-voice
        version: 1.0.0
        source:
          checkpoint: {checkpoint}
        target: {{backend: onnxruntime, device: cpu, precision: fp32, threads: 2}}
        shapes: {{mode: dynamic, min_frames: {ARTIFACT_MIN_FRAMES}, opt_frames: 60, max_frames: 400}}
        capture: {{exporter: torchscript}}
        passes:
          - name: fold_weight_norm
        latency: {{seconds: [0.5], repeat: 1, warmup: 0}}
        golden: {{seconds: [0.5], noise: seed:1}}
        output_dir: {directory / 'artifacts'}
    """))
    return build(load_recipe(recipe), log=lambda message: None).path


@pytest.fixture(scope="module")
def peaks():
    from rvc_compile.measure.floor import measure_peaks

    return measure_peaks(threads=1, size=256, repeat=1)


@pytest.fixture(scope="module")
def baseline_result(checkpoint, peaks):
    """Two eager sources at two lengths: the engine without a build (fast)."""
    settings = BenchSettings(seconds=(0.1, 0.3), repeat=2, min_repeat=1, threads=1, warmup=1)
    return run_bench([str(checkpoint), f"eager-bf16:{checkpoint}"], settings, peaks=peaks)


@pytest.fixture(scope="module")
def lengths_result(checkpoint, artifact, peaks):
    """Every kind of source in one run, the artifact's range excluding the shorter length."""
    sources = [str(checkpoint), f"eager-bf16:{checkpoint}", f"naive-onnx:{checkpoint}", str(artifact)]
    settings = BenchSettings(seconds=(0.1, 0.3), repeat=2, min_repeat=1, threads=1, warmup=1)
    return run_bench(sources, settings, peaks=peaks)


# -- sources ---------------------------------------------------------------------------------------

def test_named_baselines_resolve(checkpoint):
    assert parse_source(str(checkpoint)).kind == "eager-fp32"
    assert parse_source(f"eager-fp32:{checkpoint}").kind == "eager-fp32"
    assert parse_source(f"eager-bf16:{checkpoint}").kind == "eager-bf16"
    assert parse_source(f"naive-onnx:{checkpoint}").kind == "naive-onnx"
    labels = [s.label for s in parse_sources([str(checkpoint), str(checkpoint), f"naive-onnx:{checkpoint}"])]
    assert len(set(labels)) == 3, labels


@pytest.mark.slow
def test_an_artifact_folder_resolves_to_its_name(artifact):
    found = parse_source(str(artifact))
    assert (found.kind, found.label) == ("artifact", "bench-voice@1.0.0")
    assert parse_source(f"artifact:{artifact}").kind == "artifact"


@pytest.mark.parametrize("text, fragment", [
    ("missing.pth", "no such checkpoint or artifact"),
    ("tensorrt:model.pth", "unknown source kind 'tensorrt'"),
    ("naive-onnx:missing.pth", "no such checkpoint or artifact"),
])
def test_bad_sources_are_one_line_input_errors(text, fragment):
    with pytest.raises(InputError, match=fragment):
        parse_source(text)


def test_a_folder_that_is_no_artifact_is_refused(tmp_path):
    with pytest.raises(InputError, match="folder without manifest.json"):
        parse_source(str(tmp_path))
    with pytest.raises(InputError, match="no manifest.json"):
        parse_source(f"artifact:{tmp_path}")


def test_cli_bad_source_exits_2_with_one_line(tmp_path, checkpoint):
    assert_user_error(run_cli("bench", tmp_path / "nope.pth", "--no-floor"), "nope.pth", "no such checkpoint")
    assert_user_error(run_cli("bench", "tensorrt:x.pth", "--no-floor"), "unknown source kind")
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint at all")
    assert_user_error(run_cli("bench", broken, "--seconds", "0.1", "--no-floor"), "broken.pth")
    assert_user_error(run_cli("bench", broken, "--seconds", "0,x"), "--seconds")
    assert_user_error(run_cli("bench", checkpoint, "--speaker", "99", "--no-floor"), "--speaker 99", "out of range")


def test_sources_must_take_the_same_inputs(checkpoint, checkpoint_factory):
    """The parent's check on what the workers report: one component, inputs that fit every source, one speaker."""
    from types import SimpleNamespace

    from rvc_compile.measure.bench import _common_model
    from rvc_compile.measure.sources import load_checkpoint_source, model_info

    def worker(path, **facts):
        component, loaded = load_checkpoint_source(path)
        return SimpleNamespace(spec=parse_source(str(path)), info={**model_info(component, loaded.spec), **facts})

    v2, fixed = worker(checkpoint), worker(checkpoint, fixed_speaker=2)
    model, description, speaker = _common_model([v2, fixed], BenchSettings())
    assert (model.kind, model.frames(0.3), description["feature_dim"], description["has_f0"], speaker) == ("synthesizer", 30, 768, True, 2)
    with pytest.raises(InputError, match=r"a different model from .*feature_dim 256 vs 768, has_f0 False vs True.*bench one model per run"):
        _common_model([v2, worker(checkpoint_factory(version="v1", f0=False))], BenchSettings())
    with pytest.raises(InputError, match="--speaker 1: .* is built for speaker 2 only"):
        _common_model([v2, fixed], BenchSettings(speaker=1))


# -- the naive baseline ----------------------------------------------------------------------------

def test_naive_onnx_is_a_single_length_trace(checkpoint, tmp_path):
    """The documented limitation: a plain traced export runs at its traced length and nowhere else."""
    import onnxruntime as ort

    from rvc_compile.capture.export import graph_inputs
    from rvc_compile.components.synthesizer.checkpoint import load_checkpoint
    from rvc_compile.components.synthesizer.model import input_names
    from rvc_compile.components.synthesizer.reference import ReferenceModel

    path = export_naive_onnx(str(checkpoint), 20, str(tmp_path / "naive.onnx"))
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    spec = load_checkpoint(checkpoint).spec
    names = input_names(spec)
    at_traced = graph_inputs(spec, names, 20, seed=1)
    audio = session.run(None, at_traced)[0].reshape(-1)
    reference = ReferenceModel.from_path(checkpoint)
    want = reference.infer(at_traced["features"][0], at_traced["f0"][0], noise={k: at_traced[k] for k in ("prior_noise", "source_noise")})
    assert np.linalg.norm(audio - want) / np.linalg.norm(want) < 1e-4
    with pytest.raises(Exception):
        session.run(None, graph_inputs(spec, names, 31, seed=1))


# -- the engine ------------------------------------------------------------------------------------

def test_result_structure_json_and_table(baseline_result, tmp_path):
    result = baseline_result
    assert result["schema"] == "rvc-compile-bench/1"
    assert result["machine"]["threads"] == 1 and result["machine"]["cpu"] and "flags" in result["machine"]
    assert result["settings"]["mode"] == "lengths" and result["settings"]["noise"] == "seed:0"
    assert [s["label"] for s in result["sources"]] == ["eager-fp32", "eager-bf16"]
    assert [(r["source"], r["frames"]) for r in result["results"]] == [
        ("eager-fp32", 10), ("eager-bf16", 10), ("eager-fp32", 30), ("eager-bf16", 30)]
    for row in result["results"]:
        assert row["status"] == "ok" and row["runs"] == 2 and 0 < row["p50_ms"] <= row["p99_ms"]
        assert row["rtf_p50"] == pytest.approx(row["p50_ms"] / 1e3 / row["seconds"])
        assert row["peak_rss_mb"] > 0
    assert result["sources"][0]["gflop_per_second_of_audio"] > 0
    assert [row["source"] for row in result["linearity"]] == ["eager-fp32", "eager-bf16"]
    path = tmp_path / "bench.json"
    write_json(result, path)  # strict JSON: no NaN, no numpy scalars
    assert json.loads(path.read_text())["results"] == json.loads(json.dumps(result["results"]))
    table = format_table(result)
    assert table.startswith("machine: ") and "1 threads" in table
    for column in ("p50 ms", "p90 ms", "p99 ms", "RTF p50", "speed-up", "x floor", "peak MB", "size MB", "eager-fp32", "eager-bf16"):
        assert column in table


def test_speedup_is_relative_to_the_first_source(baseline_result):
    for seconds in (0.1, 0.3):
        rows = {r["source"]: r for r in baseline_result["results"] if r["seconds"] == pytest.approx(seconds)}
        first = rows["eager-fp32"]
        assert first["speedup_vs_first"] == 1.0
        assert rows["eager-bf16"]["speedup_vs_first"] == pytest.approx(first["p50_ms"] / rows["eager-bf16"]["p50_ms"])


def test_floor_ratio_uses_the_precision_of_each_source(baseline_result, peaks):
    rows = {r["source"]: r for r in baseline_result["results"] if r["frames"] == 30}
    gflop = baseline_result["sources"][0]["gflop_per_second_of_audio"]
    assert rows["eager-fp32"]["floor_precision"] == "fp32" and rows["eager-bf16"]["floor_precision"] == "bf16"
    for label, precision in (("eager-fp32", "fp32"), ("eager-bf16", "bf16")):
        expected_ms = gflop * rows[label]["seconds"] / peaks[precision]["gops"] * 1e3
        assert rows[label]["floor_ms"] == pytest.approx(expected_ms, rel=1e-3)
        assert rows[label]["x_floor"] == pytest.approx(rows[label]["p50_ms"] / rows[label]["floor_ms"])


def test_in_run_accuracy_is_against_the_eager_reference(baseline_result):
    rows = {r["source"]: r for r in baseline_result["results"] if r["frames"] == 30}
    assert rows["eager-fp32"]["accuracy_vs_reference"]["snr_db"] is None  # identical to itself
    assert 0 < rows["eager-bf16"]["accuracy_vs_reference"]["snr_db"] < 60  # bf16 autocast loses accuracy
    assert all("accuracy_vs_reference" not in r for r in baseline_result["results"] if r["frames"] == 10)


@pytest.mark.slow
def test_every_kind_of_source_in_one_run(lengths_result, tmp_path):
    result = lengths_result
    assert [s["label"] for s in result["sources"]] == ["eager-fp32", "eager-bf16", "naive-onnx", "bench-voice@1.0.0"]
    assert [s["kind"] for s in result["sources"]] == ["eager-fp32", "eager-bf16", "naive-onnx", "artifact"]
    assert len(result["results"]) == 4 * 2
    for row in result["results"]:
        assert row["status"] in ("ok", "n/a")
        if row["status"] == "ok":
            assert row["runs"] == 2 and 0 < row["p50_ms"] <= row["p99_ms"]
            assert row["rtf_p50"] == pytest.approx(row["p50_ms"] / 1e3 / row["seconds"])
            assert row["peak_rss_mb"] > 0
    artifact = result["sources"][3]
    assert artifact["size_bytes"] > 0 and artifact["report"]["accuracy_passed"] is True
    assert artifact["gflop_per_second_of_audio"] > 0 and "artifact graph" in artifact["flops_counted_from"]
    naive = result["sources"][2]
    assert naive["size_bytes"] > 0 and set(naive["export_s"]) == {"10", "30"}  # one trace per length
    rows = {r["source"]: r for r in result["results"] if r["frames"] == 30}
    assert rows["naive-onnx"]["accuracy_vs_reference"]["snr_db"] > 60
    assert rows["bench-voice@1.0.0"]["accuracy_vs_reference"]["snr_db"] > 60
    # Each source's memory is its own process's: the artifact's worker never imports torch.
    assert rows["bench-voice@1.0.0"]["peak_rss_mb"] < rows["eager-fp32"]["peak_rss_mb"]
    assert "n/a" in format_table(result)


@pytest.mark.slow
def test_an_artifact_outside_its_frame_range_is_not_applicable(lengths_result):
    row = next(r for r in lengths_result["results"] if r["source"] == "bench-voice@1.0.0" and r["frames"] == 10)
    assert row["status"] == "n/a" and str(ARTIFACT_MIN_FRAMES) in row["reason"]
    ok = next(r for r in lengths_result["results"] if r["source"] == "bench-voice@1.0.0" and r["frames"] == 30)
    assert ok["status"] == "ok"


@pytest.mark.slow
def test_streaming_reports_na_for_an_artifact_whose_range_excludes_the_chunk(checkpoint, artifact):
    settings = BenchSettings(chunk_seconds=0.25, stream_seconds=0.5, repeat=1, threads=1, floor=False)
    result = run_bench([str(checkpoint), str(artifact)], settings)
    rows = {r["source"]: r for r in result["results"]}
    assert result["settings"]["mode"] == "streaming"
    assert rows["eager-fp32"]["status"] == "ok" and rows["eager-fp32"]["chunks"] == 2 and rows["eager-fp32"]["runs"] == 2
    assert rows["eager-fp32"]["rtf_p50"] == pytest.approx(rows["eager-fp32"]["p50_ms"] / 250.0)
    assert rows["bench-voice@1.0.0"]["status"] == "n/a" and "at least" in rows["bench-voice@1.0.0"]["reason"]
    assert "streaming" in format_table(result)


@pytest.mark.slow
def test_cli_json_is_clean_and_first_source_is_the_baseline(checkpoint, artifact):
    process = run_cli("bench", artifact, checkpoint, "--seconds", "0.3", "--repeat", "1", "--threads", "1", "--no-floor", "--json")
    assert process.returncode == 0, process.stderr
    result = json.loads(process.stdout)  # worker chatter must never reach stdout
    rows = {r["source"]: r for r in result["results"]}
    assert rows["bench-voice@1.0.0"]["speedup_vs_first"] == 1.0
    assert rows["eager-fp32"]["speedup_vs_first"] == pytest.approx(rows["bench-voice@1.0.0"]["p50_ms"] / rows["eager-fp32"]["p50_ms"])
    assert result["floor"] is None and rows["eager-fp32"]["x_floor"] is None


# -- the floor -------------------------------------------------------------------------------------

def test_floor_peaks_are_positive_for_every_precision(peaks):
    for precision in ("fp32", "bf16", "int8"):
        entry = peaks[precision]
        assert entry["gops"] > 0, entry
        assert entry["implementation"] in entry["candidates"]
        assert entry["gops"] == max(v for v in entry["candidates"].values() if v)


@pytest.mark.slow
def test_graph_flop_count_matches_the_torch_count(checkpoint, artifact):
    from rvc_compile.components.synthesizer.checkpoint import load_checkpoint
    from rvc_compile.measure.floor import precision_class
    from rvc_compile.measure.flops import graph_flops, synthesizer_flops

    spec = load_checkpoint(checkpoint).spec
    frames = 100
    counted = synthesizer_flops(spec, frames)
    assert counted["total"] > 0 and counted["dec"] > counted["enc_p"]
    shapes = {"features": [1, frames, 768], "f0": [1, frames], "prior_noise": [1, spec.inter_channels, frames],
              "source_noise": [1, frames * spec.hop_length], "speaker": [1]}
    assert graph_flops(artifact / "model.onnx", shapes) == pytest.approx(counted["total"], rel=0.01)
    assert [precision_class(p) for p in ("fp32", "fp16", "bf16", "int8", "int8-mixed")] == ["fp32", "fp32", "bf16", "int8", "int8"]


# -- profiles and the document ---------------------------------------------------------------------

def _check_profile(profile):
    modules = {row["module"]: row for row in profile["by_module"]}
    assert {"enc_p", "flow", "dec.stage0", "dec.stage1"} <= set(modules), modules
    assert sum(row["share"] for row in modules.values()) == pytest.approx(1.0, abs=0.02)
    assert modules["dec.stage1"]["gflop"] > 0 and profile["total_ms"] > 0


def test_module_groups_and_the_reference_profile(checkpoint):
    from rvc_compile.measure.profile import module_group, profile_reference

    assert module_group("dec.resblocks.7.convs1.0.weight", 3) == "dec.stage2"
    assert module_group("dec.ups.1.weight_quantized", 3) == "dec.stage1"
    assert module_group("dec.noise_convs.3.weight", 3) == "dec.stage3"
    assert module_group("enc_p.encoder.attn_layers.0.conv_q.weight", 3) == "enc_p"
    assert module_group("val_12", 3) is None
    _check_profile(profile_reference(checkpoint, seconds=0.3, threads=1, repeat=1))


@pytest.mark.slow
def test_artifact_profile_groups_nodes_by_the_weights_they_read(artifact):
    from rvc_compile.measure.profile import profile_artifact

    profile = profile_artifact(artifact, seconds=0.3, threads=1, repeat=1)
    _check_profile(profile)
    # The fused kernel's name depends on the CPU (Conv, FusedConv, NchwcConv, QLinearConv...): a convolution leads.
    assert "Conv" in profile["by_op_type"][0]["op_type"], profile["by_op_type"][:3]


@pytest.mark.slow
def test_profile_of_a_host_source_openvino_artifact(tiny_openvino_artifact):
    """The profiler feeds the graph's own inputs: here the host-computed ``excitation``, not ``f0``."""
    from rvc_compile.measure.profile import profile_artifact

    profile = profile_artifact(tiny_openvino_artifact, seconds=0.2, threads=1, repeat=1)
    assert profile["total_ms"] > 0 and profile["by_op_type"]
    modules = {row["module"]: row for row in profile["by_module"]}
    assert modules["dec.stage1"]["gflop"] > 0 and modules["dec.stage1"]["ms"] > 0
    assert modules.get("other", {"share": 0})["share"] < 0.5  # nodes are attributed to modules, not lumped


def test_report_renders_the_document_and_plot(baseline_result, checkpoint, peaks, tmp_path):
    spec = importlib.util.spec_from_file_location("bench_report", ROOT / "benchmarks" / "report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    streaming = run_bench([str(checkpoint)], BenchSettings(chunk_seconds=0.25, stream_seconds=0.5, repeat=1, threads=1), peaks=peaks)
    results = tmp_path / "results"
    for name, value in {
        "run": {"quick": True, "model_size": "small", "checkpoint": checkpoint.name, "wall_time_s": 1.0,
                "plan": {"repeat": 2, "min_repeat": 1}},
        "builds": {"builds": [{"recipe": "x.yaml", "status": "failed", "error": "error: boom"},
                              {"recipe": "y.yaml", "name": "bench-voice", "status": "built", "build_time_s": 3.0, "passes": ["fold_weight_norm"]}]},
        "floor": peaks, "bench_lengths": baseline_result, "bench_streaming": streaming, "profiles": {}, "sections": {},
    }.items():
        write_json(value, results / f"{name}.json")
    doc = report.render(results, tmp_path / "docs" / "PERFORMANCE.md")
    text = doc.read_text()
    for fragment in ("QUICK RUN", "## Targets", "## 2 s of audio", "## Independent chunks: 0.25 s (the graph alone, no context)", "## Real-time streaming", "## How cost grows with the work",
                     "## The physical floor", "**failed**: error: boom", "PENDING", "issue 6", "1 threads"):
        assert fragment in text, fragment
    assert text.count("**Machine:**") >= 3  # every table states the machine
    assert (tmp_path / "docs" / "performance" / report.PLOT_NAME).stat().st_size > 1000


def test_accuracy_of_an_output_of_another_length_is_not_comparable():
    """A real-time block artifact renders its block only: no SNR is printed against the whole reference."""
    from rvc_compile.measure.bench import _accuracy_lines

    same = {"reference": "eager-fp32", "length_mismatch": 0, "snr_db": 40.0, "log_mel_db": 0.1}
    block = {"reference": "eager-fp32", "length_mismatch": -40000, "snr_db": -1e9, "log_mel_db": 1e9}
    lines = _accuracy_lines([("eager-fp32", {**same, "snr_db": None, "log_mel_db": 0.0}), ("voice", same), ("voice-block", block)])
    assert "40.0" in lines[2] and "0.1000" in lines[2]
    assert "not comparable: its output is -40000 samples" in lines[3] and "1e" not in lines[3]
