"""The conversion pipeline's host side (rvc_compile.convert): audio in and out, the retrieval index, and
RVC's ``Pipeline.pipeline`` / ``Pipeline.vc`` on fake numpy engines, checked step by step and against an
independent re-statement of RVC's formulas (torch where RVC uses torch). Fast: no model is built."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import signal

from rvc_compile.convert.audio import prepare_input, prescale, read_audio, resample, to_16k, write_audio
from rvc_compile.convert.pipeline import (
    FP32_CHUNKING, Chunking, Settings, VoicePipeline, change_rms, frame_rms, interpolate_linear, limit_peak, split_points,
)
from rvc_compile.errors import InputError

RNG = np.random.default_rng(1234)
DIM = 8
SMALL = Chunking(x_pad=0.05, x_query=0.2, x_center=1.0, x_max=1.5)  # t_pad 800, t_query 3200, t_center 16000, t_max 24000


# -- audio -----------------------------------------------------------------------------------------------------

def _tone(seconds: float, rate: int, hz: float = 220.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
def test_read_wav_int16_and_float(tmp_path, subtype):
    import soundfile

    audio = _tone(0.25, 22050)
    path = tmp_path / f"{subtype}.wav"
    soundfile.write(path, audio, 22050, subtype=subtype)
    read, rate = read_audio(path)
    assert rate == 22050 and read.dtype == np.float32 and read.shape == audio.shape
    np.testing.assert_allclose(read, audio, atol=1 / 32768 if subtype == "PCM_16" else 0)


def test_read_flac_and_stereo_mean(tmp_path):
    import soundfile

    left, right = _tone(0.2, 44100, 220, 0.6), _tone(0.2, 44100, 330, 0.2)
    path = tmp_path / "stereo.flac"
    soundfile.write(path, np.stack([left, right], axis=1), 44100, subtype="PCM_24")
    read, rate = read_audio(path)
    assert rate == 44100 and read.ndim == 1
    np.testing.assert_allclose(read, (left + right) / 2, atol=1e-6)


@pytest.mark.parametrize("fmt,subtype,suffix", [("OGG", "VORBIS", ".ogg"), ("MP3", "MPEG_LAYER_III", ".mp3")])
def test_read_lossy_formats(tmp_path, fmt, subtype, suffix):
    import soundfile

    if fmt not in soundfile.available_formats():
        pytest.skip(f"this libsndfile has no {fmt}")
    audio = _tone(0.5, 48000)
    path = tmp_path / f"tone{suffix}"
    try:
        soundfile.write(path, audio, 48000, format=fmt, subtype=subtype)
    except Exception as exc:  # some libsndfile builds read but cannot write it
        pytest.skip(f"cannot write {fmt} here: {exc}")
    read, rate = read_audio(path)
    assert rate == 48000 and abs(read.shape[0] - audio.shape[0]) < 4800 and np.abs(read).max() > 0.3


def test_read_audio_errors(tmp_path):
    import soundfile

    with pytest.raises(InputError, match="no such audio file") as error:
        read_audio(tmp_path / "missing.wav")
    assert "missing.wav" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(InputError, match="is a folder"):
        read_audio(tmp_path)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(InputError, match="not a readable audio file") as error:
        read_audio(garbage)
    assert str(garbage) in str(error.value) and "\n" not in str(error.value)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, np.float32), 16000)
    with pytest.raises(InputError, match="no audio samples"):
        read_audio(empty)
    nan = tmp_path / "nan.wav"
    soundfile.write(nan, np.array([0.1, np.nan, 0.2], np.float32), 16000, subtype="FLOAT")
    with pytest.raises(InputError, match="NaN or Inf"):
        read_audio(nan)


RATES = [8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 96000]


@pytest.mark.parametrize("rate", RATES)
def test_resample_round_trip_lengths(rate):
    audio = _tone(0.7, 16000, 300) + np.float32(0)
    there = resample(audio, 16000, rate)
    back = resample(there, rate, 16000)
    assert there.dtype == back.dtype == np.float32
    assert abs(there.shape[0] - audio.shape[0] * rate / 16000) <= 1
    assert abs(back.shape[0] - audio.shape[0]) <= 1
    middle = slice(800, 10000)  # a 300 Hz tone survives any of these rates
    np.testing.assert_allclose(back[middle], audio[middle], atol=2e-3)


def test_resample_is_a_no_op_at_the_same_rate_and_checks_rates():
    audio = _tone(0.1, 16000)
    assert np.array_equal(resample(audio, 16000, 16000), audio)
    for bad in (0, -16000, 16000.5, "16000", True):
        with pytest.raises(InputError):
            resample(audio, bad, 16000)


def test_prescale_is_rvcs_vc_single_step():
    loud = np.array([0.0, 2.0, -1.0, 0.5], np.float32)
    scaled = prescale(loud)
    divisor = np.float32(2.0 / 0.95)
    np.testing.assert_array_equal(scaled, loud / divisor)
    assert abs(np.abs(scaled).max() - 0.95) < 1e-6
    clipped = np.sign(_tone(0.1, 16000)).astype(np.float32)  # full-scale square: clipped input
    assert abs(np.abs(prescale(clipped)).max() - 0.95) < 1e-6
    quiet = _tone(0.1, 16000, amplitude=0.9)
    np.testing.assert_array_equal(prescale(quiet), quiet)  # at most 0.95: unchanged


def test_prepare_input_mono_stereo_pcm_and_errors():
    stereo = np.stack([_tone(0.5, 48000, 200, 0.4), _tone(0.5, 48000, 200, 0.2)], axis=1)
    out = prepare_input(stereo, 48000)
    assert out.dtype == np.float32 and abs(out.shape[0] - 8000) <= 1
    np.testing.assert_allclose(out[1000:7000], resample(stereo.mean(axis=1), 48000, 16000)[1000:7000], atol=1e-6)
    pcm = (_tone(0.2, 16000) * 32767).astype(np.int16)
    np.testing.assert_allclose(prepare_input(pcm, 16000), pcm / 32768.0, atol=1e-7)
    loud = _tone(0.2, 16000, amplitude=3.0)  # float input beyond full scale: RVC's pre-scale brings it to 0.95
    assert abs(np.abs(prepare_input(loud, 16000)).max() - 0.95) < 1e-6
    for bad, fragment in [(np.zeros((2, 2, 2), np.float32), "3-d"), (np.zeros(0, np.float32), "no audio samples"),
                          (np.array([0.0, np.inf], np.float32), "NaN or Inf"), (np.array(["a"]), "float or integer")]:
        with pytest.raises(InputError, match=fragment):
            prepare_input(bad, 16000, label="clip.wav")
    with pytest.raises(InputError, match="positive"):
        prepare_input(np.zeros(10, np.float32), 0)


def test_to_16k_reads_mixes_resamples_and_prescales(tmp_path):
    import soundfile

    stereo = np.stack([_tone(1.0, 44100, 200, 1.0), _tone(1.0, 44100, 200, 1.0)], axis=1)
    path = tmp_path / "loud.wav"
    soundfile.write(path, stereo, 44100, subtype="FLOAT")
    audio = to_16k(path)
    assert audio.dtype == np.float32 and abs(audio.shape[0] - 16000) <= 1
    assert abs(np.abs(audio).max() - 0.95) < 1e-6


@pytest.mark.parametrize("suffix", [".wav", ".flac", ".npy"])
def test_write_audio_round_trip_and_atomic(tmp_path, suffix):
    audio = _tone(0.3, 40000, amplitude=0.8)
    path = tmp_path / f"out{suffix}"
    write_audio(path, audio, 40000)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left behind
    if suffix == ".npy":
        np.testing.assert_array_equal(np.load(path), audio)
    else:
        read, rate = read_audio(path)
        assert rate == 40000
        np.testing.assert_allclose(read, audio, atol=1.5 / 32768)


def test_write_audio_failure_keeps_the_old_file(tmp_path, monkeypatch):
    import soundfile

    path = tmp_path / "out.flac"
    path.write_bytes(b"previous")

    def broken(handle, *args, **kwargs):
        handle.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(soundfile, "write", broken)
    with pytest.raises(OSError):
        write_audio(path, _tone(0.1, 16000), 16000)
    assert path.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == ["out.flac"]
    with pytest.raises(InputError, match=".wav, .flac or .npy"):
        write_audio(tmp_path / "out.mp3", _tone(0.1, 16000), 16000)


# -- retrieval -----------------------------------------------------------------------------------------------------

def write_index(path: Path, vectors: np.ndarray, kind: str = "ivf", nlist: int = 2, nprobe: int = 1, add: bool = True) -> Path:
    """A real faiss index file: ``ivf`` as RVC's train_index writes it (IVF<n>,Flat, nprobe set, trained
    then added), or ``flat`` (exact search)."""
    faiss = pytest.importorskip("faiss")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if kind == "flat":
        index = faiss.IndexFlatL2(vectors.shape[1])
    else:
        index = faiss.index_factory(vectors.shape[1], f"IVF{nlist},Flat")
        faiss.extract_index_ivf(index).nprobe = nprobe
        index.train(vectors)
    if add:
        index.add(vectors)
    faiss.write_index(index, str(path))
    return path


def brute_force_blend(features: np.ndarray, vectors: np.ndarray, index_rate: float) -> np.ndarray:
    """RVC's formula with an exhaustive numpy search in float64: the 8 nearest by squared L2 distance,
    weights 1 / d**2 normalised, mixed with the frame by index_rate."""
    distances = ((features[:, None, :].astype(np.float64) - vectors[None].astype(np.float64)) ** 2).sum(-1)
    nearest = np.argsort(distances, axis=1, kind="stable")[:, :8]
    weight = 1.0 / np.take_along_axis(distances, nearest, axis=1) ** 2
    weight /= weight.sum(axis=1, keepdims=True)
    mean = (vectors[nearest] * weight[..., None]).sum(axis=1)
    return mean * index_rate + (1 - index_rate) * features


@pytest.fixture(scope="module")
def vectors():
    return np.random.default_rng(7).standard_normal((120, DIM)).astype(np.float32)


@pytest.mark.parametrize("kind,nprobe", [("flat", 1), ("ivf", 2)])
def test_blend_matches_brute_force(tmp_path, vectors, kind, nprobe):
    from rvc_compile.convert.retrieval import RetrievalIndex

    index = RetrievalIndex.load(write_index(tmp_path / "v.index", vectors, kind, nlist=2, nprobe=nprobe), DIM)
    assert index.size == 120 and index.feature_dim == DIM
    np.testing.assert_array_equal(index.vectors, vectors)
    features = np.random.default_rng(8).standard_normal((30, DIM)).astype(np.float32)
    for rate in (0.0, 0.3, 0.75, 1.0):
        out = index.blend(features, rate)
        assert out.dtype == np.float32 and out.shape == features.shape
        np.testing.assert_allclose(out, brute_force_blend(features, vectors, rate), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(index.blend(features, 0.0), features)


def test_blend_on_rvcs_ivf_index_uses_its_own_search(tmp_path, vectors):
    """RVC's index as written (nprobe 1: approximate): the blend is RVC's arithmetic on faiss's answer."""
    from rvc_compile.convert.retrieval import RetrievalIndex

    index = RetrievalIndex.load(write_index(tmp_path / "rvc.index", vectors, "ivf", nlist=3, nprobe=1), DIM)
    features = np.random.default_rng(9).standard_normal((25, DIM)).astype(np.float32)
    score, ix = index.index.search(features, k=8)
    weight = np.square(1 / score)
    weight /= weight.sum(axis=1, keepdims=True)
    expected = np.sum(vectors[ix] * np.expand_dims(weight, axis=2), axis=1) * np.float32(0.6) + np.float32(0.4) * features
    np.testing.assert_array_equal(index.blend(features, 0.6), expected)


