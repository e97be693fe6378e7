"""Real-time streaming: block graphs (the ``stream:`` recipe section, ``stream_block`` pass), the block
engine (``runtime.stream``: ring buffer, pitch cache, SOLA, bad blocks, threads) and ``rvc-compile stream``
/ ``bench --stream``.

Engine tests run on fake engines whose outputs encode where their inputs came from, so alignment,
caching and state are checked exactly; the graph tests build small real artifacts (seconds each).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_user_error, run_cli, write_tiny_recipe
from rvc_compile.errors import InputError, RecipeError
from rvc_compile.runtime.pipeline import EncoderEngine, Engines
from rvc_compile.runtime.stream import FRAME, BlockGeometry, Stream, pitch_samples, sola, stream_audio

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT / "calibration" / "data" / "arctic_a0001.wav"


# -- fakes ---------------------------------------------------------------------------------------------

class FakeVoice:
    """A voice whose output encodes its inputs: each rendered frame's samples hold that frame's f0 and
    first feature value, so tests can read back exactly what the engine fed it."""

    sample_rate, hop_length, feature_dim, has_f0 = 16000, 160, 4, True

    def __init__(self, skip: int = 0, stream: dict | None = None):
        from types import SimpleNamespace

        self.spec = SimpleNamespace(skip_frames=skip, hop_length=160, feature_dim=4)
        self.stream = stream
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []

    def infer(self, features, f0, speaker=0, noise="zero"):
        self.calls.append((features.copy(), None if f0 is None else f0.copy()))
        rendered = features.shape[0] - self.spec.skip_frames
        return np.repeat(features[-rendered:, 0], self.hop_length).astype(np.float32)


def position_encoder() -> EncoderEngine:
    """Features whose first value is the (window-relative) start sample of each 320-sample hop."""
    def encode(audio: np.ndarray) -> np.ndarray:
        frames = (audio.shape[0] - 400) // 320 + 1
        out = np.zeros((frames, 4), np.float32)
        out[:, 0] = audio[np.arange(frames) * 320]
        return out

    return EncoderEngine(encode, 4, "position encoder")


def position_pitch(audio: np.ndarray) -> np.ndarray:
    """f0 whose value is the audio at each frame's centre (frame j: sample 160 j)."""
    frames = audio.shape[0] // FRAME + 1
    centres = np.minimum(np.arange(frames) * FRAME, audio.shape[0] - 1)
    return audio[centres].astype(np.float64)


def ramp_blocks(stream: Stream, count: int, start: int = 1) -> list[np.ndarray]:
    """Blocks whose samples are their absolute sample index (1-based, so silence is distinguishable)."""
    n = stream.block_samples
    return [np.arange(start + i * n, start + (i + 1) * n, dtype=np.float32) for i in range(count)]


def fake_stream(geometry=(5, 10, 2, 1), voice: FakeVoice | None = None, **options) -> Stream:
    block, context, crossfade, search = (g / 100 for g in geometry)
    engines = Engines(encoder=position_encoder(), synthesizer=voice or FakeVoice(), rmvpe=position_pitch, label="fake")
    return Stream(engines, block=block, context=context, crossfade=crossfade, search=search, synth_context=0.05, **options)


# -- geometry and SOLA -----------------------------------------------------------------------------------

