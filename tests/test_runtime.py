"""The runtime under hostile input and load: every malformed input is a clear error (never a crash or
silent garbage), parallel threads give the serial outputs bit for bit, and memory stays flat."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from rvc_compile import runtime
from rvc_compile.errors import ArtifactError, BuildError, InputError

from conftest import assert_user_error, run_cli

FRAMES = 16  # inside the tiny artifacts' 8..32
RNG = np.random.default_rng(0)
FEATURES = RNG.standard_normal((FRAMES, 768)).astype(np.float32)
F0 = np.full(FRAMES, 150.0, np.float32)
NOISE = {"prior_noise": np.zeros((1, 16, FRAMES), np.float32), "source_noise": np.zeros((1, FRAMES * 400), np.float32)}


def _with_nan(array: np.ndarray, value: float, index: int = 3) -> np.ndarray:
    array = array.copy()
    array.reshape(-1)[index] = value
    return array


# (description, keyword arguments for infer, error type, fragment of the one-line message)
BAD_INPUTS = [
    ("features 256 wide for a v2 model", dict(features=np.zeros((FRAMES, 256), np.float32)), InputError, "256 wide"),
    ("features 767 wide", dict(features=np.zeros((FRAMES, 767), np.float32)), InputError, "767 wide"),
    ("features 0 wide", dict(features=np.zeros((FRAMES, 0), np.float32)), InputError, "0 wide"),
    ("features 7 frames (compiled minimum 8)", dict(features=FEATURES[:7], f0=F0[:7]), InputError, "at least 8"),
    ("features 33 frames (compiled maximum 32)", dict(features=np.zeros((33, 768), np.float32), f0=np.zeros(33, np.float32)), InputError, "at most 32"),
    ("features 100000 frames", dict(features=np.zeros((100000, 768), np.float32), f0=np.zeros(100000, np.float32)), InputError, "at most 32"),
    ("empty features and f0", dict(features=np.zeros((0, 768), np.float32), f0=np.zeros(0, np.float32)), InputError, "0 feature frames"),
    ("features NaN", dict(features=_with_nan(FEATURES, np.nan)), InputError, "NaN or Inf"),
    ("features +Inf", dict(features=_with_nan(FEATURES, np.inf)), InputError, "NaN or Inf"),
    ("features -Inf", dict(features=_with_nan(FEATURES, -np.inf)), InputError, "NaN or Inf"),
    ("features float64 beyond float32's range (1e300)", dict(features=FEATURES.astype(np.float64) * 1e300), InputError, "beyond float32's range"),
    ("features finite but huge (1e30): the model overflows", dict(features=FEATURES * np.float32(1e30)), InputError, "output has NaN or Inf"),
    ("f0 NaN", dict(f0=_with_nan(F0, np.nan)), InputError, "f0 contains NaN"),
    ("f0 +Inf", dict(f0=_with_nan(F0, np.inf)), InputError, "f0 contains NaN"),
    ("f0 negative", dict(f0=_with_nan(F0, -5.0)), InputError, "negative"),
    ("f0 at the Nyquist frequency (20 kHz at 40 kHz)", dict(f0=_with_nan(F0, 20000.0)), InputError, "Nyquist"),
    ("f0 of 1e30 Hz", dict(f0=np.full(FRAMES, 1e30, np.float32)), InputError, "Nyquist"),
    ("f0 3 frames shorter than features", dict(f0=F0[:-3]), InputError, "13 frames"),
    ("f0 missing for a pitch model", dict(f0=None), InputError, "needs f0"),
    ("f0 two-dimensional [2, T]", dict(f0=np.stack([F0, F0])), InputError, "f0 must be [frames]"),
    ("features int32", dict(features=FEATURES.astype(np.int32)), InputError, "floating point"),
    ("features bool", dict(features=FEATURES > 0), InputError, "floating point"),
    ("features complex64", dict(features=FEATURES.astype(np.complex64)), InputError, "floating point"),
    ("features object array", dict(features=FEATURES.astype(object)), InputError, "floating point"),
    ("features strings", dict(features=np.full((FRAMES, 768), "a")), InputError, "floating point"),
    ("features None", dict(features=None), InputError, "floating point"),
    ("features ragged nested lists", dict(features=[[0.0] * 768, [0.0] * 5]), InputError, "features"),
    ("f0 int64", dict(f0=F0.astype(np.int64)), InputError, "floating point"),
    ("features 1-D", dict(features=FEATURES[0]), InputError, "shape"),
    ("features 0-D scalar", dict(features=np.float32(1.0)), InputError, "shape"),
    ("features batch of 2 [2, T, C]", dict(features=np.stack([FEATURES, FEATURES])), InputError, "shape"),
    ("features 4-D", dict(features=FEATURES[None, None]), InputError, "shape"),
    ("speaker 4 of 4", dict(speaker=4), InputError, "out of range"),
    ("speaker -1", dict(speaker=-1), InputError, "out of range"),
    ("speaker 2**70", dict(speaker=2**70), InputError, "out of range"),
    ("speaker True", dict(speaker=True), InputError, "must be an integer"),
    ("speaker 0.0", dict(speaker=0.0), InputError, "must be an integer"),
    ("speaker '0'", dict(speaker="0"), InputError, "must be an integer"),
    ("noise 'random'", dict(noise="random"), InputError, "not 'zero' or 'seed:N'"),
    ("noise 'seed:-1'", dict(noise="seed:-1"), InputError, "not 'zero' or 'seed:N'"),
    ("noise None", dict(noise=None), InputError, "not 'zero' or 'seed:N'"),
    ("noise arrays missing source_noise", dict(noise={"prior_noise": NOISE["prior_noise"]}), InputError, "missing array 'source_noise'"),
    ("noise array of the wrong shape", dict(noise={**NOISE, "prior_noise": np.zeros((16, FRAMES), np.float32)}), InputError, "expected [1, 16, 16]"),
    ("noise array with NaN", dict(noise={**NOISE, "prior_noise": _with_nan(NOISE["prior_noise"], np.nan)}), InputError, "NaN or Inf"),
]


def _infer(voice, **change):
    arguments = {"features": FEATURES, "f0": F0, "speaker": 0, "noise": "zero", **change}
    return voice.infer(arguments["features"], arguments["f0"], speaker=arguments["speaker"], noise=arguments["noise"])


@pytest.fixture(scope="module")
def voice(tiny_artifact):
    return runtime.load(tiny_artifact)


def test_every_malformed_input_is_a_one_line_error(voice, hostile):
    for description, change, error, fragment in BAD_INPUTS:
        row = hostile.case("Runtime input validation", description, expect=f"{error.__name__} containing '{fragment}'")
        with pytest.raises(error) as info:
            _infer(voice, **change)
        message = str(info.value)
        assert fragment in message and "\n" not in message, (description, message)
        row.note(f"'{message.split(': ', 1)[-1][:80]}'")
    # The voice still works after all of that.
    assert np.isfinite(_infer(voice)).all()


ACCEPTED = [
    ("features float16", dict(features=FEATURES.astype(np.float16)), "float16 values, so compared with float16-rounded input"),
    ("features float64", dict(features=FEATURES.astype(np.float64)), None),
    ("features big-endian float32", dict(features=FEATURES.astype(">f4")), None),
    ("features Fortran-ordered", dict(features=np.asfortranarray(FEATURES)), None),
    ("features a strided view", dict(features=np.repeat(FEATURES, 2, axis=1)[:, ::2]), None),
    ("features read-only", dict(features=np.frombuffer(FEATURES.tobytes(), np.float32).reshape(FRAMES, 768)), None),
    ("features a nested Python list", dict(features=FEATURES.tolist()), None),
    ("features with a batch axis [1, T, C]", dict(features=FEATURES[None]), None),
    ("speaker a numpy int64", dict(speaker=np.int64(0)), None),
    ("f0 -0.0 (unvoiced)", dict(f0=np.full(FRAMES, -0.0, np.float32)), "compared with f0 = +0.0"),
]


def test_unusual_but_valid_inputs_give_exactly_the_plain_result(voice, hostile):
    """Layouts and dtypes that mean the same numbers must give the same audio, bit for bit."""
    baseline = _infer(voice)
    for description, change, note in ACCEPTED:
        row = hostile.case("Runtime input validation", f"valid but unusual: {description}", expect="the same audio as float32 C-contiguous input, bit for bit")
        expected = baseline
        if description == "features float16":
            expected = _infer(voice, features=FEATURES.astype(np.float16).astype(np.float32))
        if description.startswith("f0 -0.0"):
            expected = _infer(voice, f0=np.zeros(FRAMES, np.float32))
        assert np.array_equal(_infer(voice, **change), expected), description
        if note:
            row.note(note)


def test_artifact_inputs_on_the_command_line_exit_2_and_write_nothing(tiny_artifact, tmp_path, hostile):
    arrays = {"features.npy": FEATURES, "f0.npy": F0, "f0_nyquist.npy": np.full(FRAMES, 25000.0, np.float32),
              "features_33.npy": np.zeros((33, 768), np.float32), "features_nan.npy": _with_nan(FEATURES, np.nan),
              "features_huge.npy": FEATURES * np.float32(1e30)}
    for name, array in arrays.items():
        np.save(tmp_path / name, array)
    (tmp_path / "object.npy").write_bytes(b"\x93NUMPY garbage")
    cases = [
        ("features_33.npy", "f0.npy", ["at most 32"]),
        ("features_nan.npy", "f0.npy", ["features_nan.npy", "NaN"]),
        ("features.npy", "f0_nyquist.npy", ["f0_nyquist.npy", "Nyquist"]),
        ("features_huge.npy", "f0.npy", ["features_huge.npy", "output has NaN or Inf"]),
        ("object.npy", "f0.npy", ["object.npy", "not a readable"]),
    ]
    hostile.case("Runtime input validation", "`rvc-compile infer ARTIFACT` with: " + "; ".join(f"{f} + {p}" for f, p, _ in cases), count=len(cases),
                 expect="exit 2, one stderr line naming the file, no output written")
    for features, f0, fragments in cases:
        out = tmp_path / "out.wav"
        process = run_cli("infer", tiny_artifact, "--features", tmp_path / features, "--f0", tmp_path / f0, "-o", out)
        assert_user_error(process, *fragments)
        assert not out.exists()


def test_openvino_artifact_validates_inputs_the_same_way(tiny_openvino_artifact, hostile):
    voice = runtime.load(tiny_openvino_artifact)
    chosen = [case for case in BAD_INPUTS if case[0] in ("features 256 wide for a v2 model", "features 33 frames (compiled maximum 32)", "features NaN",
                                                         "empty features and f0", "features finite but huge (1e30): the model overflows", "f0 of 1e30 Hz",
                                                         "features int32")]
    row = hostile.case("Runtime input validation", "on an OpenVINO artifact: " + "; ".join(case[0] for case in chosen), count=0,
                       expect="the same one-line errors as onnxruntime")
    for description, change, error, fragment in chosen:
        with pytest.raises(error, match=fragment.replace("(", r"\(").replace(")", r"\)")):
            _infer(voice, **change)
        row.count += 1


# -- load ------------------------------------------------------------------------------------------

def _cases(voice, count: int) -> list[tuple[np.ndarray, np.ndarray | None, str]]:
    rng = np.random.default_rng(1)
    cases = []
    for index in range(count):
        frames = int(rng.integers(voice.min_frames, voice.max_frames + 1))
        f0 = rng.uniform(0, 400, frames).astype(np.float32) if voice.has_f0 else None
        cases.append((rng.standard_normal((frames, voice.feature_dim)).astype(np.float32), f0, f"seed:{index}"))
    return cases


@pytest.mark.parametrize("backend,threads", [("onnxruntime", 1), ("onnxruntime", 2), ("openvino", 1)])
def test_parallel_threads_give_the_serial_outputs_bit_for_bit(request, backend, threads, hostile):
    artifact = request.getfixturevalue("tiny_artifact" if backend == "onnxruntime" else "tiny_openvino_artifact")
    voice = runtime.load(artifact, threads=threads)
    cases = _cases(voice, 48)
    row = hostile.case("Load", f"{backend} ({threads} intra-op thread{'s' if threads > 1 else ''}): 8 Python threads x 4 rounds over 48 inputs of 8-32 frames, seeded noise, one loaded artifact",
                       count=8 * 4 * 48 // 8, expect="every output bit-identical to the serial output of the same input")
    serial = [voice.infer(features, f0, noise=noise) for features, f0, noise in cases]
    jobs = [index for _ in range(4) for index in range(len(cases))]
    with ThreadPoolExecutor(max_workers=8) as pool:
        parallel = list(pool.map(lambda index: (index, voice.infer(*cases[index][:2], noise=cases[index][2])), jobs))
    mismatches = [index for index, audio in parallel if not np.array_equal(audio, serial[index])]
    assert not mismatches, f"{len(mismatches)} of {len(parallel)} parallel outputs differ from serial"
    row.note(f"{len(parallel)} parallel calls compared")


SOAK = r"""
import json, sys
import numpy as np
from rvc_compile import runtime

def rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

path, calls = sys.argv[1], int(sys.argv[2])
voice = runtime.load(path, threads=1)
rng = np.random.default_rng(0)
samples = []
for index in range(calls):
    frames = voice.min_frames + index % 3
    features = rng.standard_normal((frames, voice.feature_dim)).astype(np.float32)
    f0 = rng.uniform(0, 300, frames).astype(np.float32) if voice.has_f0 else None
    voice.infer(features, f0, noise=f"seed:{index}")
    if index % 100 == 99:
        samples.append(rss_mb())
print(json.dumps(samples))
"""


@pytest.mark.parametrize("backend,calls", [("onnxruntime", 3000), pytest.param("openvino", 2000, marks=pytest.mark.slow)])
def test_memory_stays_flat_over_thousands_of_calls(request, backend, calls, hostile):
    """A fresh process loads the artifact and runs ``calls`` tiny inferences (8-10 frames, new arrays and
    noise each time), sampling VmRSS every 100 calls; after the first 500 (warm-up: allocator pools,
    the backend's shape caches) the resident set may not grow by more than 4 MB (a leak of the output
    alone, ~13 KB a call, would add tens of MB)."""
    artifact = request.getfixturevalue("tiny_artifact" if backend == "onnxruntime" else "tiny_openvino_artifact")
    row = hostile.case("Load", f"{backend}: {calls} sequential calls in a fresh process (bounded soak)", count=calls,
                       expect="VmRSS growth after 500 warm-up calls <= 4 MB")
    process = subprocess.run([sys.executable, "-c", SOAK, str(artifact), str(calls)], capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr[-2000:]
    samples = json.loads(process.stdout.strip().splitlines()[-1])
    warm = samples[4]  # after 500 calls
    growth = max(samples[5:]) - warm
    row.note(f"VmRSS {warm:.0f} MB after warm-up, {samples[-1]:.0f} MB at the end (max growth {growth:+.1f} MB)")
    assert growth <= 4.0, samples


# -- a bug found on the way: OpenVINO and pitch models ----------------------------------------------

def test_openvino_runs_a_captured_pitch_model_without_host_source(tmp_path, checkpoint_factory, hostile):
    from rvc_compile.backends.openvino import Runner, compile_options
    from rvc_compile.capture.export import export_onnx, graph_inputs
    from rvc_compile.components.synthesizer.checkpoint import load_checkpoint
    from rvc_compile.components.synthesizer.model import build_model

    hostile.case("Load", "OpenVINO runner on a captured pitch model without the host_source pass", expect="runs (was broken: a fused tensor name hid the f0 input)")
    checkpoint = load_checkpoint(checkpoint_factory())
    model = build_model(checkpoint.spec, checkpoint.state_dict)
    graph = export_onnx(model, checkpoint.spec, model.input_names, tmp_path / "captured.onnx", exporter="torchscript", opset=18,
                        min_frames=8, max_frames=32, static_frames=None)
    runner = Runner(graph, compile_options("fp32", 1))
    audio = runner.run(graph_inputs(checkpoint.spec, model.input_names, 16, seed=1))
    assert np.isfinite(audio).all()