def test_blend_exact_match_and_short_index(tmp_path, vectors):
    from rvc_compile.convert.retrieval import RetrievalIndex

    index = RetrievalIndex.load(write_index(tmp_path / "flat.index", vectors, "flat"), DIM)
    exact = vectors[[3, 50]]  # distance 0: RVC divides by zero (NaN); here the match takes all the weight
    np.testing.assert_array_equal(index.blend(exact, 1.0), exact)
    small = RetrievalIndex.load(write_index(tmp_path / "five.index", vectors[:5], "flat"), DIM)  # fewer than k = 8
    features = np.random.default_rng(3).standard_normal((6, DIM)).astype(np.float32)
    out = small.blend(features, 0.5)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, brute_force_blend(features, vectors[:5], 0.5), rtol=1e-4, atol=1e-5)


def test_index_errors(tmp_path, vectors, monkeypatch):
    from rvc_compile.convert.retrieval import RetrievalIndex

    with pytest.raises(InputError, match="no such index file") as error:
        RetrievalIndex.load(tmp_path / "missing.index", DIM)
    assert "missing.index" in str(error.value)
    garbage = tmp_path / "garbage.index"
    garbage.write_bytes(b"\x00not a faiss index" * 40)
    with pytest.raises(InputError, match="not a faiss index") as error:
        RetrievalIndex.load(garbage, DIM)
    assert str(garbage) in str(error.value) and "\n" not in str(error.value)
    v1 = write_index(tmp_path / "v1.index", np.random.default_rng(1).standard_normal((10, 256)).astype(np.float32), "flat")
    with pytest.raises(InputError, match=r"256-dim \(v1\) index, but the voice takes 768-dim \(v2\)"):
        RetrievalIndex.load(v1, 768)
    trained = write_index(tmp_path / "trained_IVF2_Flat.index", vectors, "ivf", add=False)
    with pytest.raises(InputError, match="holds no vectors.*added_"):
        RetrievalIndex.load(trained, DIM)
    index = RetrievalIndex.load(write_index(tmp_path / "ok.index", vectors, "flat"), DIM)
    with pytest.raises(InputError, match="do not match"):
        index.blend(np.zeros((4, DIM + 1), np.float32), 0.5)
    monkeypatch.setitem(sys.modules, "faiss", None)  # as if not installed
    with pytest.raises(InputError, match=r"pip install rvc-compile\[index\]"):
        RetrievalIndex.load(tmp_path / "ok.index", DIM)