def test_geometry_in_frames_and_its_errors():
    g = BlockGeometry.from_seconds(0.25, 2.5, 0.05)
    assert (g.window, g.rendered, g.delay) == (281, 31, 6)
    assert pitch_samples(g, "rmvpe") == 4960 and (pitch_samples(g, "rmvpe") // FRAME + 1) % 32 == 0  # whole RMVPE poolings
    assert pitch_samples(g, "harvest") == 4800
    with pytest.raises(InputError, match="whole number of 10 ms"):
        BlockGeometry.from_seconds(0.255, 2.5, 0.05)
    with pytest.raises(InputError, match="crossfade .* longer than the block"):
        BlockGeometry.from_seconds(0.05, 1.0, 0.1)
    with pytest.raises(InputError, match="at least 10 ms"):
        BlockGeometry.from_seconds(0.0, 1.0, 0.0)


def test_sola_finds_the_continuation_and_crossfades_without_a_jump():
    wave = np.random.default_rng(0).standard_normal(4000).astype(np.float32)  # no period: one best offset
    block, crossfade, search = 1000, 200, 100
    previous = wave[500:700]  # the last block's tail
    for true_offset in (0, 37, 100):
        rendered = wave[500 - true_offset : 500 - true_offset + block + crossfade + search]
        out, tail, offset = sola(rendered, previous, block, search)
        assert offset == true_offset
        np.testing.assert_allclose(out[:crossfade], previous, atol=1e-5)  # the same signal: the fade is seamless
        np.testing.assert_allclose(tail, wave[500 + block : 500 + block + crossfade], atol=1e-6)
        assert out.shape == (block,)
    silent = sola(np.ones(block + crossfade + search, np.float32), np.zeros(crossfade, np.float32), block, search)
    assert silent[2] == 0 and silent[0][0] == 0.0 and silent[0][-1] == 1.0  # fades in from the silent start


# -- the engine ------------------------------------------------------------------------------------------

def test_each_push_returns_one_block_and_feeds_the_window_aligned():
    voice = FakeVoice()
    stream = fake_stream(voice=voice)  # 50 ms blocks, 100 ms context, 20 ms crossfade, 10 ms search at 16 kHz
    g = stream.geometry
    blocks = ramp_blocks(stream, 6)
    outs = [stream.push(block) for block in blocks]
    assert all(out.shape == (g.block * 160,) and out.dtype == np.float32 for out in outs)
    features, f0 = voice.calls[-1]
    end = 6 * stream.block_samples  # absolute index of the window's last sample (1-based ramp)
    window_start = end - g.window * FRAME + 1
    lead = 5  # synth_context 0.05 s: the dynamic voice sees 5 frames before the rendered ones
    first_frame = g.context - lead
    # window frame k <-> window sample 160 k: f0 is the audio at each frame's centre, features the start of its hop
    expected_f0 = window_start + (first_frame + np.arange(f0.shape[0])) * FRAME
    cached = np.arange(f0.shape[0]) + first_frame >= g.window - (pitch_samples(g, "rmvpe") // FRAME + 1 - 4)
    np.testing.assert_array_equal(f0[cached], expected_f0[cached])
    hop = (first_frame + np.arange(features.shape[0])) // 2
    np.testing.assert_array_equal(features[:, 0][hop < g.window // 2 - 1], (window_start + hop * 320)[hop < g.window // 2 - 1])
    assert stream.blocks == 6 and len(stream.timings) == 6 and stream.stats()["blocks"] == 6


def test_pitch_cache_keeps_older_estimates_and_shift_applies_at_once():
    voice = FakeVoice()
    stream = fake_stream(voice=voice)
    g = stream.geometry
    for block in ramp_blocks(stream, 8):
        stream.push(block)
    before = voice.calls[-1][1]
    fresh = pitch_samples(g, "rmvpe") // FRAME + 1 - 4
    # frames older than what the last estimate covered keep the value they got when they were fresh
    assert stream._f0.shape == (g.window,)
    assert np.all(stream._f0[-fresh:] > 0) and np.all(np.diff(stream._f0[-fresh:]) == FRAME)
    stream.pitch_shift = 12
    stream.push(ramp_blocks(stream, 1, start=8 * stream.block_samples + 1)[0])
    after = voice.calls[-1][1]
    np.testing.assert_allclose(after[:-g.block] / 2, before[g.block:], rtol=1e-6)  # the whole window an octave up, at once


def test_a_bad_block_is_refused_and_leaves_the_stream_as_it_was():
    good = ramp_blocks(fake_stream(), 5)
    reference = fake_stream()
    expected = [reference.push(block) for block in good]
    stream = fake_stream()
    n = stream.block_samples
    bad_blocks = [
        (np.full(n, np.nan, np.float32), "NaN or Inf"),
        (np.ones(n - 1, np.float32), f"the stream takes blocks of {n}"),
        (np.ones(n, np.int16), "must be float samples"),
        (np.ones((n, 2, 2), np.float32), "must be mono"),
    ]
    outs = []
    for index, block in enumerate(good):
        if index == 2:
            for bad, message in bad_blocks:
                with pytest.raises(InputError, match=message):
                    stream.push(bad)
            with pytest.raises(InputError, match="is at 48000 Hz but the stream takes 16000 Hz"):
                stream.push(block, sample_rate=48000)
        outs.append(stream.push(block))
    for got, want in zip(outs, expected):
        np.testing.assert_array_equal(got, want)
    stereo = np.stack([good[0], good[0]], axis=1)
    assert fake_stream().push(stereo).shape == (n,)  # [samples, channels] from a callback: mixed to mono
    stream.close()
    with pytest.raises(InputError, match="the stream is closed"):
        stream.push(good[0])


def test_silence_streams_and_other_input_rates_resample():
    stream = fake_stream(sample_rate=48000)
    assert stream.block_samples == 2400
    outs = [stream.push(np.zeros(2400, np.float32)) for _ in range(4)]
    assert all(out.shape == (800,) and not out.any() for out in outs)
    with pytest.raises(InputError, match="multiple of 100"):
        fake_stream(sample_rate=22050)


def test_settings_are_checked():
    stream = fake_stream()
    with pytest.raises(InputError, match="needs a retrieval index"):
        stream.index_rate = 0.5
    with pytest.raises(InputError, match="within"):
        stream.pitch_shift = float("nan")
    with pytest.raises(InputError, match="takes at most"):
        engines = Engines(encoder=EncoderEngine(position_encoder().encode, 4, "short encoder", max_samples=16000), synthesizer=FakeVoice(), rmvpe=position_pitch)
        Stream(engines, block=0.25, context=2.5, crossfade=0.05)


def test_window_must_fit_the_encoder():
    from types import SimpleNamespace

    short = EncoderEngine(position_encoder().encode, 4, "one-second encoder", model=SimpleNamespace(min_samples=16000))
    engines = Engines(encoder=short, synthesizer=FakeVoice(), rmvpe=position_pitch)
    with pytest.raises(InputError, match="one-second encoder: takes at least 1 s but the stream's window is 0.81 s"):
        Stream(engines, block=0.25, context=0.5)
    assert Stream(engines, block=0.25, context=1.0).geometry.window == 131


def test_block_voice_geometry_must_match():
    block_voice = FakeVoice(skip=10, stream={"block": 5, "context": 10, "crossfade": 2, "search": 1, "window": 18})
    stream = fake_stream(voice=block_voice)
    for block in ramp_blocks(stream, 3):
        assert stream.push(block).shape == (800,)
    assert block_voice.calls[-1][0].shape[0] == 18  # the whole window; the voice renders the last 8 frames
    engines = Engines(encoder=position_encoder(), synthesizer=block_voice, rmvpe=position_pitch)
    with pytest.raises(InputError, match="real-time block artifact for 0.05 s blocks.*not block 0.1 s"):
        Stream(engines, block=0.1)
    assert Stream(engines).geometry == stream.geometry  # the artifact's geometry is the default


def test_pushes_from_several_threads_are_serialised():
    stream = fake_stream()
    blocks = ramp_blocks(stream, 24)
    outs, errors = [], []

    def worker(part):
        try:
            for block in part:
                outs.append(stream.push(block))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(blocks[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    stream.pitch_shift = 3  # from another thread, while they push
    for thread in threads:
        thread.join()
    assert not errors and len(outs) == 24 and stream.blocks == 24 and all(out.shape == (800,) for out in outs)


def test_stream_audio_aligns_the_output_with_the_input():
    """A voice that renders its features back: the aligned output follows the input to within one hop."""
    stream = fake_stream(geometry=(5, 20, 2, 1))
    audio = np.arange(1, 16000 + 1, dtype=np.float32)
    out = stream_audio(stream, audio)
    assert out.shape == audio.shape
    middle = slice(4000, 12000)
    lag = np.abs(out[middle] - audio[middle])
    assert np.median(lag) <= 320  # features are one value per 320-sample hop


# -- block graphs ------------------------------------------------------------------------------------------

def test_block_model_renders_the_tail_as_rvcs_skip_head(checkpoint_factory):
    """The block model against RVC's infer(skip_head, return_length) spelled out with the full model's
    parts: encoder over the window, flow over the tail + 24 frames, decoder over the tail; same noise."""
    import torch

    from rvc_compile.components.synthesizer.reference import ReferenceModel
    from rvc_compile.components.synthesizer.model.synthesizer import PRIOR_NOISE_SCALE

    full = ReferenceModel.from_path(checkpoint_factory())
    block = full.blocks(0.1, 0.3, 0.03)
    assert block.spec.skip_frames == 30 and block.stream["window"] == 44
    rng = np.random.default_rng(0)
    features = rng.standard_normal((44, 768)).astype(np.float32)
    f0 = np.full(44, 180.0, np.float32)
    noise = {"prior_noise": rng.standard_normal((1, full.spec.inter_channels, 44)).astype(np.float32),
             "source_noise": rng.standard_normal((1, 44 * full.spec.hop_length)).astype(np.float32)}
    out = block.infer(features, f0, noise=noise)
    hop = full.spec.hop_length
    assert out.shape == (14 * hop,)
    model = full.model
    with torch.inference_mode():
        g = model.speaker_embedding(torch.tensor([0]))
        mean, log_scale = model.enc_p(torch.from_numpy(features)[None], torch.from_numpy(f0)[None])
        flow_head, skip = 30 - 24, 30
        z_p = mean[:, :, flow_head:] + torch.exp(log_scale[:, :, flow_head:]) * torch.from_numpy(noise["prior_noise"])[:, :, flow_head:] * PRIOR_NOISE_SCALE
        z = model.flow(z_p, g)[:, :, skip - flow_head :]
        expected = model.dec(z, g, None, f0=torch.from_numpy(f0)[None, skip:], noise=torch.from_numpy(noise["source_noise"])[:, skip * hop :])
    np.testing.assert_allclose(out, expected.reshape(-1).numpy(), atol=1e-5)
    whole = full.infer(features, f0, noise=noise)
    assert not np.allclose(out, whole[skip * hop :], atol=1e-3)  # the decoder's left edge: not a slice of the whole


@pytest.fixture(scope="module")
def block_artifacts(tmp_path_factory, checkpoint_factory):
    """Tiny real-time block artifacts of a v1 voice, one geometry: onnxruntime fp32, and with the host source."""
    from rvc_compile.build.pipeline import build
    from rvc_compile.recipe.schema import load_recipe

    root = tmp_path_factory.mktemp("blocks")
    recipe = write_tiny_recipe(root, checkpoint_factory(version="v1"), name="block")
    out = {}
    for name, extra in (("ort", []), ("host", ["passes=[{name: host_source}]"])):
        loaded = load_recipe(recipe, ["stream={block: 0.1, context: 0.3, crossfade: 0.03}", f"name=block-{name}", *extra])
        out[name] = build(loaded, cache_dir=root / "cache", log=lambda message: None).path
    return out


def test_block_artifacts_match_the_block_reference(block_artifacts, checkpoint_factory):
    import json

    from rvc_compile.components.synthesizer.reference import ReferenceModel
    from rvc_compile.runtime import load

    reference = ReferenceModel.from_path(checkpoint_factory(version="v1")).blocks(0.1, 0.3, 0.03)
    rng = np.random.default_rng(1)
    features, f0 = rng.standard_normal((44, 256)).astype(np.float32), np.linspace(100, 300, 44).astype(np.float32)
    want = reference.infer(features, f0, noise="seed:4")
    for name, path in block_artifacts.items():
        voice = load(path)
        assert voice.manifest.model["stream"] == {"block": 10, "context": 30, "crossfade": 3, "search": 1, "window": 44}
        assert voice.manifest.model.frames.static and voice.manifest.model.frames.min == 44
        manifest = json.loads((path / "manifest.json").read_text())
        assert manifest["passes"][0]["name"] == "stream_block" and manifest["component"]["spec"]["skip_frames"] == 30
        got = voice.infer(features, f0, noise="seed:4")
        assert got.shape == want.shape == (14 * 400,)
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4, name  # the host source starts its phase at the skip too
        with pytest.raises(InputError, match="44"):
            voice.infer(features[:40], f0[:40])
    process = run_cli("verify", block_artifacts["host"], "--skip-latency")
    assert process.returncode == 0, process.stdout + process.stderr


def test_streaming_compiled_artifacts_needs_no_torch(block_artifacts):
    """The runtime side of a stream (engine + block artifact) runs with torch impossible to import."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from rvc_compile.runtime import load\n"
        "from rvc_compile.runtime.pipeline import EncoderEngine, Engines\n"
        "from rvc_compile.runtime.stream import Stream\n"
        f"voice = load({str(block_artifacts['host'])!r})\n"
        "encoder = EncoderEngine(lambda a: np.zeros(((a.shape[0] - 400) // 320 + 1, 256), np.float32) + a[:1], 256, 'numpy encoder')\n"
        "stream = Stream(Engines(encoder=encoder, synthesizer=voice, rmvpe=lambda a: np.full(a.shape[0] // 160 + 1, 150.0)), sample_rate=48000)\n"
        "outs = [stream.push(np.sin(np.arange(4800) / 9.0).astype(np.float32) * 0.1) for _ in range(3)]\n"
        "print([o.shape[0] for o in outs], stream.geometry.window, 'torch' in sys.modules and sys.modules['torch'] is not None)\n"
    )
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert process.returncode == 0, process.stderr
    assert process.stdout.split() == ["[4000,", "4000,", "4000]", "44", "False"]


def test_stream_section_is_checked(tmp_path, checkpoint_factory):
    from rvc_compile.recipe.schema import load_recipe

    recipe = write_tiny_recipe(tmp_path, checkpoint_factory())
    loaded = load_recipe(recipe, ["stream={block: 0.25, context: 2.5}"])
    assert (loaded.shapes.mode, loaded.shapes.chunk_frames) == ("static", 281)
    for override, message in (
        ("stream={block: 0.255}", "stream.block: 0.255 must be a whole number of 10 ms"),
        ("stream={block: 0.05, crossfade: 0.1}", "longer than the block"),
        ("stream={block: 0.1, context: 0}", "at least 0.01 s"),
    ):
        with pytest.raises(RecipeError, match=message):
            load_recipe(recipe, [override])
    with pytest.raises(RecipeError, match="chunk_frames: 25 frames, but the stream section's window is 131"):
        load_recipe(recipe, ["stream={}", "shapes={mode: static, chunk_frames: 25}"])
    with pytest.raises(RecipeError, match="added by the stream section"):
        load_recipe(recipe, ["stream={}", "passes=[{name: stream_block, skip_frames: 250}]"])


@pytest.fixture(scope="module")
def stream_sources(tmp_path_factory):
    from rvc_compile.components.encoder.synthetic import write_encoder_folder
    from rvc_compile.components.pitch.synthetic import write_rmvpe

    root = tmp_path_factory.mktemp("stream-sources")
    write_encoder_folder(root / "encoder", "tiny-v1")
    write_rmvpe(root / "rmvpe.pt", width=2)
    return {"encoder": root / "encoder", "rmvpe": root / "rmvpe.pt"}


def test_stream_cli_converts_a_file_with_a_block_artifact(block_artifacts, stream_sources, tmp_path):
    import soundfile

    out = tmp_path / "out.wav"
    process = run_cli("stream", block_artifacts["host"], SPEECH, "-o", out, "--encoder", stream_sources["encoder"],
                      "--rmvpe", stream_sources["rmvpe"], "--noise", "zero")
    assert process.returncode == 0, process.stderr
    assert "0.1 s blocks, 0.3 s context, 0.03 s crossfade" in process.stderr and "over the block's duration" in process.stderr
    audio, rate = soundfile.read(out)
    source, source_rate = soundfile.read(SPEECH)
    assert rate == 40000 and abs(audio.shape[0] / rate - source.shape[0] / source_rate) < 0.01 and np.abs(audio).max() > 0
    process = run_cli("stream", block_artifacts["host"], SPEECH, "-o", out, "--encoder", stream_sources["encoder"], "--block", "0.25")
    assert_user_error(process, str(block_artifacts["host"]), "real-time block artifact for 0.1 s blocks", "not block 0.25 s")
    process = run_cli("stream", block_artifacts["host"], SPEECH, "-o", tmp_path / "out.mp4", "--encoder", stream_sources["encoder"])
    assert_user_error(process, "out.mp4", "must end in .wav")


def test_bench_stream_times_blocks(block_artifacts, stream_sources, tmp_path):
    import json

    result = tmp_path / "stream.json"
    process = run_cli("bench", "--stream", block_artifacts["host"], "--encoder", stream_sources["encoder"], "--rmvpe", stream_sources["rmvpe"],
                      "--stream-seconds", "1", "--repeat", "1", "-o", result)
    assert process.returncode == 0, process.stderr
    assert "p99/block" in process.stdout
    row = json.loads(result.read_text())["results"][0]
    assert row["blocks"] == 11 and row["geometry"]["block"] == 0.1 and row["p99_ms"] >= row["p50_ms"] > 0
    assert set(row["stages_p50_ms"]) >= {"encoder", "pitch", "synthesizer", "sola"}


@pytest.mark.slow
def test_shipped_block_recipe_builds_and_streams(checkpoint_factory, stream_sources, tmp_path):
    """recipes/stream/cpu-int8-openvino-block.yaml on a small voice: 2.5 s of context (longer than the
    one second of frames the build counts FLOPs on), int8 as on any AVX2 CPU, then streamed."""
    from rvc_compile.build.pipeline import build
    from rvc_compile.recipe.schema import load_recipe
    from rvc_compile.runtime import load
    from rvc_compile.runtime.stream import Stream
    from rvc_compile.convert.voice import open_voice

    recipe = load_recipe(ROOT / "recipes" / "stream" / "cpu-int8-openvino-block.yaml", [
        f"source.checkpoint={checkpoint_factory(version='v1')}", "target.cpu=portable", "calibration.count=2", "calibration.seconds=1.0",
        "latency.repeat=1", "stream.context=2.5", "golden.seconds=[2.81]"])
    path = build(recipe, out_dir=tmp_path / "artifacts", cache_dir=tmp_path / "cache", log=lambda message: None).path
    voice = load(path)
    assert voice.manifest.model["stream"]["window"] == 281 and voice.spec.skip_frames == 250
    opened = open_voice(path, encoder=stream_sources["encoder"], rmvpe=stream_sources["rmvpe"])
    stream = Stream(opened.engines)  # the artifact's geometry (the recipe's 1 s context overridden to 2.5 s)
    assert stream.geometry.describe() == "0.25 s blocks, 2.5 s context, 0.05 s crossfade, 0.01 s search"
    out = [stream.push(np.zeros(4000, np.float32) + 0.01 * np.sin(np.arange(4000) / 7.0).astype(np.float32)) for _ in range(3)]
    assert all(block.shape == (10000,) and np.isfinite(block).all() for block in out)