# -- fake engines ----------------------------------------------------------------------------------------------------

class FakeEncoder:
    """A linear projection of every 400-sample window at a 320 hop: frames = (n - 400) // 320 + 1."""

    def __init__(self, dim: int = DIM):
        self.feature_dim = dim
        self.weights = np.random.default_rng(11).standard_normal((400, dim)).astype(np.float32) / 20
        self.inputs: list[np.ndarray] = []

    def __call__(self, audio16k: np.ndarray) -> np.ndarray:
        assert audio16k.dtype == np.float32
        self.inputs.append(audio16k.copy())
        frames = (audio16k.shape[0] - 400) // 320 + 1
        windows = audio16k[np.arange(frames)[:, None] * 320 + np.arange(400)]
        return (windows @ self.weights).astype(np.float32)


class FakePitch:
    """Voiced (a slow glide around 150 Hz) where a 160-sample frame's mean |x| exceeds 0.02, else 0;
    p_len + 1 frames, like RVC's trackers before the cut."""

    def __init__(self):
        self.calls: list[tuple[int, int, np.dtype]] = []

    def __call__(self, audio16k: np.ndarray, p_len: int) -> np.ndarray:
        self.calls.append((audio16k.shape[0], p_len, audio16k.dtype))
        frames = p_len + 1
        padded = np.pad(np.abs(audio16k), (0, frames * 160 - audio16k.shape[0] if frames * 160 > audio16k.shape[0] else 0))
        energy = padded[: frames * 160].reshape(frames, 160).mean(axis=1)
        f0 = 150.0 + 20.0 * np.sin(np.arange(frames) / 7.0)
        return np.where(energy > 0.02, f0, 0.0)


class FakeSynthesizer:
    """Each frame -> hop samples of tanh(features . v) (+ f0 / 1e4 for pitch voices); records its inputs."""

    def __init__(self, has_f0: bool = True, sample_rate: int = 40000, dim: int = DIM, gain: float = 0.5):
        self.has_f0, self.sample_rate, self.feature_dim = has_f0, sample_rate, dim
        self.hop_length = sample_rate // 100
        self.gain = gain
        self.direction = np.random.default_rng(12).standard_normal(dim).astype(np.float32)
        self.calls: list[tuple[np.ndarray, np.ndarray | None]] = []
        self.outputs: list[np.ndarray] = []

    def __call__(self, features: np.ndarray, f0: np.ndarray | None) -> np.ndarray:
        assert features.dtype == np.float32 and (f0 is None) == (not self.has_f0)
        if f0 is not None:
            assert f0.dtype == np.float32 and f0.shape == (features.shape[0],)
        features = np.ascontiguousarray(features)  # the same summation order whatever the caller's layout
        self.calls.append((features.copy(), None if f0 is None else f0.copy()))
        per_frame = self.gain * np.tanh(features @ self.direction) + (0 if f0 is None else f0 / 1e4)
        ramp = np.linspace(0.5, 1.0, self.hop_length, dtype=np.float32)
        audio = (per_frame[:, None] * ramp[None]).reshape(-1).astype(np.float32)
        self.outputs.append(audio.copy())
        return audio


class SpyIndex:
    def __init__(self, index):
        self.index, self.feature_dim, self.calls = index, index.feature_dim, 0

    def blend(self, features, index_rate):
        self.calls += 1
        return self.index.blend(features, index_rate)


def speech_like(seconds: float, quiet: list[tuple[float, float]] = (), seed: int = 5) -> np.ndarray:
    """Noise bursts with a 150 Hz carrier, and near-silent stretches (start, stop in seconds)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    envelope = 0.3 + 0.2 * np.sin(2 * np.pi * 1.3 * t)
    audio = envelope * (0.6 * np.sin(2 * np.pi * 150 * t) + 0.4 * rng.standard_normal(n))
    for start, stop in quiet:
        audio[int(start * 16000):int(stop * 16000)] *= 1e-3
    return audio.astype(np.float32)


@pytest.fixture
def flat_index(tmp_path):
    from rvc_compile.convert.retrieval import RetrievalIndex

    vectors = np.random.default_rng(21).standard_normal((200, DIM)).astype(np.float32) / 3
    return RetrievalIndex.load(write_index(tmp_path / "voice.index", vectors, "flat"), DIM)


def segment_bounds(n: int, cuts: list[int], chunking: Chunking) -> list[tuple[int, int]]:
    """(start, stop) in the t_pad-padded audio of each segment, as RVC slices them."""
    padded, bounds, start = n + 2 * chunking.t_pad, [], 0
    for cut in cuts:
        cut = cut // 160 * 160
        bounds.append((start, cut + 2 * chunking.t_pad + 160))
        start = cut
    return bounds + [(start, padded)]


# -- the pipeline on fake engines ------------------------------------------------------------------------------------

QUIET = [(0.90, 0.98), (2.10, 2.16), (2.95, 3.02), (3.85, 3.90)]  # one inside each query window (t +- 0.2 s)


def test_split_points_fall_at_the_quietest_sums():
    audio = speech_like(4.5, QUIET)
    filtered = signal.filtfilt(*signal.butter(5, 48, btype="high", fs=16000), audio)
    cuts = split_points(filtered, SMALL)
    assert len(cuts) == 4
    padded = np.pad(filtered, (80, 80), mode="reflect")
    sums = np.convolve(np.abs(padded), np.ones(160), mode="valid")[: filtered.shape[0]]  # sums[j]: |x[j-80 : j+80]|
    for cut, center, (start, stop) in zip(cuts, (16000, 32000, 48000, 64000), QUIET):
        window = sums[center - 3200:center + 3200]
        assert cut == center - 3200 + int(np.argmin(window))
        assert start * 16000 <= cut < stop * 16000  # inside the quiet stretch
    # no cut while len + 160 <= t_max; from one sample more, cuts
    assert split_points(np.ones(SMALL.t_max - 160), SMALL) == []
    assert len(split_points(np.ones(SMALL.t_max - 159), SMALL)) == 1


def test_segments_lengths_and_output_length_as_rvc():
    audio = speech_like(4.5, QUIET)
    encoder, synthesizer, pitch = FakeEncoder(), FakeSynthesizer(), FakePitch()
    pipeline = VoicePipeline(encoder, synthesizer, pitch, chunking=SMALL)
    calls = []
    out = pipeline.convert(audio, progress=lambda done, total: calls.append((done, total)))
    filtered = signal.filtfilt(*signal.butter(5, 48, btype="high", fs=16000), audio)
    bounds = segment_bounds(audio.shape[0], split_points(filtered, SMALL), SMALL)
    assert [x.shape[0] for x in encoder.inputs] == [stop - start for start, stop in bounds]
    assert calls == [(k, len(bounds)) for k in range(1, len(bounds) + 1)]
    trim = round(40000 * SMALL.x_pad)
    expected = 0
    for (start, stop), (features, f0) in zip(bounds, synthesizer.calls):
        frames = 2 * ((stop - start - 400) // 320 + 1)
        assert features.shape == (frames, DIM) and f0.shape == (frames,)
        expected += frames * 400 - 2 * trim
    assert out.shape == (expected,) and out.dtype == np.float32
    # pitch: once, over the whole t_pad-padded input, float64, p_len = len // 160
    assert pitch.calls == [(audio.shape[0] + 2 * SMALL.t_pad, (audio.shape[0] + 2 * SMALL.t_pad) // 160, np.dtype(np.float64))]


def test_encoder_sees_rvcs_padded_segments():
    audio = speech_like(1.0)
    encoder = FakeEncoder()
    VoicePipeline(encoder, FakeSynthesizer(has_f0=False), chunking=SMALL).convert(audio)
    filtered = signal.filtfilt(*signal.butter(5, 48, btype="high", fs=16000), audio)
    np.testing.assert_array_equal(encoder.inputs[0], np.pad(filtered, (800, 800), mode="reflect").astype(np.float32))


@pytest.mark.parametrize("semitones", [0, 12, -24, 7, 2.5])
def test_pitch_shift(semitones):
    audio = speech_like(1.2, [(0.3, 0.6)])
    pitch, shifted = FakePitch(), FakeSynthesizer()
    VoicePipeline(FakeEncoder(), shifted, pitch, chunking=SMALL).convert(audio, pitch_shift=semitones)
    padded = np.pad(signal.filtfilt(*signal.butter(5, 48, btype="high", fs=16000), audio), (800, 800), mode="reflect")
    raw = pitch(padded, padded.shape[0] // 160)
    f0 = shifted.calls[0][1]
    np.testing.assert_array_equal(f0, (raw * 2 ** (semitones / 12))[: f0.shape[0]].astype(np.float32))
    assert (f0 == 0).any() and (f0 > 0).any()  # unvoiced stays 0


def test_protect_and_index_rate(flat_index):
    audio = speech_like(1.2, [(0.3, 0.6)])  # an unvoiced stretch
    for protect in (0.33, 0.0, 0.5):
        for index_rate in (0.0, 0.75):
            encoder, synthesizer, spy = FakeEncoder(), FakeSynthesizer(), SpyIndex(flat_index)
            VoicePipeline(encoder, synthesizer, FakePitch(), spy, chunking=SMALL).convert(audio, protect=protect, index_rate=index_rate)
            features, f0 = synthesizer.calls[0]
            raw = np.repeat(encoder(encoder.inputs[0]), 2, axis=0)[: features.shape[0]]
            blended = np.repeat(flat_index.blend(encoder(encoder.inputs[0]), index_rate), 2, axis=0)[: features.shape[0]] if index_rate else raw
            assert spy.calls == (1 if index_rate else 0)  # index_rate 0: no search at all, as RVC
            unvoiced = f0 < 1
            assert unvoiced.any() and (~unvoiced).any()
            if protect < 0.5:
                weight = np.where(unvoiced, np.float32(protect), np.float32(1))[:, None]
                expected = blended * weight + raw * (np.float32(1) - weight)
            else:
                expected = blended
            np.testing.assert_array_equal(features, expected)
            if index_rate and protect == 0.0:
                np.testing.assert_allclose(features[unvoiced], raw[unvoiced], atol=1e-7)  # unvoiced frames keep the raw features


def test_unpitched_voice_skips_pitch_and_protect(flat_index):
    audio = speech_like(1.2, [(0.3, 0.6)])
    encoder, synthesizer, pitch = FakeEncoder(), FakeSynthesizer(has_f0=False), FakePitch()
    VoicePipeline(encoder, synthesizer, pitch, flat_index, chunking=SMALL).convert(audio, protect=0.0, index_rate=1.0)
    assert pitch.calls == []
    features, f0 = synthesizer.calls[0]
    assert f0 is None
    np.testing.assert_array_equal(features, np.repeat(flat_index.blend(encoder(encoder.inputs[0]), 1.0), 2, axis=0)[: features.shape[0]])
    with pytest.raises(InputError, match="pitch estimator"):
        VoicePipeline(FakeEncoder(), FakeSynthesizer(has_f0=True), None)


def _librosa_rms(y: np.ndarray, frame_length: int, hop_length: int) -> np.ndarray:
    """librosa.feature.rms(y=y, frame_length, hop_length) written out: centred, zero padding, one frame at a time."""
    y = np.concatenate([np.zeros(frame_length // 2), np.asarray(y, np.float64), np.zeros(frame_length // 2)])
    count = 1 + (y.shape[0] - frame_length) // hop_length
    return np.array([np.sqrt(np.mean(y[k * hop_length:k * hop_length + frame_length] ** 2)) for k in range(count)])


def _torch_linear(values: np.ndarray, size: int) -> np.ndarray:
    torch = pytest.importorskip("torch")
    return torch.nn.functional.interpolate(torch.from_numpy(np.asarray(values, np.float64))[None, None], size=size, mode="linear")[0, 0].numpy()


def test_rms_helpers_match_librosa_and_torch_definitions():
    y = RNG.standard_normal(37123) * np.linspace(0, 1, 37123)
    for frame, hop in [(16000, 8000), (40000, 20000), (1024, 256), (7, 3)]:
        np.testing.assert_allclose(frame_rms(y, frame, hop), _librosa_rms(y, frame, hop), rtol=1e-12, atol=1e-15)
    values = RNG.random(9)
    for size in (9, 1, 5, 30, 12345):
        np.testing.assert_allclose(interpolate_linear(values, size), _torch_linear(values, size), rtol=1e-12, atol=1e-15)


def test_rms_mix_against_a_direct_computation():
    audio = speech_like(2.3, [(1.0, 1.5)])
    for rate in (0.0, 0.25, 1.0):
        synthesizer = FakeSynthesizer(gain=0.3)
        out = VoicePipeline(FakeEncoder(), synthesizer, FakePitch(), chunking=SMALL).convert(audio, rms_mix_rate=rate)
        raw = np.concatenate([piece[2000:-2000] for piece in synthesizer.outputs])
        if rate == 1:
            np.testing.assert_array_equal(out, raw)  # skipped, as RVC (and no peak to limit)
            continue
        filtered = signal.filtfilt(*signal.butter(5, 48, btype="high", fs=16000), audio)
        positions = lambda count: np.maximum((np.arange(raw.shape[0]) + 0.5) * count / raw.shape[0] - 0.5, 0)  # noqa: E731
        rms_in = _librosa_rms(filtered, 16000, 8000)
        rms_out = _librosa_rms(raw, 40000, 20000)
        rms_in = np.interp(positions(rms_in.shape[0]), np.arange(rms_in.shape[0]), rms_in)
        rms_out = np.maximum(np.interp(positions(rms_out.shape[0]), np.arange(rms_out.shape[0]), rms_out), 1e-6)
        expected = raw * rms_in ** (1 - rate) * rms_out ** (rate - 1)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(change_rms(filtered, 16000, raw, 40000, rate), expected, rtol=1e-5, atol=1e-7)


def test_peak_limit():
    loud = np.array([0.5, -2.0, 1.0], np.float32)
    limited = limit_peak(loud)
    assert limited.dtype == np.float32 and abs(np.abs(limited).max() - 0.99) < 1e-6
    quiet = np.array([0.5, -0.99, 0.2], np.float32)
    np.testing.assert_array_equal(limit_peak(quiet), quiet)
    out = VoicePipeline(FakeEncoder(), FakeSynthesizer(gain=5.0, has_f0=False), chunking=SMALL).convert(speech_like(1.0), rms_mix_rate=1.0)
    assert abs(np.abs(out).max() - 0.99) < 1e-6


def test_silence_clipped_and_short_inputs():
    pipeline = VoicePipeline(FakeEncoder(), FakeSynthesizer(), FakePitch(), chunking=SMALL)
    silent = pipeline.convert(np.zeros(16000, np.float32))
    assert silent.shape[0] > 0 and np.array_equal(silent, np.zeros_like(silent))  # rms_mix < 1: the input's zero envelope
    clipped = prepare_input(np.clip(speech_like(1.0) * 10, -1, 1), 16000)
    out = pipeline.convert(clipped)
    assert np.isfinite(out).all() and np.abs(out).max() <= 0.99 + 1e-6
    shortest = VoicePipeline(FakeEncoder(), FakeSynthesizer(), FakePitch()).convert(speech_like(400 / 16000))  # RVC's constants
    assert shortest.shape == (2 * 400,)  # one encoder window: 2 frames survive the trim
    with pytest.raises(InputError, match="shorter than one encoder window"):
        pipeline.convert(speech_like(399 / 16000))


def test_input_and_engine_errors(flat_index):
    pipeline = VoicePipeline(FakeEncoder(), FakeSynthesizer(), FakePitch(), chunking=SMALL)
    for bad, fragment in [(np.zeros(0, np.float32), "no samples"), (np.full(1000, np.nan, np.float32), "NaN or Inf"),
                          (np.zeros((2, 1000), np.float32), "mono"), (np.zeros(1000, np.int16), "float samples")]:
        with pytest.raises(InputError, match=fragment):
            pipeline.convert(bad)
    with pytest.raises(InputError, match="gives 16-dim features but the voice takes 8"):
        VoicePipeline(FakeEncoder(dim=16), FakeSynthesizer(), FakePitch())
    with pytest.raises(InputError, match="holds 8-dim features but the voice takes 16"):
        VoicePipeline(FakeEncoder(dim=16), FakeSynthesizer(dim=16), FakePitch(), flat_index)

    class Liar(FakeEncoder):
        def __call__(self, audio16k):
            return super().__call__(audio16k)[:, :4]

    with pytest.raises(InputError, match=r"expected \[frames >= 1, 8\]"):
        VoicePipeline(Liar(), FakeSynthesizer(), FakePitch(), chunking=SMALL).convert(speech_like(0.5))
    with pytest.raises(InputError, match="f0 frames"):
        VoicePipeline(FakeEncoder(), FakeSynthesizer(), lambda audio, p_len: np.zeros(p_len - 1), chunking=SMALL).convert(speech_like(0.5))


def test_settings_and_chunking():
    settings = Settings(pitch_shift=-3, index_rate=0.5, protect=0.2, rms_mix_rate=1)
    assert settings.to_dict() == {"pitch_shift": -3.0, "index_rate": 0.5, "protect": 0.2, "rms_mix_rate": 1.0}
    assert Settings.from_dict(settings.to_dict()) == settings
    for key, value in [("index_rate", 1.5), ("index_rate", -0.1), ("protect", 0.6), ("rms_mix_rate", 2), ("pitch_shift", 25),
                       ("pitch_shift", float("nan")), ("protect", "0.3"), ("index_rate", True)]:
        with pytest.raises(InputError, match=key):
            Settings(**{key: value})
        with pytest.raises(InputError, match=f"settings.{key}"):
            Settings.from_dict({key: value})
    with pytest.raises(InputError, match="settings.index_rat: not a conversion setting"):
        Settings.from_dict({"index_rat": 0.5})
    assert Settings.from_dict({"f0_method": "rmvpe", "protect": 0.1}, strict=False) == Settings(protect=0.1)
    with pytest.raises(InputError, match="protect"):
        VoicePipeline(FakeEncoder(), FakeSynthesizer(), FakePitch()).convert(speech_like(0.5), protect=0.7)
    assert (FP32_CHUNKING.t_pad, FP32_CHUNKING.t_query, FP32_CHUNKING.t_center, FP32_CHUNKING.t_max) == (16000, 96000, 608000, 656000)
    assert FP32_CHUNKING.t_pad_tgt(40000) == 40000
    with pytest.raises(InputError, match="x_pad"):
        Chunking(x_pad=0.015)
    with pytest.raises(InputError, match="x_query"):
        Chunking(x_query=20, x_center=38)


def test_timings_and_progress():
    timings = {"resample": 0.5}
    calls = []
    VoicePipeline(FakeEncoder(), FakeSynthesizer(), FakePitch(), chunking=SMALL).convert(
        speech_like(2.5, QUIET[:2]), timings=timings, progress=lambda done, total: calls.append((done, total)))
    assert set(timings) == {"resample", "encoder", "pitch", "retrieval", "synthesizer", "host"}
    assert timings["resample"] == 0.5 and all(value >= 0 for value in timings.values())
    assert calls == [(1, 3), (2, 3), (3, 3)]


# -- an independent re-statement of RVC's Pipeline.pipeline / vc -------------------------------------------------------

def rvc_reference(audio, encoder, synthesizer, pitch_engine, index, *, f0_up_key, index_rate, protect, rms_mix_rate,
                  x_pad, x_query, x_center, x_max):
    """RVC's formulas as RVC writes them (torch tensors where RVC has them, its loops and slices), with the
    model calls replaced by the fake engines and librosa's RMS written out; sr = 16000, window = 160."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    sr, window = 16000, 160
    t_pad, t_pad_tgt = int(sr * x_pad), int(synthesizer.sample_rate * x_pad)
    t_pad2, t_query, t_center, t_max = 2 * t_pad, int(sr * x_query), int(sr * x_center), int(sr * x_max)
    has_f0 = synthesizer.has_f0
    bh, ah = signal.butter(N=5, Wn=48, btype="high", fs=16000)
    audio = signal.filtfilt(bh, ah, audio)
    edge_padded = np.pad(audio, (window // 2, window // 2), mode="reflect")
    cuts = []
    if edge_padded.shape[0] > t_max:
        moving = np.zeros_like(audio)
        for i in range(window):
            moving += np.abs(edge_padded[i:i - window])
        for t in range(t_center, audio.shape[0], t_center):
            part = moving[t - t_query:t + t_query]
            cuts.append(t - t_query + np.where(part == part.min())[0][0])
    padded = np.pad(audio, (t_pad, t_pad), mode="reflect")
    p_len = padded.shape[0] // window
    pitchf = None
    if has_f0:
        f0 = pitch_engine(padded, p_len)
        f0 *= pow(2, f0_up_key / 12)
        pitchf = torch.tensor(f0[:p_len].astype(np.float32)).unsqueeze(0).float()

    def vc(audio0, pitchf_part):
        feats = torch.from_numpy(audio0).float().view(1, -1)
        feats = torch.from_numpy(encoder(feats[0].numpy())).unsqueeze(0)
        if protect < 0.5 and pitchf_part is not None:
            feats0 = feats.clone()
        if index is not None and index_rate != 0:
            npy = feats[0].numpy()
            score, ix = index.index.search(npy, k=8)
            weight = np.square(1 / score)
            weight /= weight.sum(axis=1, keepdims=True)
            npy = np.sum(index.vectors[ix] * np.expand_dims(weight, axis=2), axis=1)
            feats = torch.from_numpy(npy).unsqueeze(0) * index_rate + (1 - index_rate) * feats
        feats = F.interpolate(feats.permute(0, 2, 1), scale_factor=2).permute(0, 2, 1)
        if protect < 0.5 and pitchf_part is not None:
            feats0 = F.interpolate(feats0.permute(0, 2, 1), scale_factor=2).permute(0, 2, 1)
        length = audio0.shape[0] // window
        if feats.shape[1] < length:
            length = feats.shape[1]
            if pitchf_part is not None:
                pitchf_part = pitchf_part[:, :length]
        if protect < 0.5 and pitchf_part is not None:
            pitchff = pitchf_part.clone()
            pitchff[pitchf_part > 0] = 1
            pitchff[pitchf_part < 1] = protect
            pitchff = pitchff.unsqueeze(-1)
            feats = feats * pitchff + feats0 * (1 - pitchff)
            feats = feats.to(feats0.dtype)
        out = synthesizer(feats[0, :length].numpy(), None if pitchf_part is None else pitchf_part[0].numpy())
        return out[t_pad_tgt:-t_pad_tgt]

    pieces, s, t = [], 0, None
    for t in cuts:
        t = t // window * window
        part = pitchf[:, s // window:(t + t_pad2) // window] if has_f0 else None
        pieces.append(vc(padded[s:t + t_pad2 + window], part))
        s = t
    part = (pitchf[:, t // window:] if t is not None else pitchf) if has_f0 else None
    pieces.append(vc(padded[t:], part))
    out = np.concatenate(pieces)
    if rms_mix_rate != 1:
        rms1 = torch.from_numpy(_librosa_rms(audio, 16000 // 2 * 2, 16000 // 2)[None])
        rms1 = F.interpolate(rms1.unsqueeze(0), size=out.shape[0], mode="linear").squeeze()
        sr2 = synthesizer.sample_rate
        rms2 = torch.from_numpy(_librosa_rms(out, sr2 // 2 * 2, sr2 // 2)[None])
        rms2 = F.interpolate(rms2.unsqueeze(0), size=out.shape[0], mode="linear").squeeze()
        rms2 = torch.max(rms2, torch.zeros_like(rms2) + 1e-6)
        out *= (torch.pow(rms1, torch.tensor(1 - rms_mix_rate)) * torch.pow(rms2, torch.tensor(rms_mix_rate - 1))).numpy()
    # RVC's int16 output under numpy 1.x (its pinned 1.23), written out for numpy 2: a float32 scalar over a
    # Python float is float64 there, and a float32 array times a float64 scalar is computed in float32
    audio_max = float(np.abs(out).max()) / 0.99
    max_int16 = 32768
    if audio_max > 1:
        max_int16 /= audio_max
    return (out * np.float32(max_int16)).astype(np.int16), out * (max_int16 / 32768)


@pytest.mark.parametrize("has_f0,key,index_rate,protect,rms_mix_rate,gain", [
    (True, 0, 0.75, 0.33, 0.25, 0.5),
    (True, 5, 1.0, 0.0, 1.0, 3.0),   # loud output: the peak limit
    (True, -7, 0.0, 0.5, 0.0, 0.5),
    (False, 0, 0.5, 0.33, 0.6, 0.5),
    (True, 3, 0.75, 0.33, 0.1, 3.0),  # envelope mix, then the peak limit
])
def test_matches_an_independent_restatement_of_rvc(flat_index, has_f0, key, index_rate, protect, rms_mix_rate, gain):
    audio = speech_like(3.3, QUIET[:3], seed=17)
    settings = dict(index_rate=index_rate, protect=protect, rms_mix_rate=rms_mix_rate)
    ours = VoicePipeline(FakeEncoder(), FakeSynthesizer(has_f0, gain=gain), FakePitch(), flat_index, chunking=SMALL).convert(
        audio, pitch_shift=key, **settings)
    pcm, theirs = rvc_reference(audio, FakeEncoder(), FakeSynthesizer(has_f0, gain=gain), FakePitch(), flat_index, f0_up_key=key,
                                x_pad=SMALL.x_pad, x_query=SMALL.x_query, x_center=SMALL.x_center, x_max=SMALL.x_max, **settings)
    assert ours.shape == theirs.shape and ours.shape[0] > 3 * 40000
    if rms_mix_rate == 1:  # no loudness envelope: the same operations in the same dtypes, bit for bit
        np.testing.assert_array_equal(ours, theirs)
        np.testing.assert_array_equal((ours * np.float32(32768)).astype(np.int16), pcm)  # RVC's int16 (x 32768, truncated)
    else:  # envelopes: float64 here and in the re-statement (bit-equal on this machine); allow summation-order ulps
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9)
        assert np.abs((ours * np.float32(32768)).astype(np.int32) - pcm).max() <= 1


def test_convert_package_imports_without_torch_or_faiss():
    import subprocess

    code = ("import sys, rvc_compile.convert.pipeline, rvc_compile.convert.audio, rvc_compile.convert.retrieval; "
            "print(sorted(m for m in ('torch', 'faiss', 'soundfile', 'soxr', 'scipy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
